"""Retrying a run that failed in a ``fail`` node reached through a ``catch`` route restarts
the caught call (the cause), not the ``fail`` node, and discards the error branch; over the
API, with an in-process worker, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx

from flowyard.worker import Worker
from lifecycle.helpers import API, API_ACTOR, events, start, step, wait_status
from support.http import RecordingServer, Reply


def lead_like(base_url: str) -> dict[str, Any]:
    """trigger -> http POST /crm (catch * -> log -> fail) -> http POST /notify -> end."""
    return {
        "name": "caught-call",
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "create"},
            {
                "id": "create",
                "type": "http",
                "config": {"method": "POST", "url": f"{base_url}/crm", "json": {"a": 1}},
                "catch": [{"errors": ["*"], "next": "note"}],
                "next": "notify",
            },
            {
                "id": "notify",
                "type": "http",
                "config": {"method": "POST", "url": f"{base_url}/n"},
                "next": "done",
            },
            {"id": "note", "type": "log", "config": {"message": "no account"}, "next": "failed"},
            {
                "id": "failed",
                "type": "fail",
                "config": {"error": "lead.account_not_created", "message": "the CRM refused"},
            },
            {"id": "done", "type": "end", "config": {"output": "{{ steps.create.output.body }}"}},
        ],
    }


async def test_retry_restarts_the_caught_call_and_discards_the_error_branch(
    client: httpx.AsyncClient, http_server: RecordingServer, worker: Worker
) -> None:
    http_server.script("/crm", [Reply(400, {"error": "refused"}), Reply(201, {"id": 7})])
    run_id = await start(client, lead_like(http_server.url), {})
    failed = await wait_status(client, run_id, "failed", "succeeded")
    assert failed["status"] == "failed"
    assert failed["error_type"] == "lead.account_not_created"
    assert [s["node_id"] for s in failed["steps"]] == ["start", "create", "note", "failed"]

    retried = await client.post(f"{API}/runs/{run_id}/retry")
    assert retried.status_code == 200, retried.text

    run = await wait_status(client, run_id, "succeeded", "failed")
    assert run["status"] == "succeeded", run["error"]
    assert run["output"] == {"id": 7}
    # The error branch is gone; the caught call ran again on its own row and key.
    assert [s["node_id"] for s in run["steps"]] == ["start", "create", "notify", "done"]
    assert step(run, "create")["id"] == step(failed, "create")["id"]
    first, second = http_server.to("/crm")
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert len(http_server.to("/n")) == 1
    [event] = events(run, "run.retried")
    assert event["actor"] == API_ACTOR
    assert event["data"]["steps"] == ["create"]
    assert event["data"]["discarded"] == ["note", "failed"]
    assert event["data"]["previous_error"]["type"] == "lead.account_not_created"


async def test_a_caught_call_that_fails_again_takes_the_error_branch_again(
    client: httpx.AsyncClient, http_server: RecordingServer, worker: Worker
) -> None:
    http_server.script("/crm", [Reply(400, {"error": "refused"})])
    run_id = await start(client, lead_like(http_server.url), {})
    await wait_status(client, run_id, "failed", "succeeded")
    for _ in range(2):  # the discarded rows make room for the branch's steps again
        retried = await client.post(f"{API}/runs/{run_id}/retry")
        assert retried.status_code == 200, retried.text
        run = await wait_status(client, run_id, "failed", "succeeded")
        assert run["status"] == "failed"
        assert run["error_type"] == "lead.account_not_created"
        assert [s["node_id"] for s in run["steps"]] == ["start", "create", "note", "failed"]
    assert len(http_server.to("/crm")) == 3


async def test_a_fail_node_without_a_caught_step_is_retried_as_before(
    client: httpx.AsyncClient, http_server: RecordingServer, worker: Worker
) -> None:
    definition = {
        "name": "plain-fail",
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "failed"},
            {"id": "failed", "type": "fail", "config": {"error": "x.no", "message": "no"}},
        ],
    }
    run_id = await start(client, definition, {})
    await wait_status(client, run_id, "failed")
    retried = await client.post(f"{API}/runs/{run_id}/retry")
    assert retried.status_code == 200, retried.text
    run = await wait_status(client, run_id, "failed")
    [event] = events(run, "run.retried")
    assert event["data"]["steps"] == ["failed"] and "discarded" not in event["data"]
