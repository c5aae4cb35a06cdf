"""Who may stream: the ``("WS", path)`` rules of RULES (viewer or higher); 4401 without
valid credentials; 1008 for a disabled or deleted user, a revoked key or a role below the
rule, at connect time and for streams already open."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from fastapi import routing
from live import API, Live, chain, collect, live_app, open_ws, start, stream_all
from test_stream import app_settings
from websockets.asyncio.client import connect

from flowyard.api import create_app
from flowyard.api.security import RULES, Rule
from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from support.auth import token_for

RUN_STREAM = f"{API}/runs/{{run_id}}/stream"
ALL_STREAM = f"{API}/stream"


def ws_url(live: Live, path: str) -> str:
    return f"ws://127.0.0.1:{live.port}{API}{path}"


def with_token(live: Live, path: str, token: str) -> str:
    """A URL whose connection offers ``bearer.<token>`` (see live.WsUrl)."""
    made = live.ws(path)
    made.token = token
    return made


def container_of(live: Live) -> Container:
    container: Container = live.app.state.container
    return container


def test_every_websocket_route_has_a_rule(tmp_path: Path) -> None:
    from flowyard.settings import Settings

    app = create_app(Settings(db_url=f"sqlite:///{tmp_path / 'r.db'}"))
    websockets = [
        ctx.path
        for ctx in routing.iter_route_contexts(app.routes)
        if isinstance(ctx.original_route, routing.APIWebSocketRoute)
    ]
    assert sorted(websockets) == sorted([RUN_STREAM, ALL_STREAM])
    for path in websockets:
        assert RULES[("WS", path)].role is Role.VIEWER, path


async def user_id(container: Container, username: str) -> str:
    """The id of ``username`` (the service takes ids)."""
    return (await container.store.get_user_by_name(username)).id


async def test_a_viewer_streams(tmp_path: Path) -> None:
    async with live_app(app_settings(f"sqlite:///{tmp_path / 'f.db'}")) as live:
        _, (run_id,) = await start(live, chain("watched", steps=1))
        viewer = await token_for(container_of(live), "watcher", Role.VIEWER)
        got = await stream_all(with_token(live, f"/runs/{run_id}/stream", viewer))
    assert got.close_code == 1000
    assert got.events[-1]["type"] == "run.succeeded"


async def test_missing_or_invalid_credentials_close_4401(tmp_path: Path) -> None:
    async with live_app(app_settings(f"sqlite:///{tmp_path / 'f.db'}", workers=0)) as live:
        garbage = await stream_all(with_token(live, "/stream", "not-a-token"))
        bad_key = await stream_all(with_token(live, "/stream", "fy_abc_def"))
        async with connect(ws_url(live, "/stream")) as ws:  # no token at all
            silent = await collect(ws)
    for got in (garbage, bad_key, silent):
        assert (got.events, got.close_code) == ([], 4401)


async def test_withdrawn_access_closes_1008(tmp_path: Path) -> None:
    async with live_app(app_settings(f"sqlite:///{tmp_path / 'f.db'}", workers=0)) as live:
        container = container_of(live)
        disabled = await token_for(container, "gone-quiet", Role.VIEWER)
        await container.auth.update_user(await user_id(container, "gone-quiet"), disabled=True)
        deleted = await token_for(container, "gone", Role.VIEWER)
        await container.auth.delete_user(await user_id(container, "gone"))
        key = await container.auth.create_api_key("ci", Role.VIEWER)
        await container.store.revoke_api_key(key.record.id, container.clock())
        results = [
            await stream_all(with_token(live, "/stream", token))
            for token in (disabled, deleted, key.key)
        ]
    for got in results:
        assert (got.events, got.close_code) == ([], 1008)


async def test_a_role_below_the_rule_closes_1008(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(RULES, ("WS", ALL_STREAM), Rule(Role.OPERATOR, "stream.all"))
    async with live_app(app_settings(f"sqlite:///{tmp_path / 'f.db'}", workers=0)) as live:
        container = container_of(live)
        viewer = await token_for(container, "viewer", Role.VIEWER)
        operator = await token_for(container, "operator", Role.OPERATOR)
        refused = await stream_all(with_token(live, "/stream", viewer))
        async with open_ws(with_token(live, "/stream", operator)) as ws:
            with pytest.raises(TimeoutError):  # accepted: open, waiting for events
                await collect(ws, count=1, timeout_s=0.3)
        # The run stream keeps its own rule (viewer).
        _, (run_id,) = await start(live, chain("still-open", steps=1))
        async with open_ws(with_token(live, f"/runs/{run_id}/stream", viewer)) as ws:
            got = await collect(ws, count=1, timeout_s=5)
    assert (refused.events, refused.close_code) == ([], 1008)
    assert got.events[0]["type"] == "run.created"


@pytest.mark.parametrize("withdraw", ["disable", "delete", "revoke"])
async def test_an_open_stream_is_closed_when_access_is_withdrawn(
    db_url: str, withdraw: str
) -> None:
    settings = app_settings(db_url, workers=0, stream_reauth_interval_s=0.1)
    async with live_app(settings) as live:
        container = container_of(live)
        if withdraw == "revoke":
            key = await container.auth.create_api_key("watcher", Role.VIEWER)
            token = key.key
        else:
            token = await token_for(container, "watcher", Role.VIEWER)
        async with open_ws(with_token(live, "/stream", token)) as ws:
            await asyncio.sleep(0.3)  # re-checked a few times: still allowed
            _, (run_id,) = await start(live, chain("seen", steps=1))
            first = await collect(ws, count=1, timeout_s=5)
            if withdraw == "revoke":
                await container.store.revoke_api_key(key.record.id, container.clock())
            elif withdraw == "disable":
                await container.auth.update_user(await user_id(container, "watcher"), disabled=True)
            else:
                await container.auth.delete_user(await user_id(container, "watcher"))
            rest = await collect(ws, timeout_s=5)
    assert first.events[0]["run_id"] == run_id
    assert rest.close_code == 1008


#: First messages that carry no usable token: (name, message as sent).
BAD_FIRST_MESSAGES: list[tuple[str, str | bytes]] = [
    ("lone-surrogate", '{"token": "\\ud800"}'),
    ("lone-surrogate-key", '{"token": "fy_\\ud800_secret"}'),
    ("nul", '{"token": "fy_\\u0000_secret"}'),
    ("nul-jwt", '{"token": "a\\u0000.b.c"}'),
    ("non-ascii", '{"token": "fy_\\u00e9_secret"}'),
    ("deep", "[" * 10_000 + "]" * 10_000),
    ("deep-object", '{"token": ' + "[" * 10_000 + "]" * 10_000 + "}"),
    ("big-integer", '{"token": 1' + "0" * 5000 + "}"),
    ("not-json", "token please"),
    ("binary-not-utf8", b"\xff\xfe\x00"),
    ("binary-json", b'{"token": "x"}'),
    ("huge", '{"token": "' + "a" * 200_000 + '"}'),
]


@pytest.mark.parametrize(
    "message", [m for _, m in BAD_FIRST_MESSAGES], ids=[n for n, _ in BAD_FIRST_MESSAGES]
)
async def test_a_bad_first_message_closes_4401_cleanly(
    db_url: str, message: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever the first (token) message holds, the client gets 4401 and the server logs no
    exception and keeps serving."""
    settings = app_settings(db_url, workers=0, stream_auth_timeout_s=5)
    with caplog.at_level(logging.WARNING):
        async with live_app(settings) as live:
            async with connect(ws_url(live, "/stream"), max_size=None) as ws:
                await ws.send(message)
                got = await collect(ws, timeout_s=10)
            assert (got.events, got.close_code) == ([], 4401)
            healthy = await live.http.get("/healthz")
            assert healthy.status_code == 200
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert problems == [], [r.getMessage() for r in problems]


async def test_invalid_utf8_in_a_text_frame_is_a_protocol_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A text frame that is not UTF-8 never reaches the app: the WebSocket layer closes it
    with 1007 (RFC 6455 requires it), and nothing is logged as an error."""
    settings = app_settings(f"sqlite:///{tmp_path / 'f.db'}", workers=0, stream_auth_timeout_s=5)
    with caplog.at_level(logging.WARNING):
        async with live_app(settings) as live, connect(ws_url(live, "/stream")) as ws:
            await ws.send(b'{"token": "\xff"}', text=True)
            got = await collect(ws, timeout_s=10)
    assert (got.events, got.close_code) == ([], 1007)
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert problems == [], [r.getMessage() for r in problems]
