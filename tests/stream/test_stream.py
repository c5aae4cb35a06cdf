"""WS /runs/{id}/stream and WS /stream against a live server on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from live import Live, chain, collect, history, live_app, open_ws, start, stream_all
from websockets.asyncio.client import connect

from flowyard.api.stream import StreamAuthError
from flowyard.domain.auth import Role
from flowyard.security import Principal
from flowyard.settings import Settings
from support.http import RecordingServer, Reply
from support.procs import worker_group


def app_settings(db_url: str, **overrides: object) -> Settings:
    """Quick polling; one in-process worker unless overridden."""
    values: dict[str, object] = {
        "db_url": db_url,
        "workers": 1,
        "poll_interval_s": 0.05,
        "reap_interval_s": 0.5,
        "load_plugins": False,
        "stream_poll_interval_s": 0.05,
        "stream_auth_timeout_s": 0.05,
        **overrides,
    }
    return Settings.model_validate(values)


def slow_http(server: RecordingServer, delay_s: float = 0.2) -> str:
    server.script("/slow", [Reply(delay_s=delay_s)])
    return f"{server.url}/slow"


async def test_run_stream_sends_every_event_in_order_then_closes(db_url: str) -> None:
    async with live_app(app_settings(db_url)) as live:
        _, (run_id,) = await start(live, chain("every", steps=4))
        got = await stream_all(live.ws(f"/runs/{run_id}/stream"))

        assert got.close_code == 1000
        assert got.events == await history(live, run_id)
        assert got.events[0]["type"] == "run.created"
        assert got.events[-1]["type"] == "run.succeeded"
        assert set(got.events[0]) == {
            "id", "run_id", "step_id", "type", "data", "actor", "created_at"
        }  # fmt: skip


async def test_reconnect_after_cursor_misses_none_and_repeats_none(
    db_url: str, http_server: RecordingServer
) -> None:
    async with live_app(app_settings(db_url)) as live:
        _, (run_id,) = await start(live, chain("resume", slow_http(http_server), steps=3))
        async with open_ws(live.ws(f"/runs/{run_id}/stream")) as ws:
            first = await collect(ws, count=3)
        status = (await live.http.get(f"/runs/{run_id}")).json()["status"]
        assert status not in ("succeeded", "failed")  # really mid-run
        cursor = first.ids[-1]
        rest = await stream_all(live.ws(f"/runs/{run_id}/stream?after={cursor}"))

        assert rest.close_code == 1000
        assert first.events + rest.events == await history(live, run_id)
        assert len(set(first.ids + rest.ids)) == len(first.ids + rest.ids)


async def test_stream_filters_by_workflow(db_url: str) -> None:
    async with live_app(app_settings(db_url, workers=0)) as live:
        wanted, _ = await start(live, chain("wanted", steps=1), runs=0)
        other, _ = await start(live, chain("other", steps=1), runs=0)
        async with open_ws(live.ws(f"/stream?workflow_id={wanted}")) as ws:
            await asyncio.sleep(0.2)  # subscribed before the events exist
            _, mine = await start_runs(live, wanted, 2)
            await start_runs(live, other, 2)
            _, mine_too = await start_runs(live, wanted, 1)
            got = await collect(ws, count=3)  # one run.created per run of ``wanted``
            with pytest.raises(TimeoutError):
                await collect(ws, count=1, timeout_s=0.5)  # nothing of ``other``

        assert [e["run_id"] for e in got.events] == [*mine, *mine_too]
        assert got.ids == sorted(got.ids)


async def start_runs(live: Live, workflow_id: str, n: int) -> tuple[str, list[str]]:
    ids = []
    for i in range(n):
        started = await live.http.post(f"/workflows/{workflow_id}/runs", json={"input": {"i": i}})
        assert started.status_code == 202, started.text
        ids.append(started.json()["id"])
    return workflow_id, ids


async def test_unknown_run_is_closed_with_4404(tmp_path: Path) -> None:
    async with live_app(app_settings(f"sqlite:///{tmp_path / 'f.db'}", workers=0)) as live:
        got = await stream_all(live.ws("/runs/run_doesnotexist/stream"))
    assert (got.events, got.close_code) == ([], 4404)


async def test_token_in_a_first_message_reaches_the_authenticator(tmp_path: Path) -> None:
    seen: list[str | None] = []

    async def refuse_bad(token: str | None) -> Principal:
        seen.append(token)
        if token != "good":
            raise StreamAuthError
        return Principal("user", "someone", Role.VIEWER)

    settings = app_settings(f"sqlite:///{tmp_path / 'f.db'}", stream_auth_timeout_s=2.0)
    async with live_app(settings) as live:
        live.app.state.stream_authenticator = refuse_bad
        _, (run_id,) = await start(live, chain("auth", steps=1))
        url = live.ws(f"/runs/{run_id}/stream")
        async with connect(url) as ws:
            await ws.send(json.dumps({"token": "good"}))
            accepted = await collect(ws)
        async with connect(url) as ws:
            await ws.send(json.dumps({"token": "bad"}))
            refused = await collect(ws)

    assert seen == ["good", "bad"]
    assert accepted.close_code == 1000
    assert accepted.events
    assert (refused.events, refused.close_code) == ([], 4401)


@pytest.mark.postgres
@pytest.mark.slow
async def test_events_of_a_worker_in_another_process_reach_clients(
    pg_url: str, tmp_path: Path, http_server: RecordingServer
) -> None:
    # No in-process worker, and polling so slow that only NOTIFY can deliver in time.
    settings = app_settings(pg_url, workers=0, stream_poll_interval_s=60.0)
    with worker_group(pg_url, tmp_path) as group:
        async with live_app(settings) as live:
            definition = chain("remote", slow_http(http_server, 0.1), steps=2)
            workflow_id, _ = await start(live, definition, runs=0)
            async with open_ws(live.ws(f"/stream?workflow_id={workflow_id}")) as all_ws:
                await asyncio.sleep(0.2)
                _, (run_id,) = await start_runs(live, workflow_id, 1)
                await group.start()
                async with open_ws(live.ws(f"/runs/{run_id}/stream")) as ws:
                    first = await collect(ws, count=2, timeout_s=20)
                rest = await stream_all(
                    live.ws(f"/runs/{run_id}/stream?after={first.ids[-1]}"), timeout_s=20
                )
                expected = await history(live, run_id)
                everything = await collect(all_ws, count=len(expected), timeout_s=20)
            assert live.app.state.stream_hub.listening

    assert expected[-1]["type"] == "run.succeeded"
    assert first.events + rest.events == expected
    assert rest.close_code == 1000
    assert everything.events == expected


async def test_tail_starts_at_the_newest_event(db_url: str) -> None:
    """``tail``: a page that has just read the runs gets only what happens next, not the
    history of every run (which ``after=0`` would replay)."""
    async with live_app(app_settings(db_url, workers=0)) as live:
        workflow, _ = await start(live, chain("tail", steps=1), runs=0)
        _, before = await start_runs(live, workflow, 2)
        async with open_ws(live.ws(f"/stream?tail=true&workflow_id={workflow}")) as ws:
            await asyncio.sleep(0.2)  # subscribed before the next event exists
            _, after = await start_runs(live, workflow, 1)
            got = await collect(ws, count=1)
            with pytest.raises(TimeoutError):
                await collect(ws, count=1, timeout_s=0.5)

        assert [e["run_id"] for e in got.events] == after
        assert not set(before) & {e["run_id"] for e in got.events}
