"""State machines over the API, on both backends: every validation rule of the seed, the
happy path of the approval sample with its history, every refusal (409 with the reason), and
two concurrent actions of which exactly one wins."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowyard.bootstrap import Container
from support.harness import eventually

API = "/api/v1"
SAMPLE = json.loads(
    (Path(__file__).parents[2] / "examples" / "approval_state_machine.json").read_text()
)
DOC = {"document": "q3-budget.pdf", "author": "ada"}


@pytest.fixture
async def client(
    api_client: httpx.AsyncClient, container: Container
) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client on the app, with an in-process worker running."""
    worker = container.new_worker()
    task = asyncio.create_task(worker.run())
    yield api_client
    worker.stop()
    await task


async def start(client: httpx.AsyncClient, definition: dict[str, Any] = SAMPLE) -> str:
    created = await client.post(f"{API}/workflows", json=definition)
    assert created.status_code in (200, 201), created.text
    workflow_id = created.json()["workflow"]["id"]
    started = await client.post(f"{API}/workflows/{workflow_id}/runs", json={"input": DOC})
    assert started.status_code in (201, 202), started.text
    run_id: str = started.json()["id"]
    return run_id


async def in_state(client: httpx.AsyncClient, run_id: str, state: str) -> dict[str, Any]:
    """Wait until the run waits in ``state`` (or has ended in it) and return its actions."""

    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"{API}/runs/{run_id}/actions")).json()
        settled = body["status"] in ("waiting", "final", "ended")
        return body if body["state"] == state and settled else None

    return await eventually(check, f"run {run_id} in state {state}")


async def act(client: httpx.AsyncClient, run_id: str, action: str, **body: Any) -> httpx.Response:
    return await client.post(f"{API}/runs/{run_id}/actions/{action}", json=body or None)


def refused(response: httpx.Response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = response.json()["detail"]
    for needle in needles:
        assert needle in detail, detail


# -- validation ------------------------------------------------------------------------------


def broken(change: Any) -> dict[str, Any]:
    definition = copy.deepcopy(SAMPLE)
    change(definition)
    return definition


def no_initial(d: dict[str, Any]) -> None:
    d["states"][0]["is_initial"] = False


def two_initial(d: dict[str, Any]) -> None:
    d["states"][2]["is_initial"] = True


def duplicate_state(d: dict[str, Any]) -> None:
    d["states"][4]["id"] = "approved"


def duplicate_action(d: dict[str, Any]) -> None:
    d["actions"][2]["id"] = "approve"


def unknown_from(d: dict[str, Any]) -> None:
    d["actions"][1]["from_states"] = ["pending_review", "limbo"]


def unknown_to(d: dict[str, Any]) -> None:
    d["actions"][1]["to_state"] = "nowhere"


def final_with_action(d: dict[str, Any]) -> None:
    d["actions"][0]["from_states"] = ["draft", "approved"]


@pytest.mark.parametrize(
    ("change", "pointer", "needle"),
    [
        (no_initial, "/states", "exactly one state must be initial; none is"),
        (two_initial, "/states/2/is_initial", "'draft' already is"),
        (duplicate_state, "/states/4/id", "duplicate state id 'approved'"),
        (duplicate_action, "/actions/2/id", "duplicate action id 'approve'"),
        (unknown_from, "/actions/1/from_states/1", "unknown state 'limbo'"),
        (unknown_to, "/actions/1/to_state", "unknown state 'nowhere'"),
        (final_with_action, "/actions/0/from_states/1", "final state has no outgoing actions"),
    ],
)
async def test_each_seed_validation_rule_is_a_422_with_its_pointer(
    client: httpx.AsyncClient, change: Any, pointer: str, needle: str
) -> None:
    response = await client.post(f"{API}/workflows", json=broken(change))
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [e for e in errors if e["pointer"] == pointer and needle in e["message"]], errors


async def test_problems_in_on_enter_nodes_point_into_the_states_form(
    client: httpx.AsyncClient,
) -> None:
    def bad_node(d: dict[str, Any]) -> None:
        d["states"][1]["on_enter"][0]["type"] = "no_such_type"

    response = await client.post(f"{API}/workflows", json=broken(bad_node))
    assert response.status_code == 422
    pointers = [e["pointer"] for e in response.json()["errors"]]
    assert "/states/1/on_enter/0/type" in pointers


# -- runs --------------------------------------------------------------------------------------


async def test_the_approval_sample_moves_through_its_states_with_history(
    client: httpx.AsyncClient,
) -> None:
    run_id = await start(client)
    # In its initial state as soon as it is started, before any worker ran it.
    draft = (await client.get(f"{API}/runs/{run_id}/actions")).json()
    assert (draft["state"], draft["status"]) == ("draft", "waiting")
    assert [a["id"] for a in draft["actions"]] == ["submit"]
    assert draft["unavailable"] == [
        {
            "id": "archive",
            "name": "Archive",
            "to_state": "archived",
            "reason": "state 'archived' is disabled",
        }
    ]
    submitted = await act(client, run_id, "submit")
    assert submitted.status_code == 200, submitted.text
    # The answer is the new state and what it accepts now.
    pending = submitted.json()
    assert (pending["state"], pending["status"]) == ("pending_review", "waiting")
    assert sorted(a["id"] for a in pending["actions"]) == ["approve", "reject", "request_changes"]
    await in_state(client, run_id, "pending_review")  # its on-enter node ran
    assert (await act(client, run_id, "request_changes", payload={"note": "fix p3"})).is_success
    await in_state(client, run_id, "changes_requested")
    assert (await act(client, run_id, "submit")).is_success
    approved = await act(client, run_id, "approve")  # at once, on-enter or not
    assert (approved.json()["state"], approved.json()["status"]) == ("approved", "final")

    async def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"{API}/runs/{run_id}/actions")).json()
        return body if body["run_status"] == "succeeded" else None

    final = await eventually(ended, f"run {run_id} succeeded")
    assert (final["state"], final["status"]) == ("approved", "final")
    moves = [(h["from"], h["action"], h["to"], h["by"], h["payload"]) for h in final["history"]]
    assert moves == [
        ("draft", "submit", "pending_review", "user:admin", None),
        (
            "pending_review",
            "request_changes",
            "changes_requested",
            "user:admin",
            {"note": "fix p3"},
        ),
        ("changes_requested", "submit", "pending_review", "user:admin", None),
        ("pending_review", "approve", "approved", "user:admin", None),
    ]
    steps = (await client.get(f"{API}/runs/{run_id}/steps")).json()
    items = steps["items"] if isinstance(steps, dict) else steps
    # The on-enter nodes ran on each entry, each iteration kept distinct.
    notify = [s for s in items if s["node_id"] == "pending_review__notify_reviewers"]
    assert [s["iteration"] for s in notify] == [0, 1]
    events = (await client.get(f"{API}/runs/{run_id}/events")).json()
    events = events["items"] if isinstance(events, dict) else events
    transitions = [e for e in events if e["type"] == "state.transition"]
    assert [e["actor"] for e in transitions] == ["user:admin"] * 4
    signals = (await client.get(f"{API}/runs/{run_id}/signals")).json()
    assert signals["items"] == []  # moves are listed with the actions, not as signals


