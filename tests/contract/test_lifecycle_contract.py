"""The store contract, part 4: run lifecycle (cancel, pause/resume, retry from the failed step,
run deadlines), failure filters and which leases a heartbeat keeps.

Every test runs on SQLite and on PostgreSQL through the ``store`` fixture, with explicit
instants (``at(seconds)``) instead of a clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime

import pytest

from contract.helpers import (
    LEASE_S,
    T0,
    at,
    claim,
    claim_one,
    complete,
    event_types,
    failed_run,
    make_workflow,
    new_run,
    one_run,
    retrying,
    start,
    step_to,
    steps_by_node,
    succeeded,
)
from flowyard.domain.commands import Transition
from flowyard.domain.errors import Conflict, ErrorInfo, NotFound
from flowyard.domain.ids import RunId
from flowyard.domain.records import RunRecord, StepRecord, WorkflowRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store import Store


async def _running(store: Store) -> tuple[RunRecord, StepRecord]:
    """A run whose first step is claimed (by ``w1``, at T0)."""
    run = await one_run(store)
    step = await claim_one(store)
    assert step.run_id == run.id
    return await store.get_run(run.id), step


async def _with_deadline(
    store: Store, wf: WorkflowRecord, deadline: datetime | None, now: datetime
) -> RunRecord:
    [(run, created)] = await store.start_runs([replace(new_run(wf), deadline_at=deadline)], now)
    assert created
    return run


async def _snapshot(store: Store, run_id: RunId) -> tuple[object, ...]:
    return (
        await store.get_run(run_id),
        await store.list_steps(run_id),
        await store.list_events(run_id),
    )


# -- cancel --------------------------------------------------------------------------------


async def test_cancel_a_pending_run_cancels_its_steps(store: Store) -> None:
    run = await one_run(store)

    cancelled = await store.cancel_run(run.id, actor="ops", reason="not needed", now=at(5))

    assert (cancelled.status, cancelled.finished_at, cancelled.error) == (
        RunStatus.CANCELLED,
        at(5),
        None,
    )
    assert await store.get_run(run.id) == cancelled
    [step] = await store.list_steps(run.id)
    assert (step.status, step.finished_at) == (StepStatus.CANCELLED, at(5))
    [*_, event] = await store.list_events(run.id)
    assert (event.type, event.actor, event.created_at) == ("run.cancelled", "ops", at(5))
    assert event.data == {"reason": "not needed", "from": "pending"}
    assert await claim(store, now=at(1000)) == []


async def test_cancel_a_running_run_discards_the_later_completion(store: Store) -> None:
    run, step = await _running(store)
    assert run.status == RunStatus.RUNNING

    await store.cancel_run(run.id, actor=None, reason=None, now=at(3))

    [cancelled] = await store.list_steps(run.id)
    assert (cancelled.status, cancelled.lease_owner, cancelled.lease_expires_at) == (
        StepStatus.CANCELLED,
        None,
        None,
    )
    # The worker's heartbeat learns it no longer holds the step ...
    assert await store.extend_leases("w1", [step], now=at(4), lease_s=LEASE_S) == set()
    # ... and whatever it reports afterwards is discarded: no output, no next step.
    before = await _snapshot(store, run.id)
    assert not await complete(store, step, succeeded("late", next_steps=[step_to("b")]), at(5))
    assert before == await _snapshot(store, run.id)
    assert not await complete(store, step, retrying(at(10)), at(5))
    assert before == await _snapshot(store, run.id)
    assert (await store.get_run(run.id)).status == RunStatus.CANCELLED
    assert await claim(store, now=at(1000)) == []


async def test_cancel_a_paused_run(store: Store) -> None:
    run, step = await _running(store)
    assert await complete(store, step, retrying(at(30)), at(1))
    await store.pause_run(run.id, actor=None, now=at(2))

    cancelled = await store.cancel_run(run.id, actor="ops", reason=None, now=at(3))

    assert cancelled.status == RunStatus.CANCELLED
    [held] = await store.list_steps(run.id)
    assert (held.status, held.finished_at) == (StepStatus.CANCELLED, at(3))
    [*_, event] = await store.list_events(run.id)
    assert (event.type, event.data["from"]) == ("run.cancelled", "paused")
    with pytest.raises(Conflict):
        await store.resume_run(run.id, actor=None, now=at(4))
    assert await claim(store, now=at(1000)) == []


async def _succeed(store: Store, run: RunRecord, step: StepRecord) -> None:
    assert await complete(store, step, succeeded("ok", path_ended=True, run_output="ok"), at(1))


async def _fail(store: Store, run: RunRecord, step: StepRecord) -> None:
    assert await complete(store, step, failed_run(), at(1))


async def _cancel(store: Store, run: RunRecord, step: StepRecord) -> None:
    await store.cancel_run(run.id, actor=None, reason=None, now=at(1))


ENDINGS: dict[str, Callable[[Store, RunRecord, StepRecord], Awaitable[None]]] = {
    "succeeded": _succeed,
    "failed": _fail,
    "cancelled": _cancel,
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
async def test_cancel_is_refused_once_the_run_has_ended(store: Store, ending: str) -> None:
    run, step = await _running(store)
    await ENDINGS[ending](store, run, step)
    before = await _snapshot(store, run.id)

    with pytest.raises(Conflict):
        await store.cancel_run(run.id, actor=None, reason=None, now=at(2))

    assert before == await _snapshot(store, run.id)


async def test_cancel_is_refused_for_a_timed_out_run(store: Store) -> None:
    wf = await make_workflow(store)
    run = await _with_deadline(store, wf, at(10), T0)
    assert await store.expire_runs(now=at(11)) == [run.id]

    with pytest.raises(Conflict):
        await store.cancel_run(run.id, actor=None, reason=None, now=at(12))
    assert (await store.get_run(run.id)).status == RunStatus.TIMED_OUT


async def test_lifecycle_operations_on_an_unknown_run_are_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.cancel_run("run_missing", actor=None, reason=None, now=T0)
    with pytest.raises(NotFound):
        await store.pause_run("run_missing", actor=None, now=T0)
    with pytest.raises(NotFound):
        await store.resume_run("run_missing", actor=None, now=T0)
    with pytest.raises(NotFound):
        await store.retry_run("run_missing", actor=None, now=T0)


# -- pause and resume ----------------------------------------------------------------------


async def test_pause_holds_a_due_step_until_resume(store: Store) -> None:
    run = await one_run(store)

    paused = await store.pause_run(run.id, actor="ops", now=at(1))

    assert paused.status == RunStatus.PAUSED
    [*_, event] = await store.list_events(run.id)
    assert (event.type, event.actor, event.data) == ("run.paused", "ops", {"from": "pending"})
    assert await claim(store, now=at(1000)) == []

    resumed = await store.resume_run(run.id, actor="ops", now=at(2))

    assert resumed.status == RunStatus.PENDING  # it never started
    [*_, event] = await store.list_events(run.id)
    assert (event.type, event.data) == ("run.resumed", {"to": "pending"})
    [step] = await claim(store, now=at(2))
    assert (step.run_id, step.attempt) == (run.id, 1)
    assert (await store.get_run(run.id)).status == RunStatus.RUNNING


@pytest.mark.parametrize("resume_at", [10, 40], ids=["before-retry-at", "after-retry-at"])
async def test_pause_holds_a_retrying_step_and_resume_keeps_its_retry_at(
    store: Store, resume_at: float
) -> None:
    run, step = await _running(store)
    assert await complete(store, step, retrying(at(30)), at(1))

    await store.pause_run(run.id, actor=None, now=at(2))

    # Due, but held.
    assert await claim(store, now=at(31)) == []
    [held] = await store.list_steps(run.id)
    assert (held.status, held.available_at) == (StepStatus.RETRYING, at(30))

    resumed = await store.resume_run(run.id, actor=None, now=at(resume_at))

    assert resumed.status == RunStatus.RUNNING
    due = max(30.0, resume_at)
    if resume_at < 30:
        assert await claim(store, now=at(29.999)) == []
    [again] = await claim(store, now=at(due))
    assert (again.id, again.attempt, again.available_at) == (step.id, 2, at(30))


async def test_a_completion_during_pause_schedules_its_next_steps_held(store: Store) -> None:
    run, step = await _running(store)
    await store.pause_run(run.id, actor=None, now=at(1))

    assert await complete(store, step, succeeded("a", next_steps=[step_to("b", at_=at(2))]), at(2))

    assert (await store.get_run(run.id)).status == RunStatus.PAUSED
    steps = await steps_by_node(store, run.id)
    assert steps[("start", 0)].status == StepStatus.SUCCEEDED
    assert steps[("b", 0)].status == StepStatus.SCHEDULED
    assert await claim(store, now=at(1000)) == []

    await store.resume_run(run.id, actor=None, now=at(3))

    [b] = await claim(store, now=at(3))
    assert (b.node_id, b.run_id) == ("b", run.id)


async def test_a_retrying_completion_during_pause_is_held(store: Store) -> None:
    run, step = await _running(store)
    await store.pause_run(run.id, actor=None, now=at(1))

    assert await complete(store, step, retrying(at(10)), at(2))

    [held] = await store.list_steps(run.id)
    assert (held.status, held.available_at) == (StepStatus.RETRYING, at(10))
    assert await claim(store, now=at(50)) == []

    await store.resume_run(run.id, actor=None, now=at(5))

    assert await claim(store, now=at(9.999)) == []
    [again] = await claim(store, now=at(10))
    assert (again.id, again.attempt) == (step.id, 2)


async def test_a_step_released_during_a_pause_stays_held(store: Store) -> None:
    run, step = await _running(store)
    await store.pause_run(run.id, actor=None, now=at(1))

    assert await store.release_steps("w1", [step], at(2)) == 1

    [released] = await store.list_steps(run.id)
    assert (released.status, released.attempt) == (StepStatus.SCHEDULED, 0)
    assert await claim(store, now=at(100)) == []
    await store.resume_run(run.id, actor=None, now=at(101))
    [again] = await claim(store, now=at(101))
    assert (again.id, again.attempt) == (step.id, 1)


async def test_a_step_recovered_during_a_pause_stays_held(store: Store) -> None:
    run, step = await _running(store)
    await store.pause_run(run.id, actor=None, now=at(1))

    recovered, poison = await store.recover_expired(
        "w2", now=at(LEASE_S + 1), max_recoveries=3, lease_s=LEASE_S
    )

    assert (recovered, poison) == (1, [])
    assert await claim(store, now=at(100), worker="w2") == []
    await store.resume_run(run.id, actor=None, now=at(101))
    [again] = await claim(store, now=at(101), worker="w2")
    assert (again.id, again.recoveries) == (step.id, 1)


async def test_pause_and_resume_are_refused_in_the_wrong_state(store: Store) -> None:
    run, step = await _running(store)
    with pytest.raises(Conflict):
        await store.resume_run(run.id, actor=None, now=at(1))  # not paused
    await store.pause_run(run.id, actor=None, now=at(1))
    with pytest.raises(Conflict):
        await store.pause_run(run.id, actor=None, now=at(2))  # already paused
    await store.resume_run(run.id, actor=None, now=at(3))
    assert await complete(store, step, succeeded(path_ended=True), at(4))
    before = await _snapshot(store, run.id)
    with pytest.raises(Conflict):
        await store.pause_run(run.id, actor=None, now=at(5))
    with pytest.raises(Conflict):
        await store.resume_run(run.id, actor=None, now=at(5))
    assert before == await _snapshot(store, run.id)


# -- retry from the failed step ------------------------------------------------------------


async def test_retry_run_restarts_the_failed_and_cancelled_steps_and_keeps_outputs(
    store: Store,
) -> None:
    run, first = await _running(store)
    later = step_to("c", at_=at(60))
    assert await complete(
        store, first, succeeded("first-out", next_steps=[step_to("a"), later]), at(1)
    )
    [a] = await claim(store, now=at(1))
    assert await complete(store, a, failed_run(), at(2))
    failed = await store.get_run(run.id)
    assert failed.status == RunStatus.FAILED
    before = await steps_by_node(store, run.id)
    assert before[("c", 0)].status == StepStatus.CANCELLED

    retried = await store.retry_run(run.id, actor="ops", now=at(10), deadline_at=at(100))

    assert (retried.status, retried.error, retried.error_type) == (RunStatus.RUNNING, None, None)
    assert (retried.finished_at, retried.output, retried.deadline_at) == (None, None, at(100))
    after = await steps_by_node(store, run.id)
    assert after[("start", 0)] == before[("start", 0)]  # succeeded output kept as is
    assert after[("start", 0)].output == "first-out"
    for node in ("a", "c"):
        redo = after[(node, 0)]
        assert redo.id == before[(node, 0)].id  # same row ...
        assert redo.idempotency_key == before[(node, 0)].idempotency_key  # ... same key
        assert (redo.status, redo.attempt, redo.available_at) == (StepStatus.SCHEDULED, 0, at(10))
        assert (redo.error, redo.output, redo.finished_at, redo.lease_owner) == (
            None,
            None,
            None,
            None,
        )
    [*_, event] = await store.list_events(run.id)
    assert (event.type, event.actor) == ("run.retried", "ops")
    assert event.data == {"from": "failed", "steps": ["a", "c"], "previous_error": failed.error}

    assert await claim(store, now=at(9)) == []
    again = {s.node_id: s for s in await claim(store, now=at(10))}
    assert {n: s.attempt for n, s in again.items()} == {"a": 1, "c": 1}
    assert await complete(store, again["a"], succeeded(path_ended=True), at(11))
    assert await complete(store, again["c"], succeeded(path_ended=True, run_output="c"), at(12))
    done = await store.get_run(run.id)
    assert (done.status, done.output) == (RunStatus.SUCCEEDED, "c")


async def test_retry_run_restarts_a_cancelled_or_timed_out_run(store: Store) -> None:
    wf = await make_workflow(store)
    cancelled = await _with_deadline(store, wf, None, T0)
    step = await claim_one(store)
    await store.cancel_run(cancelled.id, actor=None, reason=None, now=at(1))
    timed_out = await _with_deadline(store, wf, at(5), at(2))
    assert await store.expire_runs(now=at(6)) == [timed_out.id]

    for run, was in ((cancelled, "cancelled"), (timed_out, "timed_out")):
        retried = await store.retry_run(run.id, actor=None, now=at(7))
        expected = RunStatus.RUNNING if run.id == cancelled.id else RunStatus.PENDING
        assert (retried.status, retried.error_type, retried.deadline_at) == (expected, None, None)
        [redo] = await store.list_steps(run.id)
        assert (redo.status, redo.attempt) == (StepStatus.SCHEDULED, 0)
        assert (await store.list_events(run.id))[-1].data["from"] == was

    # The stale completion of the cancelled attempt stays discarded after the retry.
    assert not await complete(store, step, succeeded(path_ended=True), at(8))
    assert {s.run_id for s in await claim(store, now=at(7))} == {cancelled.id, timed_out.id}


async def test_retry_run_is_refused_unless_the_run_failed_and_has_a_step_to_redo(
    store: Store,
) -> None:
    wf = await make_workflow(store)
    [pending] = await start(store, wf)
    with pytest.raises(Conflict):
        await store.retry_run(pending.id, actor=None, now=at(1))
    step = await claim_one(store)
    with pytest.raises(Conflict):
        await store.retry_run(pending.id, actor=None, now=at(1))  # running
    assert await complete(store, step, succeeded(path_ended=True), at(2))
    with pytest.raises(Conflict):
        await store.retry_run(pending.id, actor=None, now=at(3))  # succeeded

    # Failed outside a failing step (a loop guard on a successful step): nothing to redo.
    [guarded] = await start(store, wf, now=at(4))
    step = await claim_one(store, now=at(4))
    guard = ErrorInfo("loop.max_iterations", "too many", transient=False)
    assert await complete(store, step, Transition(StepStatus.SUCCEEDED, fail_run=guard), at(5))
    before = await _snapshot(store, guarded.id)
    with pytest.raises(Conflict):
        await store.retry_run(guarded.id, actor=None, now=at(6))
    assert before == await _snapshot(store, guarded.id)


# -- run deadlines -------------------------------------------------------------------------


async def test_expire_runs_times_out_unfinished_runs_past_their_deadline(store: Store) -> None:
    wf = await make_workflow(store)
    # Finished before its deadline.
    finished = await _with_deadline(store, wf, at(30), T0)
    assert await complete(store, await claim_one(store), succeeded(path_ended=True), at(1))
    # Running, with its step claimed.
    running = await _with_deadline(store, wf, at(60), at(1))
    step = await claim_one(store, now=at(1))
    # Pending, paused, no deadline, a later deadline.
    pending = await _with_deadline(store, wf, at(60), at(2))
    paused = await _with_deadline(store, wf, at(60), at(2))
    await store.pause_run(paused.id, actor=None, now=at(3))
    no_deadline = await _with_deadline(store, wf, None, at(2))
    later = await _with_deadline(store, wf, at(120), at(2))
    untouched = {
        run_id: await _snapshot(store, run_id) for run_id in (finished.id, no_deadline.id, later.id)
    }

    assert await store.expire_runs(now=at(60)) == []  # not past it yet
    expired = await store.expire_runs(now=at(61))

    assert sorted(expired) == sorted([running.id, pending.id, paused.id])
    for run_id in expired:
        run = await store.get_run(run_id)
        assert (run.status, run.error_type, run.finished_at) == (
            RunStatus.TIMED_OUT,
            "run.timeout",
            at(61),
        )
        assert run.error is not None and run.error["type"] == "run.timeout"
        assert run.error["details"] == {"deadline_at": at(60).isoformat()}
        assert [s.status for s in await store.list_steps(run_id)] == [StepStatus.CANCELLED]
        [*_, event] = await store.list_events(run_id)
        assert (event.type, event.data) == ("run.timed_out", {"error": run.error})
    for run_id, snapshot in untouched.items():
        assert await _snapshot(store, run_id) == snapshot
    # The running step's worker loses it; its result is discarded.
    assert await store.extend_leases("w1", [step], now=at(62), lease_s=LEASE_S) == set()
    assert not await complete(store, step, succeeded(path_ended=True), at(62))
    assert await store.expire_runs(now=at(61)) == []
    assert await store.expire_runs(now=at(121)) == [later.id]
    assert {s.run_id for s in await claim(store, now=at(1000))} == {no_deadline.id}


# -- failure filters -----------------------------------------------------------------------

ERROR_TYPES = (
    "http.500",
    "http.503",
    "http.400",
    "https.500",
    "a_b.x",
    "aab.x",
    "a%b.y",
    "azb.y",
    "a\\b.z",
    "aXb.z",
)


async def _failed_runs(store: Store) -> dict[str, RunId]:
    """One failed run per error type (and one succeeded run); run ids by error type."""
    wf = await make_workflow(store)
    by_type: dict[str, RunId] = {}
    for index, kind in enumerate(ERROR_TYPES):
        [run] = await start(store, wf, now=at(index))
        step = await claim_one(store, now=at(index))
        assert await complete(store, step, failed_run(ErrorInfo(kind, "x", False)), at(index))
        by_type[kind] = run.id
    [ok] = await start(store, wf, now=at(50))
    assert await complete(store, await claim_one(store, now=at(50)), succeeded(path_ended=True))
    assert (await store.get_run(ok.id)).error_type is None
    return by_type


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("http.500", {"http.500"}),
        ("http.*", {"http.500", "http.503", "http.400"}),
        ("http.5*", {"http.500", "http.503"}),
        ("http", set()),
        ("http.5", set()),
        ("ht*.500", set()),  # '*' only means a prefix at the end
        ("a_b.x", {"a_b.x"}),
        ("a_b*", {"a_b.x"}),  # '_' is literal, not "any character"
        ("a%*", {"a%b.y"}),  # '%' is literal, not "anything"
        ("a\\b*", {"a\\b.z"}),  # so is the escape character
        ("*", set(ERROR_TYPES)),
    ],
)
async def test_list_runs_filters_by_error_type_exactly_or_by_prefix(
    store: Store, pattern: str, expected: set[str]
) -> None:
    by_type = await _failed_runs(store)

    found = await store.list_runs(error_type=pattern, limit=100)

    assert {run.id for run in found} == {by_type[kind] for kind in expected}
    assert all(run.error_type is not None for run in found)
    ids = [run.id for run in found]
    assert ids == sorted(ids, reverse=True)  # newest first, like every list


async def test_list_runs_error_filter_combines_with_status_and_finds_timeouts(
    store: Store,
) -> None:
    by_type = await _failed_runs(store)
    wf = await make_workflow(store, "other")
    timed_out = await _with_deadline(store, wf, at(60), at(55))
    assert await store.expire_runs(now=at(61)) == [timed_out.id]

    assert [r.id for r in await store.list_runs(error_type="run.*")] == [timed_out.id]
    assert [r.id for r in await store.list_runs(error_type="run.timeout")] == [timed_out.id]
    failed_http = await store.list_runs(status=RunStatus.FAILED, error_type="http.*")
    assert {r.id for r in failed_http} == {by_type[k] for k in ("http.500", "http.503", "http.400")}
    assert await store.list_runs(status=RunStatus.TIMED_OUT, error_type="http.*") == []
    assert await store.list_runs(workflow_id=wf.id, error_type="http.*") == []


async def test_list_runs_error_filter_is_case_sensitive(store: Store) -> None:
    by_type = await _failed_runs(store)

    assert await store.list_runs(error_type="HTTP.500") == []
    assert await store.list_runs(error_type="HTTP.*") == []
    assert {r.id for r in await store.list_runs(error_type="aX*")} == {by_type["aXb.z"]}


# -- heartbeats ----------------------------------------------------------------------------


async def test_extend_leases_returns_only_the_steps_still_held(store: Store) -> None:
    wf = await make_workflow(store)
    kept_run = await _with_deadline(store, wf, None, T0)
    kept = await claim_one(store)
    cancelled_run = await _with_deadline(store, wf, None, T0)
    cancelled = await claim_one(store)
    timed_out_run = await _with_deadline(store, wf, at(10), T0)
    timed_out = await claim_one(store)
    await _with_deadline(store, wf, None, T0)
    completed = await claim_one(store)
    # Two steps whose short leases expire and are recovered: one is then claimed by another
    # worker, the other by the same worker again (a new claim: the old record is stale).
    await start(store, wf, 2, now=at(1))
    short = await claim(store, now=at(1), lease_s=1)
    assert len(short) == 2
    assert (kept_run.id, cancelled_run.id, timed_out_run.id) == (
        kept.run_id,
        cancelled.run_id,
        timed_out.run_id,
    )

    await store.cancel_run(cancelled_run.id, actor=None, reason=None, now=at(3))
    assert await store.expire_runs(now=at(11)) == [timed_out_run.id]
    assert await complete(store, completed, succeeded(path_ended=True), at(11))
    assert await store.recover_expired("w9", now=at(11), max_recoveries=3, lease_s=LEASE_S) == (
        2,
        [],
    )
    [theirs] = await claim(store, now=at(11), limit=1, worker="w2")
    [mine_again] = await claim(store, now=at(11), limit=1, worker="w1")
    stale = next(s for s in short if s.id == mine_again.id)
    taken = next(s for s in short if s.id == theirs.id)

    held = [kept, cancelled, timed_out, completed, stale, taken]
    assert await store.extend_leases("w1", held, now=at(20), lease_s=LEASE_S) == {kept.id}
    assert await store.extend_leases("w1", [mine_again], now=at(20), lease_s=LEASE_S) == {
        mine_again.id
    }

    current = {s.id: s for s in await store.list_steps(kept.run_id)}
    assert current[kept.id].lease_expires_at == at(20 + LEASE_S)
    # Nothing else was touched: the other worker's lease is as it claimed it.
    [their_step] = await store.list_steps(theirs.run_id)
    assert (their_step.lease_owner, their_step.lease_expires_at) == ("w2", at(11 + LEASE_S))
    assert (await event_types(store, cancelled_run.id))[-1] == "run.cancelled"
