"""Cancel, pause/resume and retry over the API, against real runs executed by an in-process
worker and a local HTTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx

from flowyard.worker import Worker
from lifecycle.helpers import (
    API,
    API_ACTOR,
    assert_problem,
    events,
    eventually,
    http_chain,
    run_json,
    start,
    status_of,
    step,
    wait_status,
)
from support.http import RecordingServer, Reply

HANG_S = 5.0


async def test_cancel_stops_a_hanging_step(
    client: httpx.AsyncClient, http_server: RecordingServer, worker: Worker
) -> None:
    http_server.script("/slow", [Reply(200, {"late": True}, delay_s=HANG_S)])
    run_id = await start(client, http_chain("hang", http_server.url, "/slow", "/after"), {})

    async def hanging() -> bool:
        run = await run_json(client, run_id)
        return bool(http_server.to("/slow")) and status_of(run, "n1") == "running"

    await eventually(hanging, what="the http step to hang")

    cancelled = await client.post(f"{API}/runs/{run_id}/cancel", json={"reason": "stuck"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["id"] == run_id

    # The worker runs in this process, so the cancel makes it check its leases at once: it
    # stops the step long before the slow answer, without a result or a next node.
    async def released() -> bool:
        return worker.in_flight == 0

    started = asyncio.get_running_loop().time()
    await eventually(released, timeout_s=HANG_S * 3, what="the worker to drop the step")
    assert asyncio.get_running_loop().time() - started < HANG_S / 2
    await asyncio.sleep(0.3)  # a wrongly scheduled next step would be claimed by now

    run = await run_json(client, run_id)
    assert run["status"] == "cancelled"
    assert [(s["node_id"], s["status"]) for s in run["steps"]] == [
        ("start", "succeeded"),
        ("n1", "cancelled"),
    ]
    assert step(run, "n1")["output"] is None
    assert http_server.to("/after") == []
    [event] = events(run, "run.cancelled")
    assert event["actor"] == API_ACTOR
    assert event["data"]["reason"] == "stuck"
    assert events(run, "run.succeeded") == []

    again = await client.post(f"{API}/runs/{run_id}/cancel")
    body = assert_problem(again, 409, "conflict")
    assert "cancelled" in body["detail"]
    assert body["current_status"] == "cancelled"
    assert len(events(await run_json(client, run_id), "run.cancelled")) == 1


async def test_cancel_unknown_run(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post(f"{API}/runs/run_nope/cancel"), 404, "not-found")
    assert "run_nope" in body["detail"]


async def test_cancel_a_finished_run_says_its_status(
    client: httpx.AsyncClient, http_server: RecordingServer, worker: Worker
) -> None:
    run_id = await start(client, http_chain("quick", http_server.url, "/ok"), {})
    await wait_status(client, run_id, "succeeded")
    body = assert_problem(await client.post(f"{API}/runs/{run_id}/cancel"), 409, "conflict")
    assert "succeeded" in body["detail"]
    assert body["current_status"] == "succeeded"


async def test_pause_holds_a_step_in_backoff_until_resumed(
    client: httpx.AsyncClient, http_server: RecordingServer, worker: Worker
) -> None:
    backoff_s = 1.0
    http_server.script("/flaky", [Reply(503, {"busy": True}), Reply(200, {"id": 7})])
    retry = {"max_attempts": 3, "initial_interval_s": backoff_s, "jitter": "none"}
    definition = http_chain("flaky", http_server.url, "/flaky", retry=retry)
    run_id = await start(client, definition, {})

    async def backing_off() -> bool:
        return status_of(await run_json(client, run_id), "n1") == "retrying"

    await eventually(backing_off, what="the step to back off")
    paused = await client.post(f"{API}/runs/{run_id}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"

    await asyncio.sleep(backoff_s * 2)  # the backoff ends while paused
    run = await run_json(client, run_id)
    assert run["status"] == "paused"
    assert step(run, "n1")["status"] == "retrying"
    assert len(http_server.to("/flaky")) == 1

    assert_problem(await client.post(f"{API}/runs/{run_id}/pause"), 409, "conflict")
    resumed = await client.post(f"{API}/runs/{run_id}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "running"

    run = await wait_status(client, run_id, "succeeded", "failed")
    assert run["status"] == "succeeded"
    assert run["output"] == {"id": 7}
    assert len(http_server.to("/flaky")) == 2
    [pause_event] = events(run, "run.paused")
    [resume_event] = events(run, "run.resumed")
    assert pause_event["actor"] == resume_event["actor"] == API_ACTOR
    assert pause_event["id"] < resume_event["id"]

    finished = await client.post(f"{API}/runs/{run_id}/pause")
    assert assert_problem(finished, 409, "conflict")["current_status"] == "succeeded"
    not_paused = await client.post(f"{API}/runs/{run_id}/resume")
    assert "not paused" in assert_problem(not_paused, 409, "conflict")["detail"]


async def test_pause_and_resume_unknown_run(client: httpx.AsyncClient) -> None:
    for action in ("pause", "resume", "retry"):
        assert_problem(await client.post(f"{API}/runs/run_nope/{action}"), 404, "not-found")


async def test_retry_restarts_from_the_failed_step(
    client: httpx.AsyncClient, http_server: RecordingServer, worker: Worker
) -> None:
    http_server.script("/n1", [Reply(200, {"id": 1})])
    http_server.script("/n2", [Reply(400, {"error": "bad"})])
    definition = http_chain("chain", http_server.url, "/n1", "/n2", "/n3")
    run_id = await start(client, definition, {})
    failed = await wait_status(client, run_id, "failed", "succeeded")
    assert failed["status"] == "failed"
    assert failed["error_type"] == "http.400"
    assert http_server.to("/n3") == []

    http_server.script("/n2", [Reply(200, {"fixed": True})])
    retried = await client.post(f"{API}/runs/{run_id}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] in ("running", "pending")
    assert retried.json()["error"] is None and retried.json()["error_type"] is None

    run = await wait_status(client, run_id, "succeeded", "failed")
    assert run["status"] == "succeeded"
    assert len(http_server.to("/n1")) == 1  # not called again
    first, second = http_server.to("/n2")
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert len(http_server.to("/n3")) == 1
    assert step(run, "n1")["output"]["body"] == {"id": 1}  # kept from the first execution
    assert run["output"] == {"id": 1}
    [event] = events(run, "run.retried")
    assert event["actor"] == API_ACTOR
    assert event["data"]["steps"] == ["n2"]
    assert event["data"]["previous_error"]["type"] == "http.400"

    again = await client.post(f"{API}/runs/{run_id}/retry")
    assert assert_problem(again, 409, "conflict")["current_status"] == "succeeded"