async def test_submit_then_approve_back_to_back_never_conflicts(
    client: httpx.AsyncClient,
) -> None:
    """Issue 10: the next valid action is accepted the moment the previous one answered,
    whatever the workers are doing (100 runs, a worker running alongside)."""
    created = await client.post(f"{API}/workflows", json=SAMPLE)
    workflow_id = created.json()["workflow"]["id"]
    run_ids = []
    for _ in range(100):
        started = await client.post(f"{API}/workflows/{workflow_id}/runs", json={"input": DOC})
        run_id = started.json()["id"]
        submitted = await act(client, run_id, "submit")
        assert submitted.status_code == 200, submitted.text
        approved = await act(client, run_id, "approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["state"] == "approved"
        run_ids.append(run_id)

    pending = set(run_ids)

    async def all_approved() -> bool | None:
        # Each pass asks only for the runs not yet seen succeeded (a run that succeeded
        # stays so): not 100 reads every 10 ms while the worker finishes them.
        for run_id in sorted(pending):
            run = (await client.get(f"{API}/runs/{run_id}")).json()
            if run["status"] != "succeeded":
                return None
            pending.discard(run_id)
        return True

    # 100 runs of on-enter and final steps for one in-process worker: the point of the test
    # is the 200 answers above, so the wait for the workers is generous (it ran out at 15 s
    # on a loaded CI machine).
    await eventually(all_approved, "every run approved", within=90.0)


async def test_every_refusal_is_a_409_with_the_reason(client: httpx.AsyncClient) -> None:
    run_id = await start(client)
    await in_state(client, run_id, "draft")
    refused(await act(client, run_id, "approve"), 409, "not allowed from state 'draft'")
    refused(await act(client, run_id, "archive"), 409, "state 'archived' is disabled")
    refused(await act(client, run_id, "no_such_action"), 404, "no action 'no_such_action'")
    assert (await client.post(f"{API}/runs/{run_id}/pause")).is_success
    refused(await act(client, run_id, "submit"), 409, "paused")
    assert (await client.post(f"{API}/runs/{run_id}/resume")).is_success
    assert (await act(client, run_id, "submit")).is_success
    await in_state(client, run_id, "pending_review")
    refused(await act(client, run_id, "escalate"), 409, "action 'escalate' is disabled")
    assert (await act(client, run_id, "reject")).is_success
    await in_state(client, run_id, "rejected")
    for action in ("submit", "approve", "reject"):
        refused(await act(client, run_id, action), 409, "final state 'rejected'")


async def test_two_concurrent_actions_exactly_one_wins(client: httpx.AsyncClient) -> None:
    run_id = await start(client)
    await in_state(client, run_id, "draft")
    assert (await act(client, run_id, "submit")).is_success
    await in_state(client, run_id, "pending_review")
    approve, reject = await asyncio.gather(
        act(client, run_id, "approve"), act(client, run_id, "reject")
    )
    statuses = sorted([approve.status_code, reject.status_code])
    assert statuses == [200, 409], (approve.text, reject.text)
    winner = "approved" if approve.status_code == 200 else "rejected"
    final = await in_state(client, run_id, winner)
    assert [h["to"] for h in final["history"]] == ["pending_review", winner]


async def test_actions_of_a_graph_workflow_run_are_a_409(client: httpx.AsyncClient) -> None:
    graph = {
        "name": "plain",
        "start": "s",
        "nodes": [{"id": "s", "type": "trigger", "next": "e"}, {"id": "e", "type": "end"}],
    }
    created = await client.post(f"{API}/workflows", json=graph)
    run = await client.post(f"{API}/workflows/{created.json()['workflow']['id']}/runs", json={})
    refused(await client.get(f"{API}/runs/{run.json()['id']}/actions"), 409, "not a state machine")
