"""Correlation keys, declared signals and parent runs over the API (problem+json for every
refusal), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from flowyard.bootstrap import Container
from flowyard.domain.statuses import RunStatus, StepStatus
from support.harness import eventually
from support.runs import wait_for_runs

API = "/api/v1"
PROBLEM = "application/problem+json"

#: Waits for a reply; runs are found by the phone number of their input, one at a time.
OUTREACH: dict[str, Any] = {
    "name": "outreach",
    "correlation": {"key": "{{ input.phone }}", "unique": True},
    "signals": ["reply", "opt_out"],
    "start": "wait_reply",
    "nodes": [
        {
            "id": "wait_reply",
            "type": "wait_for_signal",
            "config": {"signal": "reply"},
            "next": "done",
        },
        {
            "id": "done",
            "type": "end",
            "config": {"output": "{{ steps.wait_reply.output.payload }}"},
        },
    ],
}
#: The same without a declared key or signal list: keys are given at start, not unique.
LOOSE: dict[str, Any] = {
    "name": "loose",
    "start": "wait_reply",
    "nodes": [{"id": "wait_reply", "type": "wait_for_signal", "config": {"signal": "reply"}}],
}
APPROVAL: dict[str, Any] = {
    "name": "approval",
    "correlation": {"key": "{{ input.order }}", "unique": True},
    "states": [
        {"id": "draft", "is_initial": True},
        {"id": "review"},
        {"id": "approved", "is_final": True},
    ],
    "actions": [
        {"id": "submit", "from_states": ["draft"], "to_state": "review"},
        {"id": "approve", "from_states": ["review"], "to_state": "approved"},
    ],
}


async def save(client: httpx.AsyncClient, definition: dict[str, Any]) -> None:
    answer = await client.post(f"{API}/workflows", json=definition)
    assert answer.status_code == 201, answer.text


async def start(
    client: httpx.AsyncClient, workflow: str, body: dict[str, Any], expect: int = 202
) -> dict[str, Any]:
    answer = await client.post(f"{API}/workflows/{workflow}/runs", json=body)
    assert answer.status_code == expect, answer.text
    if expect >= 400:
        assert answer.headers["content-type"] == PROBLEM
    result: dict[str, Any] = answer.json()
    return result


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    return body


async def test_a_key_computed_from_the_input_is_unique_among_unfinished_runs(
    api_client: httpx.AsyncClient,
) -> None:
    await save(api_client, OUTREACH)
    first = await start(api_client, "outreach", {"input": {"phone": "+15551230001"}})
    assert first["correlation_key"] == "+15551230001"

    refused = problem(
        await api_client.post(
            f"{API}/workflows/outreach/runs", json={"input": {"phone": "+15551230001"}}
        ),
        409,
    )
    assert refused["run_id"] == first["id"]
    assert refused["correlation_key"] == "+15551230001"
    assert first["id"] in refused["detail"]

    other = await start(api_client, "outreach", {"input": {"phone": "+15551230002"}})
    # A key given at start wins over the computed one (and is unique too).
    given = await start(
        api_client, "outreach", {"input": {"phone": "+15551230001"}, "correlation_key": "lead-9"}
    )
    assert given["correlation_key"] == "lead-9"

    await api_client.post(f"{API}/runs/{first['id']}/cancel")
    again = await start(api_client, "outreach", {"input": {"phone": "+15551230001"}})
    assert again["id"] != first["id"]

    listed = (
        await api_client.get(f"{API}/runs", params={"correlation_key": "+15551230001"})
    ).json()
    assert [r["id"] for r in listed["items"]] == [again["id"], first["id"]]
    listed = (
        await api_client.get(
            f"{API}/runs", params={"correlation_key": "+15551230002", "workflow": "outreach"}
        )
    ).json()
    assert [r["id"] for r in listed["items"]] == [other["id"]]
    shown = (await api_client.get(f"{API}/runs/{other['id']}")).json()
    assert shown["correlation_key"] == "+15551230002"
    assert shown["parent_run_id"] is None


async def test_bad_keys_are_refused_with_a_pointer(api_client: httpx.AsyncClient) -> None:
    await save(api_client, OUTREACH)
    missing = problem(
        await api_client.post(f"{API}/workflows/outreach/runs", json={"input": {}}), 422
    )
    assert missing["errors"][0]["pointer"] == "/input"
    assert "correlation" in missing["detail"]
    slash = problem(
        await api_client.post(f"{API}/workflows/outreach/runs", json={"input": {"phone": "a/b"}}),
        422,
    )
    assert "'/'" in slash["errors"][0]["message"]
    long = problem(
        await api_client.post(
            f"{API}/workflows/outreach/runs",
            json={"input": {"phone": "1"}, "correlation_key": "k" * 201},
        ),
        422,
    )
    assert long["errors"][0]["pointer"] == "/correlation_key"
    control = problem(
        await api_client.post(
            f"{API}/workflows/outreach/runs",
            json={"input": {"phone": "1"}, "correlation_key": "a\nb"},
        ),
        422,
    )
    assert control["errors"][0]["pointer"] == "/correlation_key"
    nested = problem(
        await api_client.post(
            f"{API}/workflows/outreach/runs", json={"input": {"phone": {"n": 1}}}
        ),
        422,
    )
    assert "dict" in nested["errors"][0]["message"]
    # An empty key is no key: the run starts without one.
    run = await start(api_client, "outreach", {"input": {"phone": ""}})
    assert run["correlation_key"] is None
    assert (await api_client.get(f"{API}/runs", params={"correlation_key": ""})).status_code == 422


async def test_signals_addressed_by_key(api_client: httpx.AsyncClient) -> None:
    await save(api_client, LOOSE)
    await save(api_client, OUTREACH)
    one = await start(api_client, "loose", {"correlation_key": "+15551230001"})
    first_twin = await start(api_client, "loose", {"correlation_key": "+15551230002"})
    twin = await start(api_client, "loose", {"correlation_key": "+15551230002"})
    url = f"{API}/workflows/loose/correlations/%2B15551230001/signals/reply"

    sent = await api_client.post(url, json={"text": "yes"})
    assert sent.status_code == 202, sent.text
    assert sent.json()["run_id"] == one["id"]
    assert sent.json()["payload"] == {"text": "yes"}

    several = problem(
        await api_client.post(
            f"{API}/workflows/loose/correlations/%2B15551230002/signals/reply", json={}
        ),
        409,
    )
    assert several["run_ids"] == [first_twin["id"], twin["id"]]
    assert "not make its key unique" in several["detail"]

    none = problem(
        await api_client.post(f"{API}/workflows/loose/correlations/nobody/signals/reply"), 404
    )
    assert "nobody" in none["detail"]
    problem(await api_client.post(f"{API}/workflows/nowhere/correlations/x/signals/reply"), 404)
    problem(await api_client.post(f"{API}/workflows/loose/correlations/x/signals/%40action"), 422)
    problem(
        await api_client.post(url, content=b"text", headers={"content-type": "text/plain"}),
        415,
    )

    # A workflow that declares its signals refuses others, by key and by run id.
    run = await start(api_client, "outreach", {"input": {"phone": "+15551230009"}})
    undeclared = problem(
        await api_client.post(
            f"{API}/workflows/outreach/correlations/%2B15551230009/signals/replied", json={}
        ),
        422,
    )
    assert "'reply', 'opt_out'" in undeclared["errors"][0]["message"]
    problem(await api_client.post(f"{API}/runs/{run['id']}/signals/replied", json={}), 422)
    ok = await api_client.post(f"{API}/runs/{run['id']}/signals/opt_out", json={})
    assert ok.status_code == 202, ok.text

    # Once the run ended, its key addresses nothing.
    await api_client.post(f"{API}/runs/{one['id']}/cancel")
    problem(await api_client.post(url, json={}), 404)


async def test_buffered_signals_are_listed(api_client: httpx.AsyncClient) -> None:
    await save(api_client, LOOSE)
    run = await start(api_client, "loose", {"correlation_key": "c-1"})
    for name in ("early", "reply"):
        answer = await api_client.post(f"{API}/runs/{run['id']}/signals/{name}", json={})
        assert answer.status_code == 202
    buffered = await api_client.get(f"{API}/runs/{run['id']}/signals", params={"buffered": "true"})
    assert [s["name"] for s in buffered.json()["items"]] == ["early", "reply"]
    taken = await api_client.get(f"{API}/runs/{run['id']}/signals", params={"buffered": "false"})
    assert taken.json()["items"] == []
    problem(
        await api_client.get(f"{API}/runs/{run['id']}/signals", params={"buffered": "maybe"}), 422
    )


async def test_actions_addressed_by_key(api_client: httpx.AsyncClient) -> None:
    await save(api_client, APPROVAL)
    run = await start(api_client, "approval", {"input": {"order": "A-1"}})
    moved = await api_client.post(
        f"{API}/workflows/approval/correlations/A-1/actions/submit", json={"payload": {"n": 1}}
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["run_id"], moved.json()["state"]) == (run["id"], "review")
    problem(await api_client.post(f"{API}/workflows/approval/correlations/A-1/actions/submit"), 409)
    problem(await api_client.post(f"{API}/workflows/approval/correlations/B-2/actions/submit"), 404)
    problem(await start_twice(api_client), 409)


async def start_twice(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post(f"{API}/workflows/approval/runs", json={"input": {"order": "A-1"}})


async def test_definitions_are_checked(api_client: httpx.AsyncClient) -> None:
    bad = {
        **OUTREACH,
        "correlation": {"key": "{{ input.phone ", "unique": "sometimes"},
        "signals": ["reply", "reply", "no spaces"],
        "nodes": [
            {"id": "wait_reply", "type": "wait_for_signal", "config": {"signal": "answer"}},
        ],
    }
    answer = await api_client.post(f"{API}/workflows/validate", json=bad)
    problems = {p["pointer"] for p in answer.json()["errors"]}
    assert {"/correlation/unique", "/signals/2"} <= problems
    del bad["correlation"]["unique"]
    bad["signals"] = ["reply", "reply"]
    answer = await api_client.post(f"{API}/workflows/validate", json=bad)
    found = {p["pointer"]: p["code"] for p in answer.json()["errors"]}
    assert found == {
        "/correlation/key": "expression",
        "/signals/1": "duplicate_signal",
        "/nodes/0/config/signal": "undeclared_signal",
    }
    created = await api_client.post(f"{API}/workflows", json=bad)
    problem(created, 422)


async def test_a_waiting_run_is_woken_by_its_key_end_to_end(
    api_client: httpx.AsyncClient, container: Container
) -> None:
    await save(api_client, OUTREACH)
    run = await start(api_client, "outreach", {"input": {"phone": "+15551230001"}})
    worker = asyncio.create_task(wait_for_runs(container, [run["id"]]))
    try:

        async def parked() -> bool:
            steps = await container.store.list_steps(run["id"])
            return any(s.status == StepStatus.WAITING for s in steps)

        await eventually(parked, "the run to wait for its reply")
        sent = await api_client.post(
            f"{API}/workflows/outreach/correlations/%2B15551230001/signals/reply",
            json={"text": "Yes, Tuesday"},
        )
        assert sent.status_code == 202, sent.text
        assert sent.json()["woke_step"] is True
        await worker
    finally:
        worker.cancel()
    ended = (await api_client.get(f"{API}/runs/{run['id']}")).json()
    assert ended["status"] == RunStatus.SUCCEEDED.value
    assert ended["output"] == {"text": "Yes, Tuesday"}
    signals = f"{API}/runs/{run['id']}/signals"
    assert (await api_client.get(signals, params={"buffered": "true"})).json()["items"] == []
    [taken] = (await api_client.get(signals, params={"buffered": "false"})).json()["items"]
    assert taken["name"] == "reply" and taken["step_id"] is not None
    # The key is free again.
    await start(api_client, "outreach", {"input": {"phone": "+15551230001"}})


CHILD: dict[str, Any] = {
    "name": "child-flow",
    "start": "done",
    "nodes": [{"id": "done", "type": "end", "config": {"output": "{{ input.n }}"}}],
}
PARENT: dict[str, Any] = {
    "name": "parent-flow",
    "start": "call",
    "nodes": [
        {
            "id": "call",
            "type": "subworkflow",
            "config": {"workflow": "child-flow", "input": {"n": "{{ input.n }}"}},
        }
    ],
}


async def test_child_runs_show_and_are_found_by_their_parent(
    api_client: httpx.AsyncClient, container: Container
) -> None:
    await save(api_client, CHILD)
    await save(api_client, PARENT)
    parents = [await start(api_client, "parent-flow", {"input": {"n": n}}) for n in (1, 2)]
    await wait_for_runs(container, [p["id"] for p in parents])
    for parent in parents:
        found = (await api_client.get(f"{API}/runs", params={"parent_run_id": parent["id"]})).json()
        [child] = found["items"]
        steps = (await api_client.get(f"{API}/runs/{parent['id']}/steps")).json()["items"]
        [call] = [s for s in steps if s["node_id"] == "call"]
        assert child["parent_run_id"] == parent["id"]
        assert child["parent_step_id"] == call["id"]
        assert child["status"] == "succeeded"
    assert (await api_client.get(f"{API}/runs", params={"parent_run_id": "run_x"})).json()[
        "items"
    ] == []
