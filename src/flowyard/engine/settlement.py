"""Settlement: what a batch of step completions does to its steps, branches and runs.

Pure decisions, no I/O. The store reads the facts under its run locks, hands them here, and
records the plan in the same transaction (``store/completion.py``, ``store/forks.py``):

1. :class:`Settlement` takes the batch (each step's claim token, the runs' statuses, which
   signals are still free, which branches are still open) and decides per completion:
   stale or applied, the step's new row, the steps and forks it starts, the branch or run
   it ends, its events.
2. :meth:`Settlement.end_paths`: a run whose main path ended succeeds unless another step
   of it is still active (the store says which).
3. :func:`decide_join`: a fork's branch counts -> wake the waiting step (cancelling what is
   left), start more branches (``max_concurrency``), or keep waiting.
4. :meth:`Settlement.activity`: a run is ``waiting`` while every unfinished step of it is
   parked, else ``running``.

Everything here is tested without a database (``tests/unit/test_engine_settlement.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flowyard.domain.commands import (
    NEVER,
    ChildRun,
    Fork,
    JoinPolicy,
    StepCompletion,
    Transition,
    WaitKind,
    waited_signal,
)
from flowyard.domain.errors import ErrorInfo
from flowyard.domain.events import EventType
from flowyard.domain.records import StepRecord
from flowyard.domain.statuses import BranchStatus, RunStatus, StepStatus

#: Step statuses a completion leaves unfinished (no ``finished_at``).
_UNFINISHED = frozenset({StepStatus.RETRYING, StepStatus.WAITING, StepStatus.SCHEDULED})
#: Run statuses in which a run's activity decides between these two.
_LIVE = frozenset({RunStatus.RUNNING, RunStatus.WAITING})


@dataclass(frozen=True, slots=True)
class RunFacts:
    """A run of the batch, as locked."""

    status: RunStatus
    is_child: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    """A history entry to record."""

    run_id: str
    type: EventType | str
    data: dict[str, Any]
    step_id: int | None = None
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class StepWrite:
    """A completed step's row: its result and, when it is not finished, when it is due."""

    step_id: int
    status: StepStatus
    output: Any
    error: dict[str, Any] | None
    finished_at: datetime | None
    #: None: keep the row's ``available_at``.
    available_at: datetime | None
    #: A paused run's step whose next run would start during the pause waits for the resume.
    held: bool
    wait_until: datetime | None
    waiting_for: str | None
    wait_data: dict[str, Any] | None
    #: Added to ``attempt`` (-1: the claim's attempt is taken back).
    attempt_delta: int = 0


@dataclass(frozen=True, slots=True)
class NewStep:
    """A step to insert (status ``scheduled``)."""

    run_id: str
    node_id: str
    node_type: str
    branch: str
    available_at: datetime
    held: bool
    iteration: int = 0


@dataclass(frozen=True, slots=True)
class BranchEnd:
    """A branch that ended: its fork's join is evaluated once it is recorded."""

    run_id: str
    key: str
    status: BranchStatus
    output: Any = None
    error: dict[str, Any] | None = None


def rescheduled(step: StepRecord, reason: str) -> Transition:
    """Run the step again now (not counted as a failure): what it decided is void."""
    return Transition(
        StepStatus.SCHEDULED,
        event=(EventType.STEP_RESCHEDULED, {"node_id": step.node_id, "reason": reason}),
    )


def deferred(step: StepRecord, keys: Sequence[str], retry_at: datetime) -> Transition:
    """A quota had no token for the step: it is due again at ``retry_at``, and the attempt
    its claim counted is taken back (it did not run; its retry policy is untouched)."""
    return Transition(
        StepStatus.SCHEDULED,
        retry_at=retry_at,
        attempt_delta=-1,
        event=(
            EventType.STEP_DEFERRED,
            {"node_id": step.node_id, "quotas": list(keys), "retry_at": retry_at.isoformat()},
        ),
    )


def fail_run(node_id: str, error: ErrorInfo) -> Transition:
    """Fail the step and its run without consulting the definition (it is unusable, or the
    step's result cannot be stored)."""
    return Transition(
        StepStatus.FAILED,
        error=error,
        fail_run=error,
        event=(EventType.STEP_FAILED, {"node_id": node_id, "error": error.as_dict()}),
    )


