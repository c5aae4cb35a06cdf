"""The store contract: a commit that continues its runs (decision 0039). ``complete_steps``
with a :class:`ClaimRequest` claims, in the same transaction, the steps it made due in the
runs the request names, with their states, as a claim pass would."""

from __future__ import annotations

from contract.helpers import (
    LEASE_S,
    T0,
    at,
    claim,
    claim_one,
    event_types,
    make_workflow,
    start,
    step_to,
    steps_by_node,
    succeeded,
)
from flowyard.domain.statuses import StepStatus
from flowyard.store import StepCompletion, Store
from flowyard.store.ports import ClaimRequest


def request(*runs: str, limit: int = 10, worker: str = "w1") -> ClaimRequest:
    return ClaimRequest(worker, limit, LEASE_S, runs=frozenset(runs))  # type: ignore[arg-type]


async def test_a_commit_claims_the_steps_it_made_due_in_its_runs(store: Store) -> None:
    [run] = await start(store, await make_workflow(store))
    first = await claim_one(store)
    done = await store.complete_steps(
        [StepCompletion(first, succeeded(next_steps=[step_to("next")]))],
        at(1),
        chain=request(run.id),
    )
    assert done.applied == [True]
    [chained] = done.chained.steps
    assert (chained.run_id, chained.node_id, chained.status) == (
        run.id,
        "next",
        StepStatus.RUNNING,
    )
    assert (chained.lease_owner, chained.lease_expires_at) == ("w1", at(1 + LEASE_S))
    assert (run.id, chained.branch) in done.chained.states
    # Recorded like any claim: the row, its counter and its step.started event.
    stored = (await steps_by_node(store, run.id))[("next", 0)]
    assert (stored.status, stored.lease_owner, stored.claims) == (StepStatus.RUNNING, "w1", 1)
    assert (await event_types(store, run.id))[-1] == "step.started"
    # Nobody else can claim it.
    assert await claim(store, now=at(2), worker="w2") == []


async def test_a_commit_claims_only_due_steps_of_the_named_runs_up_to_the_limit(
    store: Store,
) -> None:
    wf = await make_workflow(store)
    mine, other = await start(store, wf, 2)
    a, b = sorted(await claim(store), key=lambda s: s.run_id == other.id)
    assert a.run_id == mine.id
    fan = [step_to(n) for n in ("x", "y", "z")] + [step_to("later", at_=at(3600))]
    done = await store.complete_steps(
        [
            StepCompletion(a, succeeded(next_steps=fan)),
            StepCompletion(b, succeeded(next_steps=[step_to("x")])),
        ],
        at(1),
        chain=request(mine.id, limit=2),
    )
    assert done.applied == [True, True]
    # Two of mine's three due steps; not the one due in an hour, nothing of the other run.
    assert len(done.chained.steps) == 2
    assert {s.run_id for s in done.chained.steps} == {mine.id}
    assert {s.node_id for s in done.chained.steps} < {"x", "y", "z"}
    [rest] = {"x", "y", "z"} - {s.node_id for s in done.chained.steps}
    left = await claim(store, now=at(2), worker="w2")
    assert sorted((s.run_id == mine.id, s.node_id) for s in left) == [(False, "x"), (True, rest)]


async def test_a_stale_commit_claims_nothing(store: Store) -> None:
    [run] = await start(store, await make_workflow(store))
    first = await claim_one(store, worker="slow")
    # The lease ran out and another worker took the step over.
    late = at(LEASE_S + 1)
    assert await store.recover_expired("reaper", now=late, max_recoveries=3, lease_s=LEASE_S) == (
        1,
        [],
    )
    assert (await claim_one(store, now=late, worker="fast")).id == first.id
    done = await store.complete_steps(
        [StepCompletion(first, succeeded(next_steps=[step_to("next")]))],
        at(LEASE_S + 2),
        chain=request(run.id, worker="slow"),
    )
    assert done.applied == [False]
    assert done.chained.steps == []
    assert ("next", 0) not in await steps_by_node(store, run.id)


async def test_without_a_request_a_commit_claims_nothing(store: Store) -> None:
    [run] = await start(store, await make_workflow(store), now=T0)
    first = await claim_one(store)
    done = await store.complete_steps(
        [StepCompletion(first, succeeded(next_steps=[step_to("next")]))], at(1)
    )
    assert done.chained.steps == []
    assert (await steps_by_node(store, run.id))[("next", 0)].status == StepStatus.SCHEDULED
