"""Where a retried run starts again (pure): the step that failed it, or, when it failed in a
``fail`` node reached through a ``catch`` route, the step whose error was caught.

A ``fail`` node fails by definition: running it again can never succeed. What failed is the
call whose error was caught and routed to the error branch that ends in it. So a retry
restarts that call (same row: same attempt counter reset, same idempotency key) and
discards the error branch's steps, as if the call had not failed yet. The same step is the
*cause* shown to people (``flowyard run --wait``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowyard.domain.ids import StepId
from flowyard.domain.records import StepRecord
from flowyard.domain.statuses import StepStatus

#: The node type whose failure is the definition's own decision, never a cause.
FAIL_NODE_TYPE = "fail"
_FAILED = (StepStatus.FAILED,)


@dataclass(frozen=True, slots=True)
class RetryStart:
    """Where a retried run starts again.

    - ``step``: the main-path step to run again (the run's failing step, or the caught one).
    - ``failed_step``: the step the run's error names (the store checks it is still so).
    - ``discard``: main-path steps after ``step`` (the error branch), deleted by the retry.
    """

    step: StepRecord
    failed_step: StepId
    discard: tuple[StepId, ...] = ()

    @property
    def caught(self) -> bool:
        """True when the retry restarts a caught step rather than the failing one."""
        return self.step.id != self.failed_step


def failing_step_id(run_error: Mapping[str, Any] | None) -> int | None:
    """The id of the step that failed the run, as recorded in the run's error."""
    details = (run_error or {}).get("details") or {}
    step_id = details.get("step_id") if isinstance(details, Mapping) else None
    return step_id if isinstance(step_id, int) else None


def retry_start(
    run_error: Mapping[str, Any] | None, steps: Sequence[StepRecord]
) -> RetryStart | None:
    """Where a retry of a run that ended with ``run_error`` starts, given its ``steps``
    (None when the run did not fail in a main-path step: a cancelled or timed-out run, a
    loop guard, a failed branch; the store then restarts the cancelled steps only)."""
    failed_id = failing_step_id(run_error)
    main = sorted((s for s in steps if not s.branch), key=lambda s: s.id)
    failed = next((s for s in main if s.id == failed_id), None)
    if failed is None:
        return None
    if failed.node_type != FAIL_NODE_TYPE:
        return RetryStart(failed, failed.id)
    # The main path runs one step at a time, so the steps before the fail node, newest
    # first, lead back to the call whose error was caught: a failed step that did not fail
    # the run.
    caught = next(
        (s for s in reversed(main) if s.id < failed.id and s.status in _FAILED and s.error),
        None,
    )
    if caught is None:
        return RetryStart(failed, failed.id)
    discard = tuple(s.id for s in main if s.id > caught.id)
    return RetryStart(caught, failed.id, discard)


def failure_cause(
    run_error: Mapping[str, Any] | None, steps: Sequence[StepRecord]
) -> StepRecord | None:
    """The step whose error explains a failed run: the caught call behind a ``fail`` node,
    else the failing step itself (None when no step failed it)."""
    start = retry_start(run_error, steps)
    return start.step if start is not None else None