#: The error of a step whose result the database refused.
COMMIT_ERROR = "engine.commit"


def uncommittable(completion: StepCompletion, reason: str) -> StepCompletion | None:
    """What replaces a result the database refused: the step fails with ``engine.commit``.
    None when that failure was itself refused (give up: the lease expires and recovery
    takes over)."""
    step, tr = completion.step, completion.transition
    if tr.error is not None and tr.error.type == COMMIT_ERROR:
        return None
    error = ErrorInfo(
        COMMIT_ERROR,
        f"the step's result could not be stored: {reason}",
        False,
        {"node_id": step.node_id},
    )
    return StepCompletion(step, fail_run(step.node_id, error))


def step_write(step: StepRecord, tr: Transition, *, paused: bool, now: datetime) -> StepWrite:
    """The row of ``step`` after ``tr``."""
    wait = tr.wait
    parked = tr.step_status == StepStatus.WAITING
    wait_data: dict[str, Any] | None = step.wait_data
    if wait is not None:
        wait_data = dict(wait.data or {})
        if tr.fork is not None:
            wait_data["join"] = tr.fork.join.as_dict()
        elif tr.child is not None:
            wait_data["join"] = JoinPolicy().as_dict()
    if tr.step_status == StepStatus.SCHEDULED:
        available_at: datetime | None = tr.retry_at or now
    else:
        available_at = ((wait.until or NEVER) if wait else None) or tr.retry_at
    return StepWrite(
        step_id=step.id,
        status=tr.step_status,
        output=tr.output,
        error=tr.error.as_dict() if tr.error else None,
        finished_at=None if tr.step_status in _UNFINISHED else now,
        available_at=available_at,
        held=paused
        and (tr.retry_at is not None or parked or tr.step_status == StepStatus.SCHEDULED),
        wait_until=wait.until if wait else step.wait_until,
        waiting_for=wait.on if wait else step.waiting_for,
        wait_data=wait_data,
        attempt_delta=tr.attempt_delta,
    )


