"""Event triggers in the SQL store: the ``event_triggers`` rows (managed by editors,
audited), the run-end dispatcher's cursor over ``run_events``, debounced starts and throttle
windows (shared with hooks: a row's ``source`` names the trigger or hook)."""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import Conflict, NotFound
from flowyard.domain.events import EventType
from flowyard.domain.statuses import RunStatus
from flowyard.domain.triggers import (
    EndedRun,
    EventTriggerChange,
    EventTriggerRecord,
    NewEventTrigger,
    PendingStart,
    ThrottleVerdict,
    TriggerConfig,
    TriggerKind,
    new_trigger_id,
    trigger_source,
)
from flowyard.store.audit import note_target
from flowyard.store.base import SqlBase
from flowyard.store.schema import (
    event_triggers,
    run_events,
    runs,
    trigger_cursors,
    trigger_debounces,
    trigger_throttles,
    workflows,
)

#: The run-end event types and the status each says the run ended in.
_ENDED: dict[str, RunStatus] = {
    EventType.RUN_SUCCEEDED.value: RunStatus.SUCCEEDED,
    EventType.RUN_FAILED.value: RunStatus.FAILED,
    EventType.RUN_CANCELLED.value: RunStatus.CANCELLED,
    EventType.RUN_TIMED_OUT.value: RunStatus.TIMED_OUT,
}

_target = workflows.alias("target")
_source = workflows.alias("source")
_COLUMNS = (
    *event_triggers.c,
    _target.c.name.label("workflow_name"),
    _source.c.name.label("source_workflow_name"),
)


def _record(row: Row[Any]) -> EventTriggerRecord:
    return EventTriggerRecord(
        id=row.id,
        name=row.name,
        kind=TriggerKind(row.kind),
        workflow_id=row.workflow_id,
        workflow_name=row.workflow_name,
        source_workflow_id=row.source_workflow_id,
        source_workflow_name=row.source_workflow_name,
        event=row.event,
        enabled=row.enabled,
        config=TriggerConfig.model_validate(row.config),
        since_event_id=int(row.since_event_id),
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
    )


def _select() -> sa.Select[Any]:
    return (
        sa.select(*_COLUMNS)
        .join(_target, _target.c.id == event_triggers.c.workflow_id)
        .outerjoin(_source, _source.c.id == event_triggers.c.source_workflow_id)
    )


def _pending(row: Row[Any]) -> PendingStart:
    return PendingStart(
        id=int(row.id),
        source=row.source,
        key=row.key,
        workflow_id=row.workflow_id,
        input=row.input,
        actor=row.actor,
        fire_at=row.fire_at,
        burst=int(row.burst),
        version=int(row.version),
    )


def _ref(ref: str) -> sa.ColumnElement[bool]:
    return sa.or_(event_triggers.c.id == ref, event_triggers.c.name == ref)


