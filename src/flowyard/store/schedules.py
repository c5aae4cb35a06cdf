"""Schedules in the SQL store. A tick fires in one transaction: the schedule's row is locked
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL: a worker already firing it is left alone; SQLite
serialises writers with ``BEGIN IMMEDIATE``) and checked to still expect that tick, the tick
is inserted into ``schedule_fires`` under its unique (schedule, tick) key, its run is started
on the same connection (the store's start-run path), and the timetable moves on. A worker that
loses any of these races writes nothing. What to fire was decided before, by the pure
:mod:`flowyard.triggers.schedules.ticks`; this module records it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import Conflict, NotFound
from flowyard.domain.ids import RunId, WorkflowId
from flowyard.domain.schedules import (
    Advance,
    CatchUp,
    Overlap,
    ScheduleFire,
    ScheduleId,
    ScheduleRecord,
    ScheduleSpec,
    TickFire,
    TickOutcome,
)
from flowyard.store.audit import note_target
from flowyard.store.runs import RunOps
from flowyard.store.schema import schedule_fires, schedules

#: The due query's predicate, as the partial index ``ix_schedules_due`` states it (the same
#: text, so both planners pick the index).
DUE_SQL = "enabled"


def _spec(row: Row[Any]) -> ScheduleSpec:
    return ScheduleSpec(
        name=row.name,
        workflow_id=WorkflowId(row.workflow_id),
        cron=row.cron,
        every_s=row.every_s,
        timezone=row.timezone,
        anchor_at=row.anchor_at,
        input=row.input,
        catch_up=CatchUp(row.catch_up),
        max_catch_up=row.max_catch_up,
        jitter_s=row.jitter_s,
        overlap=Overlap(row.overlap),
        misfire_grace_s=row.misfire_grace_s,
        enabled=row.enabled,
    )


def schedule_record(row: Row[Any]) -> ScheduleRecord:
    """A schedule from its row."""
    return ScheduleRecord(
        id=ScheduleId(row.id),
        spec=_spec(row),
        next_tick_at=row.next_tick_at,
        next_fire_at=row.next_fire_at,
        last_tick_at=row.last_tick_at,
        last_run_id=RunId(row.last_run_id) if row.last_run_id else None,
        fired=row.fired,
        skipped=row.skipped,
        missed=row.missed,
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
    )


def _fire(row: Row[Any]) -> ScheduleFire:
    return ScheduleFire(
        schedule_id=ScheduleId(row.schedule_id),
        tick_at=row.tick_at,
        outcome=TickOutcome(row.outcome),
        run_id=RunId(row.run_id) if row.run_id else None,
        fired_at=row.fired_at,
        reason=row.reason,
        manual=row.manual,
    )


def _spec_values(spec: ScheduleSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "workflow_id": spec.workflow_id,
        "cron": spec.cron,
        "every_s": spec.every_s,
        "timezone": spec.timezone,
        "anchor_at": spec.anchor_at,
        "input": spec.input,
        "catch_up": spec.catch_up.value,
        "max_catch_up": spec.max_catch_up,
        "jitter_s": spec.jitter_s,
        "overlap": spec.overlap.value,
        "misfire_grace_s": spec.misfire_grace_s,
        "enabled": spec.enabled,
    }


class ScheduleOps(RunOps):
    """The ``schedules`` and ``schedule_fires`` tables. Changes through the service take
    their audit entry; the workers' fires take none."""

    async def create_schedule(
        self, record: ScheduleRecord, *, audit: AuditEntry | None = None
    ) -> ScheduleRecord:
        """Insert a schedule (Conflict when the name is taken)."""

        async def fn(conn: AsyncConnection) -> ScheduleRecord:
            note_target(audit, "schedule", record.id)
            row = (
                await conn.execute(
                    schedules.insert()
                    .values(
                        id=record.id,
                        **_spec_values(record.spec),
                        next_tick_at=record.next_tick_at,
                        next_fire_at=record.next_fire_at,
                        created_at=record.created_at,
                        updated_at=record.updated_at,
                        created_by=record.created_by,
                    )
                    .returning(*schedules.c)
                )
            ).one()
            return schedule_record(row)

        try:
            return await self._tx(fn, audit=audit)
        except IntegrityError as exc:
            raise Conflict(f"a schedule named {record.spec.name!r} already exists") from exc

    async def update_schedule(
        self,
        schedule_id: ScheduleId,
        spec: ScheduleSpec,
        advance: Advance,
        now: datetime,
        *,
        audit: AuditEntry | None = None,
    ) -> ScheduleRecord:
        """Replace the spec and the timetable's position."""

        async def fn(conn: AsyncConnection) -> ScheduleRecord:
            note_target(audit, "schedule", schedule_id)
            row = (
                await conn.execute(
                    schedules.update()
                    .where(schedules.c.id == schedule_id)
                    .values(
                        **_spec_values(spec),
                        next_tick_at=advance.next_tick_at,
                        next_fire_at=advance.next_fire_at,
                        updated_at=now,
                    )
                    .returning(*schedules.c)
                )
            ).first()
            if row is None:
                raise NotFound(f"schedule {schedule_id!r} not found")
            return schedule_record(row)

        try:
            return await self._tx(fn, audit=audit)
        except IntegrityError as exc:
            raise Conflict(f"a schedule named {spec.name!r} already exists") from exc

    async def get_schedule(self, ref: str) -> ScheduleRecord:
        """By id, else by name."""

        async def fn(conn: AsyncConnection) -> ScheduleRecord:
            row = (
                await conn.execute(
                    sa.select(schedules).where(
                        sa.or_(schedules.c.id == ref, schedules.c.name == ref)
                    )
                )
            ).first()
            if row is None:
                raise NotFound(f"schedule {ref!r} not found")
            return schedule_record(row)

        return await self._tx(fn, write=False)

    async def list_schedules(
        self,
        *,
        limit: int = 50,
        after: str | None = None,
        workflow_id: str | None = None,
    ) -> list[ScheduleRecord]:
        """By name, after a name cursor."""
        query = sa.select(schedules).order_by(schedules.c.name).limit(limit)
        if after is not None:
            query = query.where(schedules.c.name > after)
        if workflow_id is not None:
            query = query.where(schedules.c.workflow_id == workflow_id)

        async def fn(conn: AsyncConnection) -> list[ScheduleRecord]:
            return [schedule_record(row) for row in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def delete_schedule(
        self, schedule_id: ScheduleId, *, audit: AuditEntry | None = None
    ) -> None:
        """Delete the schedule and its fired ticks (SQLite's foreign keys may be off on an
        old connection, so the ticks are deleted explicitly, not only by cascade)."""

        async def fn(conn: AsyncConnection) -> None:
            note_target(audit, "schedule", schedule_id)
            await conn.execute(
                schedule_fires.delete().where(schedule_fires.c.schedule_id == schedule_id)
            )
            deleted = await conn.execute(schedules.delete().where(schedules.c.id == schedule_id))
            if deleted.rowcount == 0:
                raise NotFound(f"schedule {schedule_id!r} not found")

        await self._tx(fn, audit=audit)

    async def due_schedules(
        self, now: datetime, *, until: datetime, limit: int = 100
    ) -> list[ScheduleRecord]:
        """Enabled schedules with ``next_fire_at <= until``, soonest first (the partial
        index ``ix_schedules_due``)."""
        query = (
            sa.select(schedules)
            .where(sa.text(DUE_SQL), schedules.c.next_fire_at <= until)
            .order_by(schedules.c.next_fire_at)
            .limit(limit)
        )

        async def fn(conn: AsyncConnection) -> list[ScheduleRecord]:
            return [schedule_record(row) for row in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def fire_schedule(
        self,
        schedule_id: ScheduleId,
        expected_tick: datetime | None,
        fires: Sequence[TickFire],
        advance: Advance | None,
        now: datetime,
    ) -> list[ScheduleFire] | None:
        """Record the ticks, start their runs, move the timetable: one transaction."""

        async def fn(conn: AsyncConnection) -> list[ScheduleFire] | None:
            # A worker already firing this schedule holds the row: the others skip it. A
            # manual trigger waits for it instead (it has no tick to lose a race over).
            lock = sa.select(schedules).where(schedules.c.id == schedule_id)
            lock = lock.with_for_update(skip_locked=expected_tick is not None)
            row = (await conn.execute(lock)).first()
            if row is None:
                return None
            if expected_tick is not None and (not row.enabled or row.next_tick_at != expected_tick):
                return None
            recorded: list[ScheduleFire] = []
            for fire in fires:
                done = await self._record_tick(conn, schedule_id, fire, now)
                if done is not None:
                    recorded.append(done)
            values: dict[str, Any] = {
                "fired": schedules.c.fired
                + sum(1 for f in recorded if f.outcome == TickOutcome.FIRED),
                "skipped": schedules.c.skipped
                + sum(1 for f in recorded if f.outcome == TickOutcome.SKIPPED),
            }
            timetabled = [f for f in recorded if not f.manual]
            if timetabled:
                values["last_tick_at"] = max(f.tick_at for f in timetabled)
            started = [f.run_id for f in recorded if f.run_id is not None]
            if started:
                values["last_run_id"] = started[-1]
            if advance is not None:
                values["next_tick_at"] = advance.next_tick_at
                values["next_fire_at"] = advance.next_fire_at
                values["missed"] = schedules.c.missed + advance.missed
            await conn.execute(
                schedules.update().where(schedules.c.id == schedule_id).values(**values)
            )
            return recorded

        return await self._tx(fn)

    async def _record_tick(
        self, conn: AsyncConnection, schedule_id: ScheduleId, fire: TickFire, now: datetime
    ) -> ScheduleFire | None:
        """Insert the tick under its unique key, then start its run; None (nothing started)
        when the tick was recorded before."""
        outcome = TickOutcome.FIRED if fire.run is not None else TickOutcome.SKIPPED
        taken = (
            await conn.execute(
                self._insert_ignore(schedule_fires)
                .values(
                    schedule_id=schedule_id,
                    tick_at=fire.tick_at,
                    outcome=outcome.value,
                    run_id=None,
                    reason=fire.reason[:200] if fire.reason else None,
                    manual=fire.manual,
                    fired_at=now,
                )
                .returning(schedule_fires.c.tick_at)
            )
        ).first()
        if taken is None:
            return None
        run_id: RunId | None = None
        reason = fire.reason
        if fire.run is not None:
            this_tick = sa.and_(
                schedule_fires.c.schedule_id == schedule_id,
                schedule_fires.c.tick_at == fire.tick_at,
            )
            try:
                [(run, _)] = await self._insert_runs(conn, [fire.run], now)
            except Conflict as exc:
                # A unique correlation key an unfinished run holds (checked by a read before
                # any insert): the tick is skipped with the reason, the schedule moves on.
                outcome, reason = TickOutcome.SKIPPED, f"not started: {exc}"[:200]
                await conn.execute(
                    schedule_fires.update()
                    .where(this_tick)
                    .values(outcome=outcome.value, reason=reason)
                )
            else:
                run_id = run.id
                await conn.execute(schedule_fires.update().where(this_tick).values(run_id=run_id))
        return ScheduleFire(schedule_id, fire.tick_at, outcome, run_id, now, reason, fire.manual)

    async def list_schedule_fires(
        self, schedule_id: ScheduleId, *, limit: int = 50, before: datetime | None = None
    ) -> list[ScheduleFire]:
        """Newest first."""
        query = (
            sa.select(schedule_fires)
            .where(schedule_fires.c.schedule_id == schedule_id)
            .order_by(schedule_fires.c.tick_at.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(schedule_fires.c.tick_at < before)

        async def fn(conn: AsyncConnection) -> list[ScheduleFire]:
            return [_fire(row) for row in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def prune_schedule_fires(self, before: datetime, *, limit: int = 10_000) -> int:
        """Delete old ticks, at most ``limit`` per call (short transactions)."""

        async def fn(conn: AsyncConnection) -> int:
            oldest = (
                sa.select(schedule_fires.c.schedule_id, schedule_fires.c.tick_at)
                .where(schedule_fires.c.fired_at < before)
                .order_by(schedule_fires.c.fired_at)
                .limit(limit)
            )
            result = await conn.execute(
                schedule_fires.delete().where(
                    sa.tuple_(schedule_fires.c.schedule_id, schedule_fires.c.tick_at).in_(oldest)
                )
            )
            return int(result.rowcount)

        return await self._tx(fn)
