"""Dead letters over the API: failed runs filtered by error type (exact or ``prefix*``) and
retried in bulk, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx

from flowyard.worker import Worker
from lifecycle.helpers import API, API_ACTOR, assert_problem, events, run_json, start, wait_status
from support.http import RecordingServer, Reply


def call(base_url: str) -> dict[str, Any]:
    """trigger -> GET {base_url}{input.path} (transient failures retried quickly) -> end."""
    return {
        "name": "call",
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "call"},
            {
                "id": "call",
                "type": "http",
                "config": {"url": base_url + "{{ input.path }}"},
                "retry": {"max_attempts": 2, "initial_interval_s": 0.05, "jitter": "none"},
                "next": "done",
            },
            {"id": "done", "type": "end"},
        ],
    }


ROUTE: dict[str, Any] = {
    "name": "route",
    "start": "start",
    "nodes": [
        {"id": "start", "type": "trigger", "next": "pick"},
        {
            "id": "pick",
            "type": "condition",
            "config": {"cases": [{"when": "input.x == 1", "next": "done"}]},
        },
        {"id": "done", "type": "end"},
    ],
}


async def failed_ids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await client.get(f"{API}/runs", params={"status": "failed", **params})
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["items"]]


async def test_filter_and_retry_dead_letters_by_error_type(
    client: httpx.AsyncClient, http_server: RecordingServer, worker: Worker
) -> None:
    http_server.script("/bad", [Reply(400, {"error": "invalid"})])
    http_server.script("/down", [Reply(500, {"error": "down"})])
    bad = [await start(client, call(http_server.url), {"path": "/bad"}) for _ in range(2)]
    down = await start(client, call(http_server.url), {"path": "/down"})
    nomatch = await start(client, ROUTE, {"x": 2})
    ok = await start(client, call(http_server.url), {"path": "/fine"})
    for run_id in [*bad, down, nomatch, ok]:
        await wait_status(client, run_id, "succeeded", "failed")
    assert len(http_server.to("/down")) == 2  # retries exhausted

    errors = {r: (await run_json(client, r))["error_type"] for r in [*bad, down, nomatch, ok]}
    assert errors == {
        bad[0]: "http.400",
        bad[1]: "http.400",
        down: "http.500",
        nomatch: "condition.no_match",
        ok: None,
    }
    newest_first = sorted(bad, reverse=True)
    assert await failed_ids(client, error_type="http.400") == newest_first
    assert await failed_ids(client, error_type="http.*") == sorted([*bad, down], reverse=True)
    assert await failed_ids(client, error_type="condition.no_match") == [nomatch]
    assert await failed_ids(client, error_type="http.4") == []  # exact unless it ends in *
    assert await failed_ids(client, error_type="http.*", workflow="route") == []
    listed = (await client.get(f"{API}/runs", params={"error_type": "http.500"})).json()
    assert [(r["id"], r["error_type"]) for r in listed["items"]] == [(down, "http.500")]

    http_server.script("/bad", [Reply(200, {"ok": True})])
    retried = await client.post(f"{API}/runs/retry", json={"error_type": "http.400"})
    assert retried.status_code == 200, retried.text
    assert retried.json() == {"matched": 2, "retried": newest_first, "skipped": []}

    for run_id in bad:
        run = await wait_status(client, run_id, "succeeded", "failed")
        assert run["status"] == "succeeded"
        [event] = events(run, "run.retried")
        assert event["actor"] == API_ACTOR
    for run_id in (down, nomatch):  # not matched: untouched
        run = await run_json(client, run_id)
        assert run["status"] == "failed" and events(run, "run.retried") == []
    assert len(http_server.to("/down")) == 2
    assert await failed_ids(client) == sorted([down, nomatch], reverse=True)

    one = await client.post(
        f"{API}/runs/retry", json={"error_type": "condition.*", "workflow": "route", "limit": 1}
    )
    assert one.json() == {"matched": 1, "retried": [nomatch], "skipped": []}


async def test_bulk_retry_with_nothing_matching(
    client: httpx.AsyncClient, http_server: RecordingServer, worker: Worker
) -> None:
    ok = await start(client, call(http_server.url), {"path": "/fine"})
    await wait_status(client, ok, "succeeded")
    for body in ({}, {"status": "timed_out"}, {"status": "cancelled", "error_type": "http.*"}):
        response = await client.post(f"{API}/runs/retry", json=body)
        assert response.json() == {"matched": 0, "retried": [], "skipped": []}, body
    assert (await client.post(f"{API}/runs/retry")).json()["matched"] == 0  # no body
    assert (await run_json(client, ok))["status"] == "succeeded"


async def test_bulk_retry_of_cancelled_runs(
    client: httpx.AsyncClient, http_server: RecordingServer
) -> None:
    # No worker: the runs stay pending until cancelled, then are retried from their first step.
    runs = [await start(client, call(http_server.url), {"path": "/fine"}) for _ in range(3)]
    for run_id in runs[:2]:
        assert (await client.post(f"{API}/runs/{run_id}/cancel")).status_code == 200
    response = await client.post(f"{API}/runs/retry", json={"status": "cancelled"})
    assert response.json() == {
        "matched": 2,
        "retried": sorted(runs[:2], reverse=True),
        "skipped": [],
    }
    statuses = [(await run_json(client, r))["status"] for r in runs]
    assert statuses == ["pending", "pending", "pending"]


async def test_bulk_retry_input_is_checked(client: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"status": "succeeded"}, "/status"),
        ({"limit": 0}, "/limit"),
        ({"limit": 1001}, "/limit"),
        ({"error_type": ""}, "/error_type"),
        ({"statuss": "failed"}, "/statuss"),
    ]
    for body, pointer in cases:
        problem = assert_problem(
            await client.post(f"{API}/runs/retry", json=body), 422, "invalid-input"
        )
        assert [e["pointer"] for e in problem["errors"]] == [pointer], body
    unknown = await client.post(f"{API}/runs/retry", json={"workflow": "nope"})
    assert_problem(unknown, 404, "not-found")
