"""Commands the engine hands to the store: what one step completion changes.

They live in the domain so the store (below the engine) can apply them without importing
engine code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowyard.domain.errors import ErrorInfo
from flowyard.domain.statuses import StepStatus


@dataclass(frozen=True, slots=True)
class NextStep:
    """A step to schedule: node, iteration (loops) and when it becomes due."""

    node_id: str
    node_type: str
    iteration: int
    available_at: datetime
    branch: str = ""


@dataclass(frozen=True, slots=True)
class Transition:
    """Everything one step completion changes, applied by the store in one transaction.

    - ``step_status``: SUCCEEDED, FAILED or RETRYING (then ``retry_at`` is set).
    - ``next_steps``: steps to schedule.
    - ``path_ended``: this path has nowhere to go; the run succeeds with ``run_output`` when no
      other step of it is still active.
    - ``fail_run``: the run fails with this error (its other pending steps are cancelled).
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