@dataclass
class Settlement:
    """The plan of one completion batch. Feed it with :meth:`complete`, then
    :meth:`end_paths` and :meth:`activity` with what the store found; read the fields."""

    now: datetime
    runs: dict[str, RunFacts]
    actor: str | None = None

    applied: list[bool] = field(default_factory=list)
    step_writes: list[StepWrite] = field(default_factory=list)
    #: (signal id, step id): signals the batch takes.
    consumed: list[tuple[int, int]] = field(default_factory=list)
    new_steps: list[NewStep] = field(default_factory=list)
    forks: list[tuple[StepRecord, Fork, bool]] = field(default_factory=list)
    children: list[tuple[StepRecord, ChildRun]] = field(default_factory=list)
    branch_ends: list[BranchEnd] = field(default_factory=list)
    #: Column values to write per run (status and what goes with it).
    run_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Runs failed by this batch: their unfinished steps are cancelled.
    failed_runs: set[str] = field(default_factory=set)
    #: Run id -> output of its main path that ended (succeeds if nothing else is active).
    ended_paths: dict[str, Any] = field(default_factory=dict)
    #: Runs this batch ended, with their final status.
    settled: dict[str, RunStatus] = field(default_factory=dict)
    #: Steps that parked on a signal (a signal sent while they ran must wake them).
    signal_waits: list[int] = field(default_factory=list)
    #: Runs a step of which parked (a timer, a signal) / scheduled more work.
    parked_runs: set[str] = field(default_factory=set)
    busy_runs: set[str] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)

    def complete(
        self,
        completions: Sequence[StepCompletion],
        *,
        claims: Mapping[int, int],
        free_signals: Iterable[int],
        open_branches: set[tuple[str, str]],
    ) -> None:
        """Decide each completion in batch order.

        - ``claims``: claim count of each step still leased; a completion whose step was
          claimed again since (or is no longer running) is stale and discarded, and so is a
          duplicate inside the batch.
        - ``free_signals``: of the signals the batch takes, those still untaken; a step
          whose signal another took first runs again.
        - ``open_branches``: (run, branch key) pairs still running, enclosing ones too; a
          step of a closed branch only records its result.
        """
        tokens = dict(claims)
        free = set(free_signals)
        for completion in completions:
            step = completion.step
            if tokens.get(step.id) != step.claims:
                self.applied.append(False)
                continue
            tokens.pop(step.id)
            taken = completion.transition.consume_signal
            if taken is not None:
                if taken in free:
                    free.discard(taken)
                else:
                    completion = StepCompletion(step, rescheduled(step, "its signal was taken"))
            self._decide(completion, open_branches)
            self.applied.append(True)

    def _decide(self, completion: StepCompletion, open_branches: set[tuple[str, str]]) -> None:
        step, tr = completion.step, completion.transition
        run_id, now = step.run_id, self.now
        status = self.runs[run_id].status
        paused = status == RunStatus.PAUSED
        self.step_writes.append(step_write(step, tr, paused=paused, now=now))
        if tr.consume_signal is not None:
            self.consumed.append((tr.consume_signal, step.id))
        if status == RunStatus.PENDING:
            # The claim skipped this run (row locked meanwhile): it starts here.
            status = self._set_status(run_id, RunStatus.RUNNING)
            self._change(run_id, started_at=step.started_at or now)
            self._event(run_id, EventType.RUN_STARTED, {})
        self._event(run_id, tr.event[0], tr.event[1], step_id=step.id, actor=self.actor)
        for kind, data in tr.extra_events:
            self._event(run_id, kind, data, step_id=step.id, actor=self.actor)
        if status.is_terminal:
            return  # the run ended meanwhile (e.g. failed by another branch): the step only
        if step.branch and (run_id, step.branch) not in open_branches:
            return  # its branch was cancelled (the fork is done): nothing follows
        self.new_steps.extend(
            NewStep(
                run_id, n.node_id, n.node_type, step.branch, n.available_at, paused, n.iteration
            )
            for n in tr.next_steps
        )
        if tr.fork is not None:
            self.forks.append((step, tr.fork, paused))
        if tr.child is not None:
            self.children.append((step, tr.child))
        if tr.wait is not None and waited_signal(tr.wait.on) is not None:
            self.signal_waits.append(step.id)
        if tr.wait is not None and tr.fork is None and tr.child is None:
            self.parked_runs.add(run_id)
        if tr.next_steps or tr.fork is not None or tr.child is not None:
            self.busy_runs.add(run_id)
        if tr.fail_run is not None:
            error = tr.fail_run.as_dict()
            # Remember which step failed: retrying the run restarts from it.
            error["details"] = {**error["details"], "step_id": step.id, "node_id": step.node_id}
            if step.branch:
                self.branch_ends.append(
                    BranchEnd(run_id, step.branch, BranchStatus.FAILED, None, error)
                )
                self._event(run_id, EventType.BRANCH_FAILED, {"branch": step.branch})
                return
            self._set_status(run_id, RunStatus.FAILED)
            self.failed_runs.add(run_id)
            self.settled[run_id] = RunStatus.FAILED
            self.ended_paths.pop(run_id, None)
            self._change(run_id, error=error, error_type=tr.fail_run.type, finished_at=now)
            self._event(run_id, EventType.RUN_FAILED, {"error": error})
        elif tr.path_ended:
            if step.branch:
                self.branch_ends.append(
                    BranchEnd(run_id, step.branch, BranchStatus.SUCCEEDED, tr.run_output)
                )
            else:
                self.ended_paths[run_id] = tr.run_output

    def end_paths(self, still_active: set[str]) -> list[str]:
        """Runs whose main path ended succeed when no other step of theirs is active;
        returns them."""
        succeeded = []
        for run_id, output in self.ended_paths.items():
            if run_id in still_active:
                continue
            succeeded.append(run_id)
            self._set_status(run_id, RunStatus.SUCCEEDED)
            self.settled[run_id] = RunStatus.SUCCEEDED
            self._change(run_id, output=output, finished_at=self.now)
            self._event(run_id, EventType.RUN_SUCCEEDED, {})
        return succeeded

    def to_check(self, busy: Iterable[str] = ()) -> tuple[set[str], list[str]]:
        """Runs whose activity may change, and those of them the store must look at (they
        only parked in this batch: are other steps of them due or running?). ``busy``: runs
        that got work due now elsewhere in the transaction (a join started branches)."""
        self.busy_runs.update(busy)
        live = {r for r in self.parked_runs | self.busy_runs if self._status(r) in _LIVE}
        return live, sorted(live - self.busy_runs)

    def activity(self, live: set[str], busy_elsewhere: set[str]) -> None:
        """Set each live run ``running`` if it has a step due or running (scheduled in this
        batch, or found by the store), else ``waiting``."""
        for run_id in live:
            wanted = activity(run_id in self.busy_runs or run_id in busy_elsewhere)
            if self._status(run_id) != wanted:
                self._set_status(run_id, wanted)

    def _status(self, run_id: str) -> RunStatus:
        return self.runs[run_id].status

    def _set_status(self, run_id: str, status: RunStatus) -> RunStatus:
        self.runs[run_id] = RunFacts(status, self.runs[run_id].is_child)
        self._change(run_id, status=status.value)
        return status

    def _change(self, run_id: str, **values: Any) -> None:
        self.run_changes.setdefault(run_id, {}).update(values, updated_at=self.now)

    def _event(
        self,
        run_id: str,
        kind: EventType | str,
        data: dict[str, Any],
        *,
        step_id: int | None = None,
        actor: str | None = None,
    ) -> None:
        self.events.append(Event(run_id, kind, data, step_id, actor))

    def take_run_changes(self) -> dict[str, dict[str, Any]]:
        """The run changes decided so far (and forget them: each is written once)."""
        changes, self.run_changes = self.run_changes, {}
        return changes


