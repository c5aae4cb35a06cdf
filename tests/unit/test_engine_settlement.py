"""The run-status rules of tests/stepwise/, as pure decisions of engine.settlement (no
database): stale completions, taken signals, closed branches, branch and run failures, run
success, running vs waiting, pauses, joins, child runs and refused commits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flowyard.domain.commands import (
    NEVER,
    BranchStart,
    ChildRun,
    Fork,
    JoinPolicy,
    NextStep,
    StepCompletion,
    Transition,
    Wait,
    WaitKind,
    signal_wait,
)
from flowyard.domain.errors import ErrorInfo
from flowyard.domain.events import EventType
from flowyard.domain.ids import RunId, StepId
from flowyard.domain.records import StepRecord
from flowyard.domain.statuses import BranchStatus, RunStatus, StepStatus
from flowyard.engine.settlement import (
    COMMIT_ERROR,
    RunFacts,
    Settlement,
    child_result,
    decide_join,
    resumed,
    uncommittable,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def step(
    step_id: int, run: str = "r1", node: str = "n", *, branch: str = "", claims: int = 1
) -> StepRecord:
    return StepRecord(
        id=StepId(step_id),
        run_id=RunId(run),
        node_id=node,
        node_type="set",
        branch=branch,
        iteration=0,
        status=StepStatus.RUNNING,
        attempt=0,
        available_at=NOW,
        created_at=NOW,
        started_at=NOW,
        finished_at=None,
        lease_owner="w1",
        lease_expires_at=NOW + timedelta(seconds=30),
        output=None,
        error=None,
        recoveries=0,
        claims=claims,
    )


def succeeded(to: str | None = None, output: Any = None) -> Transition:
    if to is None:
        return Transition(StepStatus.SUCCEEDED, output=output, path_ended=True, run_output=output)
    return Transition(
        StepStatus.SUCCEEDED, output=output, next_steps=(NextStep(to, "set", 0, NOW),)
    )


def parked(on: str = WaitKind.TIMER, until: datetime | None = None) -> Transition:
    return Transition(StepStatus.WAITING, wait=Wait(until, on))


def failed(error_type: str = "boom") -> Transition:
    error = ErrorInfo(error_type, "it broke", False)
    return Transition(StepStatus.FAILED, error=error, fail_run=error)


def settle(
    *completions: tuple[StepRecord, Transition],
    runs: dict[str, RunStatus] | None = None,
    claims: dict[int, int] | None = None,
    free_signals: set[int] = frozenset(),  # type: ignore[assignment]
    open_branches: set[tuple[str, str]] | None = None,
) -> Settlement:
    batch = [StepCompletion(s, t) for s, t in completions]
    statuses = runs or {s.run_id: RunStatus.RUNNING for s, _ in completions}
    plan = Settlement(NOW, {r: RunFacts(st) for r, st in statuses.items()})
    plan.complete(
        batch,
        claims={s.id: s.claims for s, _ in completions} if claims is None else claims,
        free_signals=free_signals,
        open_branches=open_branches or set(),
    )
    return plan


def types(plan: Settlement) -> list[str]:
    return [e.type for e in plan.events]


# -- stale and duplicate completions ---------------------------------------------------------


def test_a_completion_whose_step_was_claimed_again_is_discarded() -> None:
    s = step(1, claims=1)
    plan = settle((s, succeeded("next")), claims={1: 2})
    assert plan.applied == [False]
    assert plan.step_writes == [] and plan.new_steps == [] and plan.events == []


def test_a_completion_of_a_step_no_longer_running_is_discarded() -> None:
    plan = settle((step(1), succeeded("next")), claims={})
    assert plan.applied == [False]


def test_a_duplicate_completion_inside_a_batch_is_stale() -> None:
    s = step(1)
    plan = settle((s, succeeded("a")), (s, succeeded("b")))
    assert plan.applied == [True, False]
    assert [n.node_id for n in plan.new_steps] == ["a"]


# -- signals -----------------------------------------------------------------------------------


def test_a_signal_taken_by_an_earlier_step_of_the_batch_reschedules_the_later_one() -> None:
    first, second = step(1, node="w1"), step(2, node="w2")
    takes = Transition(StepStatus.SUCCEEDED, path_ended=True, consume_signal=7)
    plan = settle((first, takes), (second, takes), free_signals={7})
    assert plan.consumed == [(7, 1)]
    [_, again] = plan.step_writes
    assert again.status == StepStatus.SCHEDULED and again.available_at == NOW
    assert again.finished_at is None
    assert EventType.STEP_RESCHEDULED in types(plan)
    assert plan.ended_paths == {"r1": None}  # only the first step's path ended


def test_a_signal_taken_before_the_batch_reschedules_the_step() -> None:
    takes = Transition(StepStatus.SUCCEEDED, path_ended=True, consume_signal=7)
    plan = settle((step(1), takes), free_signals=set())
    assert plan.consumed == [] and plan.step_writes[0].status == StepStatus.SCHEDULED


def test_a_step_that_parks_on_a_signal_is_checked_for_one_sent_while_it_ran() -> None:
    plan = settle((step(1), parked(signal_wait("reply"))), (step(2, "r2"), parked()))
    assert plan.signal_waits == [1]
    assert plan.step_writes[0].waiting_for == "signal:reply"
    assert plan.step_writes[0].available_at == NEVER  # no timer: only a wake-up moves it


# -- runs: started, ended meanwhile, failed, succeeded ------------------------------------------


def test_a_pending_run_starts_with_its_first_completion() -> None:
    plan = settle((step(1), succeeded("next")), runs={"r1": RunStatus.PENDING})
    assert plan.run_changes["r1"]["status"] == RunStatus.RUNNING
    assert plan.run_changes["r1"]["started_at"] == NOW
    assert types(plan)[:2] == [EventType.RUN_STARTED, EventType.STEP_SUCCEEDED]


def test_a_step_of_a_run_that_ended_meanwhile_only_records_its_result() -> None:
    plan = settle((step(1), succeeded("next")), runs={"r1": RunStatus.CANCELLED})
    assert plan.applied == [True] and len(plan.step_writes) == 1
    assert plan.new_steps == [] and plan.run_changes == {} and plan.settled == {}


def test_a_failure_on_the_main_path_fails_the_run_and_names_the_step() -> None:
    plan = settle((step(1, node="charge"), failed("card.declined")))
    assert plan.failed_runs == {"r1"} and plan.settled == {"r1": RunStatus.FAILED}
    change = plan.run_changes["r1"]
    assert change["status"] == RunStatus.FAILED and change["error_type"] == "card.declined"
    assert change["error"]["details"] == {"step_id": 1, "node_id": "charge"}
    assert EventType.RUN_FAILED in types(plan)


def test_a_failure_after_a_path_ended_in_the_same_batch_wins() -> None:
    plan = settle((step(1), succeeded()), (step(2), failed()))
    assert plan.ended_paths == {} and plan.settled == {"r1": RunStatus.FAILED}


def test_a_run_whose_path_ended_succeeds_only_when_nothing_else_is_active() -> None:
    plan = settle((step(1, "r1"), succeeded(output={"ok": 1})), (step(2, "r2"), succeeded()))
    assert plan.end_paths(still_active={"r2"}) == ["r1"]
    assert plan.settled == {"r1": RunStatus.SUCCEEDED}
    assert plan.run_changes["r1"]["output"] == {"ok": 1}
    assert "r2" not in plan.run_changes


# -- branches ------------------------------------------------------------------------------------


def test_a_failure_inside_a_branch_fails_the_branch_not_the_run() -> None:
    plan = settle((step(1, branch="/5.0"), failed()), open_branches={("r1", "/5.0")})
    assert plan.failed_runs == set() and plan.settled == {}
    [end] = plan.branch_ends
    assert (end.key, end.status) == ("/5.0", BranchStatus.FAILED)
    assert EventType.BRANCH_FAILED in types(plan)


def test_a_path_that_ends_inside_a_branch_ends_the_branch() -> None:
    plan = settle((step(1, branch="/5.0"), succeeded(output=3)), open_branches={("r1", "/5.0")})
    assert [(e.status, e.output) for e in plan.branch_ends] == [(BranchStatus.SUCCEEDED, 3)]
    assert plan.ended_paths == {}


def test_a_step_of_a_closed_branch_schedules_nothing_and_ends_nothing() -> None:
    """A join that was done cancelled the branch while this step ran (stepwise:
    test_late_branch_step)."""
    plan = settle(
        (step(1, branch="/5.0"), succeeded("next")),
        (step(2, branch="/5.1"), failed()),
        (step(3, branch="/5.2"), parked()),
        open_branches=set(),
    )
    assert plan.applied == [True, True, True] and len(plan.step_writes) == 3
    assert plan.new_steps == [] and plan.branch_ends == [] and plan.parked_runs == set()


# -- running or waiting ------------------------------------------------------------------------


def test_a_run_whose_only_step_parks_is_waiting() -> None:
    plan = settle((step(1), parked()))
    live, doubtful = plan.to_check()
    assert live == {"r1"} and doubtful == ["r1"]
    plan.activity(live, busy_elsewhere=set())
    assert plan.run_changes["r1"]["status"] == RunStatus.WAITING


def test_a_run_with_a_busy_branch_is_running_not_waiting() -> None:
    """One branch parks while another schedules its next step (stepwise: test_run_status)."""
    plan = settle(
        (step(1, branch="/2.0"), parked()),
        (step(3, branch="/2.1"), succeeded("s2")),
        open_branches={("r1", "/2.0"), ("r1", "/2.1")},
    )
    live, doubtful = plan.to_check()
    assert live == {"r1"} and doubtful == []  # no need to look: it scheduled work
    plan.activity(live, busy_elsewhere=set())
    assert "r1" not in plan.run_changes  # it stays running


def test_a_parked_step_with_other_work_due_keeps_the_run_running() -> None:
    plan = settle((step(1), parked()))
    live, doubtful = plan.to_check()
    plan.activity(live, busy_elsewhere=set(doubtful))
    assert "r1" not in plan.run_changes


def test_a_run_whose_join_starts_the_next_item_is_running() -> None:
    """Item 0 parks, item 1 ends, the join starts item 2 (stepwise: test_run_status)."""
    plan = settle(
        (step(1, branch="/2.0"), parked()),
        (step(3, branch="/2.1"), succeeded()),
        runs={"r1": RunStatus.WAITING},
        open_branches={("r1", "/2.0"), ("r1", "/2.1")},
    )
    live, doubtful = plan.to_check(busy=["r1"])  # the join's new branch is due now
    assert doubtful == []
    plan.activity(live, busy_elsewhere=set())
    assert plan.run_changes["r1"]["status"] == RunStatus.RUNNING


def test_a_waiting_run_woken_by_a_signal_is_running_while_its_next_step_is_due() -> None:
    plan = settle((step(1), succeeded("next")), runs={"r1": RunStatus.WAITING})
    plan.activity(*plan.to_check()[:1], busy_elsewhere=set())
    assert plan.run_changes["r1"]["status"] == RunStatus.RUNNING


def test_a_paused_run_is_neither_running_nor_waiting() -> None:
    plan = settle((step(1), parked()), runs={"r1": RunStatus.PAUSED})
    assert plan.to_check() == (set(), [])


# -- pauses ----------------------------------------------------------------------------------------


def test_work_decided_during_a_pause_waits_for_the_resume() -> None:
    retry = Transition(
        StepStatus.RETRYING, error=ErrorInfo("x", "y", True), retry_at=NOW + timedelta(1)
    )
    fork = Fork((BranchStart("a", "a1", "set"),), JoinPolicy())
    plan = settle(
        (step(1, "r1"), succeeded("next")),
        (step(2, "r1", "w"), parked()),
        (step(3, "r1", "x"), retry),
        (
            step(4, "r1", "f"),
            Transition(StepStatus.WAITING, wait=Wait(None, "branches"), fork=fork),
        ),
        (step(5, "r1", "s"), succeeded()),
        runs={"r1": RunStatus.PAUSED},
    )
    assert [n.held for n in plan.new_steps] == [True]
    assert [w.held for w in plan.step_writes] == [False, True, True, True, False]
    assert plan.forks[0][2] is True  # its first branches start held


def test_a_fork_waits_with_its_join_policy_and_a_child_with_join_all() -> None:
    fork = Fork((BranchStart("a", "a1", "set"),), JoinPolicy("any", max_concurrency=3))
    child = ChildRun("wf", 1, "start", "trigger", {})
    plan = settle(
        (step(1), Transition(StepStatus.WAITING, wait=Wait(None, "branches"), fork=fork)),
        (step(2, "r2"), Transition(StepStatus.WAITING, wait=Wait(None, "child"), child=child)),
    )
    assert plan.step_writes[0].wait_data == {"join": fork.join.as_dict()}
    assert plan.step_writes[1].wait_data == {"join": JoinPolicy().as_dict()}
    assert plan.busy_runs == {"r1", "r2"} and plan.parked_runs == set()
    assert len(plan.forks) == 1 and len(plan.children) == 1


# -- joins -----------------------------------------------------------------------------------------


def test_a_join_all_waits_for_every_branch() -> None:
    assert not decide_join(JoinPolicy(), {"running": 1, "succeeded": 2}).wake
    done = decide_join(JoinPolicy(), {"succeeded": 3})
    assert done.wake and not done.cancel_open
    assert done.event == {"succeeded": 3, "failed": 0, "cancelled": 0}


def test_a_join_any_wakes_on_the_first_success_and_cancels_the_rest() -> None:
    done = decide_join(JoinPolicy("any"), {"succeeded": 1, "running": 2, "pending": 4})
    assert done.wake and done.cancel_open
    assert done.event == {"succeeded": 1, "failed": 0, "cancelled": 6}


def test_a_failure_beyond_the_tolerated_ends_the_fork_unless_continue_on_error() -> None:
    counts = {"failed": 2, "running": 1}
    assert decide_join(JoinPolicy(tolerated_failures=1), counts).wake
    assert not decide_join(JoinPolicy(tolerated_failures=1, continue_on_error=True), counts).wake


def test_failed_items_free_their_slot_in_the_window() -> None:
    """max_concurrency 2: one item failed (tolerated), one runs, three wait: start one
    (stepwise: test_map_concurrency)."""
    policy = JoinPolicy(max_concurrency=2, tolerated_failures=5)
    decision = decide_join(policy, {"failed": 1, "running": 1, "pending": 3})
    assert not decision.wake and decision.start == 1
    assert decide_join(policy, {"running": 2, "pending": 3}).start == 0
    assert decide_join(policy, {"succeeded": 4, "pending": 1}).start == 1


def test_n_of_wakes_when_enough_succeeded_or_too_few_can() -> None:
    assert decide_join(JoinPolicy("n_of", n=2), {"succeeded": 2, "running": 1}).wake
    impossible = {"succeeded": 0, "failed": 2, "running": 1}
    policy = JoinPolicy("n_of", n=2, continue_on_error=True)
    assert decide_join(policy, impossible).wake


# -- child runs --------------------------------------------------------------------------------


def test_a_child_run_that_succeeded_passes_its_output() -> None:
    assert child_result("c1", RunStatus.SUCCEEDED, {"x": 1}, None) == (
        BranchStatus.SUCCEEDED,
        {"x": 1},
        None,
    )


def test_a_child_run_that_ended_otherwise_fails_its_branch_with_a_typed_error() -> None:
    """A child that times out or is cancelled directly (stepwise: test_children)."""
    for status in (RunStatus.TIMED_OUT, RunStatus.CANCELLED):
        branch_status, _, error = child_result("c1", status, None, None)
        assert branch_status == BranchStatus.FAILED
        assert error is not None and error["type"] == f"child.{status.value}"
    own = {"type": "boom", "message": "m", "transient": False, "details": {}}
    assert child_result("c1", RunStatus.FAILED, None, own)[2] == own


# -- results the database refuses -------------------------------------------------------------


def test_a_refused_result_becomes_an_engine_commit_failure_once() -> None:
    s = step(1, node="big")
    first = uncommittable(StepCompletion(s, succeeded("next")), "DataError")
    assert first is not None
    assert first.transition.fail_run is not None
    assert first.transition.fail_run.type == COMMIT_ERROR
    assert first.transition.step_status == StepStatus.FAILED
    assert uncommittable(first, "DataError") is None  # refused again: give up


def test_a_resumed_run_is_pending_running_or_waiting() -> None:
    assert resumed(started=False, busy=False) == RunStatus.PENDING
    assert resumed(started=True, busy=True) == RunStatus.RUNNING
    assert resumed(started=True, busy=False) == RunStatus.WAITING  # only parked steps left
