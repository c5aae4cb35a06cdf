"""Signals in the SQL store: named messages to a run, buffered until a waiting step takes
one (decision 0010), and state-machine moves, recorded as the run's ``@action`` signals
(decision 0018)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.commands import signal_wait
from flowyard.domain.errors import Conflict
from flowyard.domain.events import EventType
from flowyard.domain.ids import RunId, StepId
from flowyard.domain.records import MoveFacts, MovePlan, SignalRecord
from flowyard.domain.statuses import StepStatus
from flowyard.store.base import SqlBase
from flowyard.store.rows import event_row, lock_run
from flowyard.store.schema import run_events, signals, steps


def signal_record(row: Any) -> SignalRecord:
    return SignalRecord(
        id=row.id,
        run_id=RunId(row.run_id),
        name=row.name,
        payload=row.payload,
        sent_by=row.sent_by,
        created_at=row.created_at,
        consumed_at=row.consumed_at,
        step_id=StepId(row.step_id) if row.step_id is not None else None,
    )


class SignalOps(SqlBase):
    """Signals, and state-machine moves recorded as signals."""

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
        """Deliver a signal: buffered until a step waiting for it takes it; wakes such a step
        at once. Returns the signal and whether a waiting step was woken. A finished run
        refuses it (Conflict)."""

        async def fn(conn: AsyncConnection) -> tuple[SignalRecord, bool]:
            status = (await lock_run(conn, run_id)).status
            if status.is_terminal:
                raise Conflict(f"run {run_id} has ended ({status.value}); it takes no signals")
            signal, woke = await _deliver(conn, run_id, name, payload, actor, now)
            event = {"name": name, "signal_id": signal.id, "buffered": not woke}
            await conn.execute(
                run_events.insert().values(
                    **event_row(run_id, EventType.SIGNAL_RECEIVED, event, now, actor=actor)
                )
            )
            return signal, woke

        return await self._tx(fn, audit=audit)

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
        """Decide and record a state-machine move in one transaction: lock the run, read its
        latest ``history`` moves (the signals called ``name``) and the state step waiting
        for one, let ``decide`` (pure; it raises to refuse) make the move, record it as the
        next such signal with its event, and wake the waiting step. Concurrent moves on one
        run are serialised by the lock: each is decided on the facts the previous left."""

        async def fn(conn: AsyncConnection) -> tuple[MoveFacts, SignalRecord]:
            run = await lock_run(conn, run_id)
            moves = await conn.execute(
                sa.select(signals)
                .where(signals.c.run_id == run_id, signals.c.name == name)
                .order_by(signals.c.id.desc())
                .limit(history)
            )
            waiting = await conn.scalar(
                sa.select(steps.c.node_id)
                .where(
                    steps.c.run_id == run_id,
                    steps.c.status == StepStatus.WAITING.value,
                    steps.c.waiting_for == signal_wait(name),
                    steps.c.branch == "",
                )
                .order_by(steps.c.id.desc())
                .limit(1)
            )
            facts = MoveFacts(run, [signal_record(m) for m in moves], waiting)
            move, (kind, data) = decide(facts)
            signal, _ = await _deliver(conn, run_id, name, move, actor, now)
            await conn.execute(
                run_events.insert().values(**event_row(run_id, kind, data, now, actor=actor))
            )
            return facts, signal

        return await self._tx(fn, audit=audit)

    async def list_signals(
        self,
        run_id: str,
        *,
        limit: int = 1000,
        after: int | None = None,
        name: str | None = None,
        exclude: str | None = None,
        buffered: bool | None = None,
    ) -> list[SignalRecord]:
        """Signals of a run, oldest first (after the id ``after``; only those called
        ``name``; not those called ``exclude``; with ``buffered`` only those no step took
        yet (True) or only taken ones (False))."""
        query = sa.select(signals).where(signals.c.run_id == run_id)
        if after is not None:
            query = query.where(signals.c.id > after)
        if name is not None:
            query = query.where(signals.c.name == name)
        if exclude is not None:
            query = query.where(signals.c.name != exclude)
        if buffered is not None:
            taken = signals.c.consumed_at.is_not(None)
            query = query.where(sa.not_(taken) if buffered else taken)

        async def fn(conn: AsyncConnection) -> list[SignalRecord]:
            rows = await conn.execute(query.order_by(signals.c.id).limit(limit))
            return [signal_record(row) for row in rows]

        return await self._tx(fn, write=False)

    async def recent_signals(
        self, run_id: str, name: str, *, limit: int = 1000
    ) -> list[SignalRecord]:
        """The run's latest ``limit`` signals called ``name``, newest first."""
        query = (
            sa.select(signals)
            .where(signals.c.run_id == run_id, signals.c.name == name)
            .order_by(signals.c.id.desc())
            .limit(limit)
        )

        async def fn(conn: AsyncConnection) -> list[SignalRecord]:
            return [signal_record(row) for row in await conn.execute(query)]

        return await self._tx(fn, write=False)


async def _deliver(
    conn: AsyncConnection, run_id: str, name: str, payload: Any, actor: str | None, now: datetime
) -> tuple[SignalRecord, bool]:
    """Insert the signal and wake the steps waiting for it (the caller locked the run)."""
    inserted = (
        await conn.execute(
            signals.insert()
            .values(run_id=run_id, name=name, payload=payload, sent_by=actor, created_at=now)
            .returning(*signals.c)
        )
    ).one()
    woken = await conn.execute(
        steps.update()
        .where(
            steps.c.run_id == run_id,
            steps.c.status == StepStatus.WAITING.value,
            steps.c.waiting_for == signal_wait(name),
        )
        .values(available_at=now)
        .returning(steps.c.id)
    )
    return signal_record(inserted), bool(woken.all())