def activity(busy: bool) -> RunStatus:
    """A started, live run is ``running`` while a step of it is due or running (``busy``),
    and ``waiting`` while every unfinished step is parked (a timer, a signal, an action)."""
    return RunStatus.RUNNING if busy else RunStatus.WAITING


def resumed(*, started: bool, busy: bool) -> RunStatus:
    """The status of a run that resumes from a pause: ``pending`` if it never started."""
    return activity(busy) if started else RunStatus.PENDING


@dataclass(frozen=True, slots=True)
class JoinDecision:
    """What a fork's join does now: wake its step (cancelling the open branches), start
    ``start`` more pending branches, or neither (keep waiting)."""

    wake: bool = False
    cancel_open: bool = False
    start: int = 0
    event: dict[str, Any] | None = None


def decide_join(policy: JoinPolicy, counts: Mapping[str, int]) -> JoinDecision:
    """A fork's join, from how many of its branches are in each :class:`BranchStatus`."""
    running = counts.get(BranchStatus.RUNNING, 0)
    waiting = counts.get(BranchStatus.PENDING, 0)
    succeeded = counts.get(BranchStatus.SUCCEEDED, 0)
    failed = counts.get(BranchStatus.FAILED, 0)
    if policy.done(succeeded=succeeded, failed=failed, unfinished=running + waiting):
        return JoinDecision(
            wake=True,
            cancel_open=bool(running + waiting),
            event={
                "succeeded": succeeded,
                "failed": failed,
                "cancelled": counts.get(BranchStatus.CANCELLED, 0) + running + waiting,
            },
        )
    free = (policy.max_concurrency or 0) - running
    return JoinDecision(start=min(free, waiting) if waiting and free > 0 else 0)


def child_result(
    run_id: str, status: RunStatus, output: Any, error: dict[str, Any] | None
) -> tuple[BranchStatus, Any, dict[str, Any] | None]:
    """The branch result of a child run that ended: (status, output, error)."""
    if status == RunStatus.SUCCEEDED:
        return BranchStatus.SUCCEEDED, output, error
    if error is None:
        error = {
            "type": f"child.{status.value}",
            "message": f"the child run {run_id} ended {status.value}",
            "transient": False,
            "details": {},
        }
    return BranchStatus.FAILED, output, error


def joinable(waiting_for: str | None) -> bool:
    """A waiting step that a join wakes (its branches or its child run)."""
    return waiting_for in (WaitKind.BRANCHES, WaitKind.CHILD)
