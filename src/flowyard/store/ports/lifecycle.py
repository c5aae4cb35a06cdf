"""What people do to runs: operator actions, signals and state-machine moves. Each is one
transaction that locks the run row first."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from flowyard.domain.auth import AuditEntry
from flowyard.domain.commands import RetryFrom
from flowyard.domain.records import (
    MoveFacts,
    MovePlan,
    RunRecord,
    SignalRecord,
)


class LifecycleStore(Protocol):
    """Cancel, pause, resume, retry; deliver signals; record state-machine moves."""

    async def record_action(
        self,
        run_id: str,
        name: str,
        decide: Callable[[MoveFacts], MovePlan],
        *,
        actor: str,
        now: datetime,
        history: int = 1000,
        audit: AuditEntry | None = None,
    ) -> tuple[MoveFacts, SignalRecord]:
        """Decide and record a state-machine move in one transaction: under the run's lock,
        ``decide`` (pure; raises to refuse) gets the run, its latest ``history`` moves (the
        signals called ``name``, newest first) and the state step waiting for one; its
        move is recorded as the next such signal, with its event, and wakes that step.
        NotFound for an unknown run. Returns the facts decided on and the recorded move."""
        ...

    async def send_signal(
        self,
        run_id: str,
        name: str,
        payload: Any,
        *,
        actor: str | None,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> tuple[SignalRecord, bool]:
        """Deliver a signal (buffered until taken); True when it woke a waiting step.
        NotFound for an unknown run, Conflict for a finished one."""
        ...

    async def cancel_run(
        self,
        run_id: str,
        *,
        actor: str | None,
        reason: str | None,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> RunRecord:
        """Cancel an unfinished run (Conflict otherwise); running steps are cancelled too."""
        ...

    async def pause_run(
        self, run_id: str, *, actor: str | None, now: datetime, audit: AuditEntry | None = None
    ) -> RunRecord:
        """Pause: hold due and backing-off steps (deadlines kept) (Conflict if not active)."""
        ...

    async def resume_run(
        self, run_id: str, *, actor: str | None, now: datetime, audit: AuditEntry | None = None
    ) -> RunRecord:
        """Resume a paused run (Conflict otherwise)."""
        ...

    async def retry_run(
        self,
        run_id: str,
        *,
        actor: str | None,
        now: datetime,
        deadline_at: datetime | None = None,
        workflow_version: int | None = None,
        restart: RetryFrom | None = None,
        audit: AuditEntry | None = None,
    ) -> RunRecord:
        """Restart a failed/timed-out/cancelled run from its failed and cancelled steps,
        keeping succeeded outputs (Conflict if not retryable or nothing to re-run); on
        ``workflow_version`` when given; from ``restart``'s caught step when given."""
        ...
