"""Run and step statuses.

The status *type* drives logic; display names belong to the presentation layers.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Lifecycle of a run."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        """True once the run can no longer change by itself."""
        return self in TERMINAL_RUN_STATUSES


TERMINAL_RUN_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT}
)


class StepStatus(StrEnum):
    """Lifecycle of a step (one execution of one node in a run)."""

    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    #: Parked until ``wait_until`` (a timer) or a wake-up (a signal, an action, finished
    #: branches or a child run); claimable again once ``available_at`` passes.
    WAITING = "waiting"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True once the step will not execute again."""
        return self in TERMINAL_STEP_STATUSES


#: Steps a worker may claim once ``available_at`` has passed.
CLAIMABLE_STEP_STATUSES = frozenset({StepStatus.SCHEDULED, StepStatus.RETRYING, StepStatus.WAITING})
#: Steps that still keep their run alive.
ACTIVE_STEP_STATUSES = CLAIMABLE_STEP_STATUSES | {StepStatus.RUNNING}
TERMINAL_STEP_STATUSES = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.CANCELLED})


class BranchStatus(StrEnum):
    """Lifecycle of one branch of a fork (a parallel branch, a map item or a child run)."""

    #: Not started yet (``max_concurrency``): the join starts it when a slot frees.
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Its fork was done without it (join ``any``/``n_of``, a failure, a retry of the run).
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        """True while the branch may still run."""
        return self in OPEN_BRANCH_STATUSES


OPEN_BRANCH_STATUSES = frozenset({BranchStatus.PENDING, BranchStatus.RUNNING})
