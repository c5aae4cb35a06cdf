"""Commands the engine hands to the store: what one step completion changes.

They live in the domain so the store (below the engine) can apply them without importing
engine code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from flowyard.domain.errors import ErrorInfo
from flowyard.domain.records import StepRecord
from flowyard.domain.statuses import StepStatus


@dataclass(frozen=True, slots=True)
class NextStep:
    """A step to schedule (in the branch of the step that schedules it): node, iteration
    (loops) and when it becomes due."""

    node_id: str
    node_type: str
    iteration: int
    available_at: datetime


#: Longest ``steps.branch``: each nesting level of forks adds ``/<step id>.<index>``.
MAX_BRANCH_KEY = 200

#: ``available_at`` of a step that waits without a timer (only a wake-up moves it).
NEVER = datetime(9999, 12, 31, tzinfo=UTC)


#: What a signal may be called (over the API, in ``wait_for_signal``, from the CLI). ``@`` is
#: reserved: state-machine actions are recorded as the signal ``@action``.
SIGNAL_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"


class WaitKind(StrEnum):
    """What a waiting step waits for (``steps.waiting_for``; a signal adds its name, see
    :func:`signal_wait`)."""

    #: Only its timer (``delay``).
    TIMER = "timer"
    #: The branches of its fork (``parallel``, ``map``): the join wakes it.
    BRANCHES = "branches"
    #: Its child run (``subworkflow``): the join wakes it when the child ends.
    CHILD = "child"
    #: A named signal (``wait_for_signal``; a state machine's actions are the signal
    #: ``@action``): ``signal:<name>``.
    SIGNAL = "signal"


#: Waits that a join ends (branches finish, a child run ends).
JOINED_WAITS = (WaitKind.BRANCHES.value, WaitKind.CHILD.value)
_SIGNAL_PREFIX = f"{WaitKind.SIGNAL.value}:"


def signal_wait(name: str) -> str:
    """``waiting_for`` of a step that waits for the signal ``name``."""
    return f"{_SIGNAL_PREFIX}{name}"


def waited_signal(waiting_for: str | None) -> str | None:
    """The signal name a step waits for (None: it waits for something else)."""
    if waiting_for is not None and waiting_for.startswith(_SIGNAL_PREFIX):
        return waiting_for[len(_SIGNAL_PREFIX) :]
    return None


@dataclass(frozen=True, slots=True)
class Wait:
    """Park the step (status ``waiting``) until ``until`` (None: no timer) or a wake-up.

    ``on`` names what wakes it: a :class:`WaitKind` (``timer``, ``branches``, ``child``) or
    ``signal:<name>`` (:func:`signal_wait`). ``data`` is kept on the step for the store
    (e.g. a join policy).
    """

    until: datetime | None
    on: str
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class BranchStart:
    """One branch of a fork: a parallel branch (by name) or a map item (by index)."""

    name: str
    start_node: str
    start_type: str
    item: Any = None


@dataclass(frozen=True, slots=True)
class JoinPolicy:
    """When a fork is done. ``all``: every branch finished; ``any``: one succeeded;
    ``n_of``: ``n`` succeeded. Failures beyond ``tolerated_failures`` end it early (the
    rest is cancelled) unless ``continue_on_error``. At most ``max_concurrency`` branches
    run at once (None: all)."""

    mode: str = "all"
    n: int | None = None
    max_concurrency: int | None = None
    tolerated_failures: int = 0
    continue_on_error: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON form, kept on the waiting step."""
        return {
            "mode": self.mode,
            "n": self.n,
            "max_concurrency": self.max_concurrency,
            "tolerated_failures": self.tolerated_failures,
            "continue_on_error": self.continue_on_error,
        }

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> JoinPolicy:
        """Back from :meth:`as_dict`."""
        return cls(**(data or {}))

    def done(self, *, succeeded: int, failed: int, unfinished: int) -> bool:
        """True when the fork needs no more branches to finish."""
        if unfinished == 0:
            return True
        if not self.continue_on_error and failed > self.tolerated_failures:
            return True
        if self.mode == "any":
            return succeeded >= 1
        if self.mode == "n_of":
            need = self.n or 1
            return succeeded >= need or succeeded + unfinished < need
        return False


@dataclass(frozen=True, slots=True)
class Fork:
    """Start branches inside the run and wait for them (the step waits on ``branches``)."""

    branches: tuple[BranchStart, ...]
    join: JoinPolicy
    kind: str = "parallel"  # or "map": branch items are in the scope as ``item``/``index``


@dataclass(frozen=True, slots=True)
class ChildRun:
    """Start a run of another workflow as a child and wait for it (``child``)."""

    workflow_id: str
    workflow_version: int
    start_node: str
    start_type: str
    input: Any
    deadline_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """Everything one step completion changes, applied by the store in one transaction.

    - ``step_status``: SUCCEEDED, FAILED, RETRYING (then ``retry_at`` is set) or WAITING
      (then ``wait`` is set, and ``fork``/``child`` when it waits for branches/a child run).
    - ``next_steps``: steps to schedule.
    - ``path_ended``: this path has nowhere to go. On the main path the run succeeds with
      ``run_output`` when no other step of it is still active; inside a branch, the branch
      succeeds with it.
    - ``fail_run``: the run fails with this error (its other pending steps are cancelled);
      inside a branch, only the branch fails and its fork decides.
    """

    step_status: StepStatus
    output: Any = None
    error: ErrorInfo | None = None
    retry_at: datetime | None = None
    next_steps: tuple[NextStep, ...] = ()
    path_ended: bool = False
    run_output: Any = None
    fail_run: ErrorInfo | None = None
    event: tuple[str, dict[str, Any]] = ("step.succeeded", {})
    extra_events: tuple[tuple[str, dict[str, Any]], ...] = ()
    #: With step_status WAITING: what the step waits for (and fork/child say what to start).
    wait: Wait | None = None
    fork: Fork | None = None
    child: ChildRun | None = None
    #: A buffered signal this step took (marked consumed in the same transaction).
    consume_signal: int | None = None
    #: Added to the step's ``attempt``: -1 takes back the attempt its claim counted (the
    #: step did not run: a quota deferred it).
    attempt_delta: int = 0


@dataclass(frozen=True, slots=True)
class RetryFrom:
    """A retry that restarts a caught step rather than the one that failed the run (decided
    by the engine, see ``flowyard.engine.restart``; the store records it).

    - ``step_id``: the main-path step run again.
    - ``failed_step_id``: the step the run's error names; the retry is refused (Conflict)
      when the run failed elsewhere meanwhile.
    - ``discard``: the main-path steps after ``step_id`` (the error branch), deleted.
    """

    step_id: int
    failed_step_id: int
    discard: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StepCompletion:
    """A claimed step and what its execution changes."""

    step: StepRecord
    transition: Transition
