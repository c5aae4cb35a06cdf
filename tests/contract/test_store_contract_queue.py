"""The store contract, part 2: the queue (claim, complete, leases, recovery, run states)."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

from contract.helpers import (
    BOOM,
    LEASE_S,
    T0,
    at,
    claim,
    claim_one,
    complete,
    event_types,
    failed_run,
    make_workflow,
    one_run,
    retrying,
    start,
    step_to,
    steps_by_node,
    succeeded,
)
from flowyard.domain.ids import RunId
from flowyard.domain.records import RunRecord, StepRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store import StepCompletion, Store


async def _fan_out(store: Store) -> tuple[RunRecord, StepRecord, StepRecord]:
    """A running run whose first step scheduled two parallel branches; both claimed."""
    run = await one_run(store)
    first = await claim_one(store)
    branches = (step_to("a"), step_to("b"))
    assert await complete(store, first, succeeded(next_steps=branches))
    a, b = sorted(await claim(store), key=lambda s: s.node_id)
    return run, a, b


async def _snapshot(store: Store, run_id: RunId) -> tuple[object, ...]:
    return (
        await store.get_run(run_id),
        await store.list_steps(run_id),
        await store.list_events(run_id),
    )


# -- claiming ------------------------------------------------------------------------------


async def test_claim_takes_only_due_steps(store: Store) -> None:
    wf = await make_workflow(store)
    [now_run] = await start(store, wf, now=T0)
    [later_run] = await start(store, wf, now=at(60))

    assert await claim(store, now=at(-0.001)) == []
    assert [s.run_id for s in await claim(store, now=T0)] == [now_run.id]
    assert await claim(store, now=at(59)) == []
    assert [s.run_id for s in await claim(store, now=at(60))] == [later_run.id]


async def test_claim_takes_only_scheduled_or_retrying_steps(store: Store) -> None:
    run = await one_run(store)
    step = await claim_one(store)
    # Running: not claimable, however late.
    assert await claim(store, now=at(10)) == []
    assert await complete(store, step, succeeded("done"))
    # Succeeded: not claimable either.
    assert await claim(store, now=at(1000)) == []
    assert (await store.get_run(run.id)).status == RunStatus.RUNNING


async def test_claim_respects_limit_and_oldest_first(store: Store) -> None:
    wf = await make_workflow(store)
    runs = [r for i in range(5) for r in await start(store, wf, now=at(i))]

    first = await claim(store, now=at(10), limit=2)
    rest = await claim(store, now=at(10), limit=10)

    assert {s.run_id for s in first} == {runs[0].id, runs[1].id}
    assert sorted(s.run_id for s in rest) == sorted(r.id for r in runs[2:])
    assert await claim(store, now=at(10), limit=10) == []


async def test_claim_sets_lease_and_counts_attempt_and_claim(store: Store) -> None:
    run = await one_run(store)

    step = await claim_one(store, now=at(5), worker="w-7")

    assert step.run_id == run.id
    assert step.status == StepStatus.RUNNING
    assert (step.attempt, step.claims, step.recoveries) == (1, 1, 0)
    assert step.lease_owner == "w-7"
    assert step.lease_expires_at == at(5 + LEASE_S)
    assert step.started_at == at(5)
    assert await store.list_steps(run.id) == [step]
    started = (await store.list_events(run.id))[-1]
    assert (started.type, started.step_id, started.created_at) == ("step.started", step.id, at(5))


async def test_claim_marks_a_pending_run_running_once(store: Store) -> None:
    run = await one_run(store)
    first = await claim_one(store, now=at(1))

    running = await store.get_run(run.id)
    assert (running.status, running.started_at) == (RunStatus.RUNNING, at(1))

    assert await complete(store, first, succeeded(next_steps=[step_to("next", at_=at(2))]))
    await claim_one(store, now=at(3))

    assert (await store.get_run(run.id)).started_at == at(1)
    assert await event_types(store, run.id) == [
        "run.created",
        "run.started",
        "step.started",
        "step.succeeded",
        "step.started",
    ]


async def test_two_claims_never_return_the_same_step(store: Store) -> None:
    await start(store, await make_workflow(store), 7)
    a = await claim(store, limit=3, worker="a")
    b = await claim(store, limit=3, worker="b")
    c = await claim(store, limit=3, worker="c")
    ids = [s.id for s in a + b + c]
    assert (len(a), len(b), len(c)) == (3, 3, 1)
    assert len(set(ids)) == 7


# -- completing ----------------------------------------------------------------------------


async def test_success_records_output_schedules_next_steps_and_events(store: Store) -> None:
    run = await one_run(store)
    step = await claim_one(store)
    transition = succeeded(
        {"id": "lead-1"},
        next_steps=[step_to("notify", at_=at(1)), step_to("later", at_=at(3600), iteration=2)],
        extra_events=(("vars.set", {"k": "v"}),),
    )

    done = await store.complete_steps([StepCompletion(step, transition)], at(1))
    assert done.applied == [True]

    steps = await steps_by_node(store, run.id)
    done = steps[("start", 0)]
    assert (done.status, done.output, done.error) == (StepStatus.SUCCEEDED, {"id": "lead-1"}, None)
    assert (done.finished_at, done.lease_owner, done.lease_expires_at) == (at(1), None, None)
    notify, later = steps[("notify", 0)], steps[("later", 2)]
    assert (notify.status, notify.available_at, notify.attempt) == (StepStatus.SCHEDULED, at(1), 0)
    assert (later.status, later.available_at) == (StepStatus.SCHEDULED, at(3600))
    events = (await store.list_events(run.id))[-2:]
    assert [(e.type, e.data, e.step_id) for e in events] == [
        ("step.succeeded", {"output": {"id": "lead-1"}}, step.id),
        ("vars.set", {"k": "v"}, step.id),
    ]
    assert (await store.get_run(run.id)).status == RunStatus.RUNNING
    # A delayed next step is claimable only once due.
    assert [s.node_id for s in await claim(store, now=at(3599))] == ["notify"]
    assert [s.node_id for s in await claim(store, now=at(3600))] == ["later"]


async def test_path_ended_without_active_steps_succeeds_the_run(store: Store) -> None:
    run = await one_run(store)
    step = await claim_one(store)

    assert await complete(store, step, succeeded(1, path_ended=True, run_output={"ok": 1}), at(2))

    done = await store.get_run(run.id)
    assert (done.status, done.output, done.error) == (RunStatus.SUCCEEDED, {"ok": 1}, None)
    assert (done.finished_at, done.updated_at) == (at(2), at(2))
    assert (await event_types(store, run.id))[-1] == "run.succeeded"
    assert await store.queue_depth() == {"succeeded": 1}


async def test_path_ended_waits_for_the_other_branches(store: Store) -> None:
    run, a, b = await _fan_out(store)

    assert await complete(store, a, succeeded("a", path_ended=True, run_output="from a"))
    assert (await store.get_run(run.id)).status == RunStatus.RUNNING

    assert await complete(store, b, succeeded("b", path_ended=True, run_output="from b"), at(9))
    done = await store.get_run(run.id)
    assert (done.status, done.output, done.finished_at) == (RunStatus.SUCCEEDED, "from b", at(9))
    assert (await event_types(store, run.id)).count("run.succeeded") == 1


async def test_fail_run_fails_the_run_and_cancels_scheduled_steps(store: Store) -> None:
    run = await one_run(store)
    first = await claim_one(store)
    branches = (step_to("a"), step_to("b"), step_to("c", at_=at(99)))
    assert await complete(store, first, succeeded(next_steps=branches))
    a = await claim_one(store)

    assert await complete(store, a, failed_run(), at(4))

    failed = await store.get_run(run.id)
    # The run's error names the step that failed it (retrying the run restarts from there).
    expected_error = BOOM.as_dict()
    expected_error["details"] = {**expected_error["details"], "step_id": a.id, "node_id": a.node_id}
    assert (failed.status, failed.error, failed.error_type, failed.finished_at) == (
        RunStatus.FAILED,
        expected_error,
        BOOM.type,
        at(4),
    )
    steps = await steps_by_node(store, run.id)
    assert steps[(a.node_id, 0)].status == StepStatus.FAILED
    assert steps[(a.node_id, 0)].error == BOOM.as_dict()
    others = [s for key, s in steps.items() if key[0] not in ("start", a.node_id)]
    assert [s.status for s in others] == [StepStatus.CANCELLED] * 2
    assert (await event_types(store, run.id))[-2:] == ["step.failed", "run.failed"]
    assert await claim(store, now=at(100)) == []


async def test_retrying_step_is_claimable_again_only_at_retry_at(store: Store) -> None:
    run = await one_run(store)
    step = await claim_one(store)

    assert await complete(store, step, retrying(at(10)), at(1))

    [waiting] = await store.list_steps(run.id)
    assert (waiting.status, waiting.available_at) == (StepStatus.RETRYING, at(10))
    assert (waiting.error, waiting.finished_at, waiting.lease_owner) == (BOOM.as_dict(), None, None)
    assert (await event_types(store, run.id))[-1] == "step.retrying"
    assert await claim(store, now=at(9.999)) == []

    again = await claim_one(store, now=at(10))
    assert again.id == step.id
    assert (again.attempt, again.claims, again.status) == (2, 2, StepStatus.RUNNING)
    assert await complete(store, again, succeeded("second time", path_ended=True), at(11))
    assert (await store.get_run(run.id)).status == RunStatus.SUCCEEDED


async def test_completion_with_a_stale_claim_count_is_discarded(store: Store) -> None:
    run = await one_run(store)
    step = await claim_one(store)
    before = await _snapshot(store, run.id)
    stale = replace(step, claims=step.claims - 1)

    transition = succeeded("late", next_steps=[step_to("next")], path_ended=True, run_output=1)
    assert await complete(store, stale, transition) is False

    assert await _snapshot(store, run.id) == before
    assert await complete(store, step, succeeded("on time", path_ended=True))


async def test_completion_after_recovery_is_discarded(store: Store) -> None:
    run = await one_run(store)
    lost = await claim_one(store, worker="slow")
    assert await store.recover_expired("reaper", now=at(31), max_recoveries=3, lease_s=LEASE_S) == (
        1,
        [],
    )
    requeued = await _snapshot(store, run.id)

    assert await complete(store, lost, succeeded("late", path_ended=True), at(32)) is False
    assert await _snapshot(store, run.id) == requeued

    retaken = await claim_one(store, now=at(32), worker="fast")
    assert await complete(store, lost, succeeded("late", path_ended=True), at(33)) is False
    assert await complete(store, retaken, succeeded("fresh", path_ended=True), at(33))
    [step] = await store.list_steps(run.id)
    assert (step.output, step.attempt, step.claims) == ("fresh", 2, 2)


async def test_a_batch_applies_fresh_completions_and_discards_stale_ones(store: Store) -> None:
    await start(store, await make_workflow(store), 2)
    one, two = await claim(store)
    stale_two = replace(two, claims=0)

    applied = await store.complete_steps(
        [StepCompletion(one, succeeded("1")), StepCompletion(stale_two, succeeded("2"))], T0
    )

    assert applied.applied == [True, False]
    assert applied.settled == {}
    assert await store.queue_depth() == {"succeeded": 1, "running": 1}


async def test_completing_a_step_of_a_terminal_run_records_it_and_goes_no_further(
    store: Store,
) -> None:
    run, a, b = await _fan_out(store)
    assert await complete(store, a, failed_run(), at(1))
    assert (await store.get_run(run.id)).status == RunStatus.FAILED

    late = succeeded("b done", next_steps=[step_to("after_b")], path_ended=True)
    assert await complete(store, b, late, at(2))

    steps = await steps_by_node(store, run.id)
    assert (steps[("b", 0)].status, steps[("b", 0)].output) == (StepStatus.SUCCEEDED, "b done")
    assert ("after_b", 0) not in steps
    final = await store.get_run(run.id)
    assert (final.status, final.error_type, final.finished_at) == (
        RunStatus.FAILED,
        BOOM.type,
        at(1),
    )
    assert final.error is not None and final.error["details"]["step_id"] == a.id
    assert (await event_types(store, run.id))[-1] == "step.succeeded"


async def test_scheduling_an_existing_next_step_is_ignored(store: Store) -> None:
    run, a, b = await _fan_out(store)
    join = step_to("join", at_=at(1))

    # Both branches reach the join; one transition even names it twice.
    assert await complete(store, a, succeeded("a", next_steps=[join, join]))
    assert await complete(store, b, succeeded("b", next_steps=[step_to("join", at_=at(50))]))

    joins = [s for s in await store.list_steps(run.id) if s.node_id == "join"]
    assert [(s.status, s.available_at) for s in joins] == [(StepStatus.SCHEDULED, at(1))]
    # Another iteration of the same node is a different step.
    [joined] = await claim(store, now=at(1))
    again = [step_to("join", iteration=1), step_to("join")]
    assert await complete(store, joined, succeeded(next_steps=again))
    assert len([s for s in await store.list_steps(run.id) if s.node_id == "join"]) == 2


# -- leases --------------------------------------------------------------------------------


async def test_extend_leases_only_for_the_owner(store: Store) -> None:
    wf = await make_workflow(store)
    await start(store, wf, 2)
    mine = await claim_one(store, worker="me")
    theirs = await claim_one(store, worker="them")

    extended = await store.extend_leases("me", [mine, theirs], now=at(20), lease_s=LEASE_S)

    assert extended == {mine.id}
    current = {s.id: s for s in await _all_steps(store)}
    assert current[mine.id].lease_expires_at == at(20 + LEASE_S)
    assert current[theirs.id].lease_expires_at == at(LEASE_S)
    # A step no longer held (completed, or reclaimed) is not extended.
    assert await complete(store, mine, succeeded())
    assert await store.extend_leases("me", [mine], now=at(21), lease_s=LEASE_S) == set()
    assert await store.extend_leases("me", [], now=at(21), lease_s=LEASE_S) == set()


async def test_release_puts_steps_back_without_counting_the_attempt(store: Store) -> None:
    run = await one_run(store)
    step = await claim_one(store, worker="me")

    assert await store.release_steps("someone-else", [step], at(5)) == 0
    assert await store.release_steps("me", [step], at(5)) == 1

    [released] = await store.list_steps(run.id)
    assert (released.status, released.attempt, released.available_at) == (
        StepStatus.SCHEDULED,
        0,
        at(5),
    )
    assert (released.lease_owner, released.lease_expires_at) == (None, None)
    assert (await event_types(store, run.id))[-1] == "step.released"
    assert await store.release_steps("me", [step], at(5)) == 0
    again = await claim_one(store, now=at(5), worker="other")
    assert (again.id, again.attempt, again.claims) == (step.id, 1, 2)
    # The released claim is stale now.
    assert await complete(store, step, succeeded()) is False


# -- recovery ------------------------------------------------------------------------------


async def test_recover_expired_requeues_expired_leases(store: Store) -> None:
    wf = await make_workflow(store)
    [expiring] = await start(store, wf, now=T0)
    [fresh] = await start(store, wf, now=at(20))
    lost = await claim_one(store, now=T0, worker="crashed")
    alive = await claim_one(store, now=at(20), worker="alive")

    assert await store.recover_expired("r", now=at(LEASE_S), max_recoveries=3, lease_s=5) == (0, [])
    assert await store.recover_expired("r", now=at(31), max_recoveries=3, lease_s=5) == (1, [])

    [requeued] = await store.list_steps(expiring.id)
    assert requeued.id == lost.id
    assert (requeued.status, requeued.recoveries, requeued.available_at) == (
        StepStatus.SCHEDULED,
        1,
        at(31),
    )
    assert (requeued.lease_owner, requeued.lease_expires_at) == (None, None)
    recovered = (await store.list_events(expiring.id))[-1]
    assert (recovered.type, recovered.step_id, recovered.created_at) == (
        "step.recovered",
        lost.id,
        at(31),
    )
    assert await store.list_steps(fresh.id) == [alive]
    again = await claim_one(store, now=at(31), worker="next")
    assert (again.id, again.attempt, again.recoveries) == (lost.id, 2, 1)


async def test_recover_expired_hands_poison_steps_to_the_caller(store: Store) -> None:
    run = await one_run(store)
    await claim_one(store, now=T0)
    assert await store.recover_expired("r", now=at(31), max_recoveries=1, lease_s=5) == (1, [])
    second = await claim_one(store, now=at(31), worker="crashed-again")

    recovered, poison = await store.recover_expired("r", now=at(62), max_recoveries=1, lease_s=5)

    assert recovered == 0
    [step] = poison
    assert step.id == second.id
    assert (step.status, step.lease_owner, step.lease_expires_at) == (
        StepStatus.RUNNING,
        "r",
        at(67),
    )
    assert (step.recoveries, step.claims) == (1, second.claims + 1)
    assert await store.list_steps(run.id) == [step]
    # Nobody else may take it; the reaper's verdict is the one that counts.
    assert await claim(store, now=at(1000)) == []
    assert await store.recover_expired("r", now=at(63), max_recoveries=1, lease_s=5) == (0, [])
    assert await complete(store, second, succeeded(path_ended=True), at(63)) is False
    assert await complete(store, step, failed_run(), at(63))
    assert (await store.get_run(run.id)).status == RunStatus.FAILED


# -- reading -------------------------------------------------------------------------------


async def test_load_run_states_latest_output_and_max_iteration_per_node(store: Store) -> None:
    wf = await make_workflow(store)
    run, other = await start(store, wf, 2)
    steps = {s.run_id: s for s in await claim(store)}
    first = steps[run.id]
    loop0 = [step_to("loop", iteration=0)]
    assert await complete(store, first, succeeded({"start": True}, next_steps=loop0))
    for i in range(2):
        [looped] = await claim(store)
        nxt = [step_to("loop", iteration=i + 1)]
        assert await complete(store, looped, succeeded({"i": i}, next_steps=nxt))
    # loop iteration 2 is scheduled, not finished; the other run's step fails.
    assert await complete(store, steps[other.id], failed_run())

    mine, theirs = await store.list_steps(run.id), await store.list_steps(other.id)
    missing = dataclasses.replace(theirs[0], run_id=RunId("run_missing"))
    states = await store.load_run_states([*mine, theirs[0], missing])

    assert set(states) == {(run.id, ""), (other.id, "")}
    state = states[(run.id, "")]
    assert state.run == await store.get_run(run.id)
    assert state.iterations == {"start": 0, "loop": 2}
    assert state.steps["loop"]["output"] == {"i": 1}
    assert state.steps["loop"]["iteration"] == 1
    assert state.steps["start"]["output"] == {"start": True}
    assert state.steps["start"]["status"] == "succeeded"
    failed = states[(other.id, "")].steps["start"]
    assert (failed["status"], failed["error"]) == ("failed", BOOM.as_dict())
    assert await store.load_run_states([]) == {}


async def test_list_events_after_cursor(store: Store) -> None:
    run = await one_run(store)
    step = await claim_one(store)
    assert await complete(store, step, succeeded(path_ended=True))
    events = await store.list_events(run.id)
    assert [e.type for e in events] == [
        "run.created",
        "run.started",
        "step.started",
        "step.succeeded",
        "run.succeeded",
    ]
    ids = [e.id for e in events]
    assert ids == sorted(set(ids))

    assert await store.list_events(run.id, after=ids[1]) == events[2:]
    assert await store.list_events(run.id, after=ids[1], limit=2) == events[2:4]
    assert await store.list_events(run.id, after=ids[-1]) == []
    assert await store.list_events(RunId("run_missing")) == []


async def test_queue_depth_counts_steps_by_status(store: Store) -> None:
    assert await store.queue_depth() == {}
    await start(store, await make_workflow(store), 5)
    one, two, three = await claim(store, limit=3)
    assert await complete(store, one, succeeded())
    assert await complete(store, two, retrying(at(60)))

    assert await store.queue_depth() == {
        "scheduled": 2,
        "running": 1,
        "succeeded": 1,
        "retrying": 1,
    }
    assert three.status == StepStatus.RUNNING


# -- helpers -------------------------------------------------------------------------------


async def _all_steps(store: Store) -> list[StepRecord]:
    return [s for run in await store.list_runs(limit=1000) for s in await store.list_steps(run.id)]
