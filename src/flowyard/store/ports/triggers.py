"""Event triggers, the run-end dispatcher's cursor, debounced starts and throttle windows."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, Protocol

from flowyard.domain.auth import AuditEntry
from flowyard.domain.triggers import (
    EndedRun,
    EventTriggerChange,
    EventTriggerRecord,
    NewEventTrigger,
    PendingStart,
    ThrottleVerdict,
)


class TriggerStore(Protocol):
    """Event triggers managed by editors (audited writes), read by the event intake and the
    run-end dispatcher; the pending starts of debounced triggers and hooks, and their
    throttle windows."""

    async def create_event_trigger(
        self, new: NewEventTrigger, now: datetime, *, audit: AuditEntry | None = None
    ) -> EventTriggerRecord:
        """Store a new event trigger (Conflict: its name is taken). A run-end trigger fires
        for runs ending after now: it remembers the newest event id."""
        ...

    async def get_event_trigger(self, ref: str) -> EventTriggerRecord:
        """An event trigger by id or name (NotFound)."""
        ...

    async def list_event_triggers(
        self,
        *,
        workflow_id: str | None = None,
        event: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[EventTriggerRecord]:
        """Event triggers by name after a name cursor; of one target workflow, or listening
        to one event name."""
        ...

    async def update_event_trigger(
        self,
        ref: str,
        change: EventTriggerChange,
        now: datetime,
        *,
        audit: AuditEntry | None = None,
    ) -> EventTriggerRecord:
        """Enable, disable or reconfigure an event trigger (NotFound)."""
        ...

    async def delete_event_trigger(self, ref: str, *, audit: AuditEntry | None = None) -> None:
        """Delete an event trigger, its pending debounced starts and throttle windows."""
        ...

    async def triggers_for_event(self, event: str) -> list[EventTriggerRecord]:
        """The enabled triggers listening to the event ``event``, by name."""
        ...

    async def run_triggers(self) -> list[EventTriggerRecord]:
        """The enabled run-end triggers (usually none or a few: this is the dispatcher's one
        read when there is nothing to dispatch)."""
        ...

    async def ended_runs(
        self, *, after: int, upto: int, workflow_ids: Collection[str], limit: int = 200
    ) -> list[EndedRun]:
        """Run ends (``run.succeeded``, ``run.failed``, ``run.cancelled``,
        ``run.timed_out``) of runs of ``workflow_ids`` with ``after < event id <= upto``, in
        id order."""
        ...

    async def trigger_cursor(self, name: str) -> int:
        """A feed loop's position (0 before its first move)."""
        ...

    async def move_trigger_cursor(
        self, name: str, expected: int, position: int, now: datetime
    ) -> bool:
        """Move a loop's cursor from ``expected`` to ``position``; False when another loop
        moved it first (compare-and-set: the cursor never goes back)."""
        ...

    async def debounce_start(
        self,
        source: str,
        key: str,
        workflow_id: str,
        input: Any,
        actor: str | None,
        fire_at: datetime,
        now: datetime,
    ) -> PendingStart:
        """Note an event of a burst: the pending start of (``source``, ``key``) takes this
        input and fires at ``fire_at``. An event arriving while the start is being made
        begins a new burst (``burst + 1``): that start goes ahead, and this input starts
        another run when its own period has passed."""
        ...

    async def claim_debounced(
        self, now: datetime, lease_s: float, limit: int = 50
    ) -> list[PendingStart]:
        """Claim due pending starts for ``lease_s`` (another loop takes them once the lease
        has passed: a loop that died does not lose them)."""
        ...

    async def finish_debounced(self, pending: PendingStart) -> bool:
        """The run of ``pending`` started: forget it, unless an event came since (then the
        row waits for its own period; False)."""
        ...

    async def pending_debounced(self, source: str) -> list[PendingStart]:
        """The pending starts of one trigger or hook, by key."""
        ...

    async def throttle_take(
        self, source: str, key: str, limit: int, period_s: float, now: datetime
    ) -> ThrottleVerdict:
        """Take one of ``limit`` starts of (``source``, ``key``) in the current window (the
        windows are ``period_s`` long, aligned to the epoch); beyond, count a drop."""
        ...
