"""Schedules: their timetables, and the ticks workers fire (see
:mod:`flowyard.domain.schedules`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from flowyard.domain.auth import AuditEntry
from flowyard.domain.schedules import (
    Advance,
    ScheduleFire,
    ScheduleId,
    ScheduleRecord,
    ScheduleSpec,
    TickFire,
)


class ScheduleStore(Protocol):
    """Schedules managed through the service, fired by every worker's scheduler."""

    async def create_schedule(
        self, record: ScheduleRecord, *, audit: AuditEntry | None = None
    ) -> ScheduleRecord:
        """Store a new schedule (Conflict when its name is taken)."""
        ...

    async def update_schedule(
        self,
        schedule_id: ScheduleId,
        spec: ScheduleSpec,
        advance: Advance,
        now: datetime,
        *,
        audit: AuditEntry | None = None,
    ) -> ScheduleRecord:
        """Replace a schedule's spec and where its timetable stands (NotFound; Conflict when
        the new name is taken)."""
        ...

    async def get_schedule(self, ref: str) -> ScheduleRecord:
        """A schedule by id or name (NotFound)."""
        ...

    async def list_schedules(
        self,
        *,
        limit: int = 50,
        after: str | None = None,
        workflow_id: str | None = None,
    ) -> list[ScheduleRecord]:
        """Schedules by name, after a name cursor, optionally of one workflow."""
        ...

    async def delete_schedule(
        self, schedule_id: ScheduleId, *, audit: AuditEntry | None = None
    ) -> None:
        """Delete a schedule and its fired ticks; its runs keep its id (NotFound)."""
        ...

    async def due_schedules(
        self, now: datetime, *, until: datetime, limit: int = 100
    ) -> list[ScheduleRecord]:
        """Enabled schedules due by ``until``, soonest first: one indexed query (those due
        by ``now`` fire; the first later one says how long a scheduler may sleep)."""
        ...

    async def fire_schedule(
        self,
        schedule_id: ScheduleId,
        expected_tick: datetime | None,
        fires: Sequence[TickFire],
        advance: Advance | None,
        now: datetime,
    ) -> list[ScheduleFire] | None:
        """Record ``fires`` and start their runs in one transaction, then move the timetable
        to ``advance``. Each tick is inserted under the unique (schedule, tick) key first: a
        tick already recorded starts nothing. None when the schedule is gone, disabled, or
        its next tick is no longer ``expected_tick`` (another worker fired it, or it was
        changed); with ``expected_tick`` None (a manual trigger) the timetable is not
        checked or moved. Returns the ticks this call recorded."""
        ...

    async def list_schedule_fires(
        self, schedule_id: ScheduleId, *, limit: int = 50, before: datetime | None = None
    ) -> list[ScheduleFire]:
        """A schedule's recorded ticks, newest first, before a tick cursor."""
        ...

    async def prune_schedule_fires(self, before: datetime, *, limit: int = 10_000) -> int:
        """Forget up to ``limit`` ticks recorded before ``before`` (their runs stay); how many
        were deleted. The unique key only guards ticks at or after a schedule's next tick, so
        old ones are history."""
        ...