class TriggerOps(SqlBase):
    """The ``event_triggers``, ``trigger_cursors``, ``trigger_debounces`` and
    ``trigger_throttles`` tables."""

    # -- event triggers (resources) ----------------------------------------------------------

    async def create_event_trigger(
        self, new: NewEventTrigger, now: datetime, *, audit: AuditEntry | None = None
    ) -> EventTriggerRecord:
        """Store a new event trigger (Conflict: its name is taken). A run-end trigger fires
        for runs ending after now: it remembers the newest event id."""
        trigger_id = new_trigger_id()

        async def fn(conn: AsyncConnection) -> EventTriggerRecord:
            note_target(audit, "event_trigger", new.name)
            since = await conn.scalar(sa.select(sa.func.max(run_events.c.id)))
            await conn.execute(
                event_triggers.insert().values(
                    id=trigger_id,
                    name=new.name,
                    kind=new.kind.value,
                    workflow_id=new.workflow_id,
                    source_workflow_id=new.source_workflow_id,
                    event=new.event,
                    enabled=new.enabled,
                    config=new.config.model_dump(mode="json"),
                    since_event_id=int(since or 0),
                    created_at=now,
                    updated_at=now,
                    created_by=new.created_by,
                )
            )
            query = _select().where(event_triggers.c.id == trigger_id)
            return _record((await conn.execute(query)).one())

        try:
            return await self._tx(fn, audit=audit)
        except IntegrityError:
            raise Conflict(f"an event trigger named {new.name!r} exists") from None

    async def get_event_trigger(self, ref: str) -> EventTriggerRecord:
        """An event trigger by id or name (NotFound)."""

        async def fn(conn: AsyncConnection) -> EventTriggerRecord:
            row = (await conn.execute(_select().where(_ref(ref)))).first()
            if row is None:
                raise NotFound(f"event trigger {ref!r} not found")
            return _record(row)

        return await self._tx(fn, write=False)

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

        async def fn(conn: AsyncConnection) -> list[EventTriggerRecord]:
            query = _select().order_by(event_triggers.c.name).limit(limit)
            if workflow_id is not None:
                query = query.where(event_triggers.c.workflow_id == workflow_id)
            if event is not None:
                query = query.where(event_triggers.c.event == event)
            if after is not None:
                query = query.where(event_triggers.c.name > after)
            return [_record(r) for r in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def update_event_trigger(
        self,
        ref: str,
        change: EventTriggerChange,
        now: datetime,
        *,
        audit: AuditEntry | None = None,
    ) -> EventTriggerRecord:
        """Enable, disable or reconfigure an event trigger (NotFound)."""
        values: dict[str, Any] = {"updated_at": now}
        if change.enabled is not None:
            values["enabled"] = change.enabled
        if change.config is not None:
            values["config"] = change.config.model_dump(mode="json")

        async def fn(conn: AsyncConnection) -> EventTriggerRecord:
            query = sa.select(event_triggers.c.id, event_triggers.c.name).where(_ref(ref))
            row = (await conn.execute(query.with_for_update())).first()
            if row is None:
                raise NotFound(f"event trigger {ref!r} not found")
            note_target(audit, "event_trigger", row.name)
            await conn.execute(
                event_triggers.update().where(event_triggers.c.id == row.id).values(**values)
            )
            return _record(
                (await conn.execute(_select().where(event_triggers.c.id == row.id))).one()
            )

        return await self._tx(fn, audit=audit)

    async def delete_event_trigger(self, ref: str, *, audit: AuditEntry | None = None) -> None:
        """Delete an event trigger, its pending debounced starts and throttle windows."""

        async def fn(conn: AsyncConnection) -> None:
            query = sa.select(event_triggers.c.id, event_triggers.c.name).where(_ref(ref))
            row = (await conn.execute(query)).first()
            if row is None:
                raise NotFound(f"event trigger {ref!r} not found")
            note_target(audit, "event_trigger", row.name)
            source = trigger_source(row.id)
            await conn.execute(
                trigger_debounces.delete().where(trigger_debounces.c.source == source)
            )
            await conn.execute(
                trigger_throttles.delete().where(trigger_throttles.c.source == source)
            )
            await conn.execute(event_triggers.delete().where(event_triggers.c.id == row.id))

        await self._tx(fn, audit=audit)

    async def triggers_for_event(self, event: str) -> list[EventTriggerRecord]:
        """The enabled triggers listening to the event ``event``, by name."""

        async def fn(conn: AsyncConnection) -> list[EventTriggerRecord]:
            query = (
                _select()
                .where(
                    event_triggers.c.event == event,
                    event_triggers.c.kind == TriggerKind.EVENT.value,
                    event_triggers.c.enabled,
                )
                .order_by(event_triggers.c.name)
            )
            return [_record(r) for r in await conn.execute(query)]

        return await self._tx(fn, write=False)

    # -- run ends --------------------------------------------------------------------------

    async def run_triggers(self) -> list[EventTriggerRecord]:
        """The enabled run-end triggers (usually none or a few: this is the dispatcher's one
        read when there is nothing to dispatch)."""

        async def fn(conn: AsyncConnection) -> list[EventTriggerRecord]:
            query = _select().where(
                event_triggers.c.kind == TriggerKind.RUN.value, event_triggers.c.enabled
            )
            return [_record(r) for r in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def ended_runs(
        self, *, after: int, upto: int, workflow_ids: Collection[str], limit: int = 200
    ) -> list[EndedRun]:
        """Run ends (``run.succeeded``, ``run.failed``, ``run.cancelled``,
        ``run.timed_out``) of runs of ``workflow_ids`` with ``after < event id <= upto``, in
        id order."""

        async def fn(conn: AsyncConnection) -> list[EndedRun]:
            query = (
                sa.select(
                    run_events.c.id,
                    run_events.c.type,
                    runs.c.id.label("run_id"),
                    runs.c.workflow_id,
                    runs.c.input,
                    runs.c.output,
                    runs.c.error,
                    runs.c.correlation_key,
                )
                .join(runs, runs.c.id == run_events.c.run_id)
                .where(
                    run_events.c.id > after,
                    run_events.c.id <= upto,
                    run_events.c.type.in_(list(_ENDED)),
                    runs.c.workflow_id.in_(list(workflow_ids)),
                )
                .order_by(run_events.c.id)
                .limit(limit)
            )
            return [
                EndedRun(
                    event_id=int(r.id),
                    run_id=r.run_id,
                    workflow_id=r.workflow_id,
                    status=_ENDED[r.type],
                    input=r.input,
                    output=r.output,
                    error=r.error,
                    correlation_key=r.correlation_key,
                )
                for r in await conn.execute(query)
            ]

        return await self._tx(fn, write=False)

    async def trigger_cursor(self, name: str) -> int:
        """A feed loop's position (0 before its first move)."""

        async def fn(conn: AsyncConnection) -> int:
            query = sa.select(trigger_cursors.c.position).where(trigger_cursors.c.name == name)
            return int(await conn.scalar(query) or 0)

        return await self._tx(fn, write=False)

    async def move_trigger_cursor(
        self, name: str, expected: int, position: int, now: datetime
    ) -> bool:
        """Move a loop's cursor from ``expected`` to ``position``; False when another loop
        moved it first (compare-and-set: the cursor never goes back)."""

        async def fn(conn: AsyncConnection) -> bool:
            moved = await conn.execute(
                trigger_cursors.update()
                .where(trigger_cursors.c.name == name, trigger_cursors.c.position == expected)
                .values(position=position, updated_at=now)
            )
            if moved.rowcount:
                return True
            if expected != 0:
                return False
            made = await conn.execute(
                self._insert_ignore(trigger_cursors).values(
                    name=name, position=position, updated_at=now
                )
            )
            return bool(made.rowcount)

        return await self._tx(fn)

    # -- debounce --------------------------------------------------------------------------

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

        async def fn(conn: AsyncConnection) -> PendingStart:
            where = (trigger_debounces.c.source == source) & (trigger_debounces.c.key == key)
            made = await conn.execute(
                self._insert_ignore(trigger_debounces).values(
                    source=source,
                    key=key,
                    workflow_id=workflow_id,
                    input=input,
                    actor=actor,
                    fire_at=fire_at,
                    burst=1,
                    version=1,
                    created_at=now,
                )
            )
            if not made.rowcount:
                claimed = trigger_debounces.c.claimed_until.is_not(None)
                await conn.execute(
                    trigger_debounces.update()
                    .where(where)
                    .values(
                        workflow_id=workflow_id,
                        input=input,
                        actor=actor,
                        fire_at=fire_at,
                        version=trigger_debounces.c.version + 1,
                        burst=sa.case(
                            (claimed, trigger_debounces.c.burst + 1),
                            else_=trigger_debounces.c.burst,
                        ),
                        claimed_until=None,
                    )
                )
            return _pending((await conn.execute(sa.select(trigger_debounces).where(where))).one())

        return await self._tx(fn)

    async def claim_debounced(
        self, now: datetime, lease_s: float, limit: int = 50
    ) -> list[PendingStart]:
        """Claim due pending starts for ``lease_s`` (another loop takes them once the lease
        has passed: a loop that died does not lose them)."""

        async def fn(conn: AsyncConnection) -> list[PendingStart]:
            due = (
                sa.select(trigger_debounces.c.id)
                .where(
                    trigger_debounces.c.fire_at <= now,
                    sa.or_(
                        trigger_debounces.c.claimed_until.is_(None),
                        trigger_debounces.c.claimed_until <= now,
                    ),
                )
                .order_by(trigger_debounces.c.fire_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            claimed = await conn.execute(
                trigger_debounces.update()
                .where(trigger_debounces.c.id.in_(due.scalar_subquery()))
                .values(claimed_until=now + timedelta(seconds=lease_s))
                .returning(*trigger_debounces.c)
            )
            return [_pending(r) for r in claimed]

        return await self._tx(fn)

    async def finish_debounced(self, pending: PendingStart) -> bool:
        """The run of ``pending`` started: forget it, unless an event came since (then the
        row waits for its own period; False)."""

        async def fn(conn: AsyncConnection) -> bool:
            gone = await conn.execute(
                trigger_debounces.delete().where(
                    trigger_debounces.c.id == pending.id,
                    trigger_debounces.c.version == pending.version,
                )
            )
            return bool(gone.rowcount)

        return await self._tx(fn)

    async def pending_debounced(self, source: str) -> list[PendingStart]:
        """The pending starts of one trigger or hook, by key."""

        async def fn(conn: AsyncConnection) -> list[PendingStart]:
            query = (
                sa.select(trigger_debounces)
                .where(trigger_debounces.c.source == source)
                .order_by(trigger_debounces.c.key)
            )
            return [_pending(r) for r in await conn.execute(query)]

        return await self._tx(fn, write=False)

    # -- throttle --------------------------------------------------------------------------

    async def throttle_take(
        self, source: str, key: str, limit: int, period_s: float, now: datetime
    ) -> ThrottleVerdict:
        """Take one of ``limit`` starts of (``source``, ``key``) in the current window (the
        windows are ``period_s`` long, aligned to the epoch); beyond, count a drop."""
        epoch = now.timestamp()
        begins = math.floor(epoch / period_s) * period_s
        window = datetime.fromtimestamp(begins, UTC)
        retry_after = max(0.0, begins + period_s - epoch)

        async def fn(conn: AsyncConnection) -> ThrottleVerdict:
            where = (trigger_throttles.c.source == source) & (trigger_throttles.c.key == key)
            await conn.execute(
                self._insert_ignore(trigger_throttles).values(
                    source=source, key=key, window_start=window, used=0, dropped=0
                )
            )
            row = (
                await conn.execute(sa.select(trigger_throttles).where(where).with_for_update())
            ).one()
            used, dropped = (row.used, row.dropped) if row.window_start >= window else (0, 0)
            allowed = used < limit
            used, dropped = (used + 1, dropped) if allowed else (used, dropped + 1)
            await conn.execute(
                trigger_throttles.update()
                .where(where)
                .values(window_start=window, used=used, dropped=dropped)
            )
            return ThrottleVerdict(allowed, retry_after, dropped)

        return await self._tx(fn)
