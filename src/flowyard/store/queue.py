"""The queue half of the SQL store: claiming, completing, leases and recovery."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.commands import JOINED_WAITS, StepCompletion, waited_signal
from flowyard.domain.errors import StoreRejected
from flowyard.domain.events import EventType
from flowyard.domain.ids import RunId, StepId
from flowyard.domain.records import SignalRecord, StepRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store.base import SqlBase
from flowyard.store.completion import BatchCompletion
from flowyard.store.forks import ancestors, load_branch_results
from flowyard.store.ports import CompletionResult, RunState
from flowyard.store.rows import (
    CLAIMABLE,
    LEASED,
    chunks,
    event_row,
    run_record,
    step_record,
)
from flowyard.store.schema import branches, run_events, runs, signals, steps
from flowyard.store.signals import signal_record

_FINISHED = (StepStatus.SUCCEEDED.value, StepStatus.FAILED.value)


class QueueOps(SqlBase):
    """Claim due steps, apply completions, extend/release leases, recover expired ones."""

    # -- queue -----------------------------------------------------------------------------

    async def claim_steps(
        self, worker_id: str, *, limit: int, now: datetime, lease_s: float
    ) -> list[StepRecord]:
        """Claim due steps: one UPDATE over a locked, skip-locked sub-select."""
        claim = claim_statement(worker_id, limit=limit, now=now, lease_s=lease_s)

        async def fn(conn: AsyncConnection) -> list[StepRecord]:
            claimed = [step_record(row) for row in await conn.execute(claim)]
            if not claimed:
                return []
            await self._mark_runs_started(
                conn,
                {s.run_id for s in claimed},
                {s.run_id for s in claimed if s.waiting_for is not None},
                now,
            )
            await conn.execute(
                run_events.insert(),
                [
                    event_row(
                        s.run_id,
                        EventType.STEP_STARTED,
                        {"node_id": s.node_id, "attempt": s.attempt, "worker": worker_id},
                        now,
                        step_id=s.id,
                    )
                    for s in claimed
                ],
            )
            return claimed

        return await self._tx(fn)

    async def _mark_runs_started(
        self, conn: AsyncConnection, run_ids: set[RunId], woken: set[RunId], now: datetime
    ) -> None:
        """Pending runs start (with their event); waiting runs whose step woke run again."""
        # SKIP LOCKED: a run row locked by a completion is left alone (the completion marks it
        # running itself), so a claim never waits on a run lock and cannot deadlock.
        pending = (
            sa.select(runs.c.id)
            .where(runs.c.id.in_(sorted(run_ids)), runs.c.status == RunStatus.PENDING.value)
            .with_for_update(skip_locked=True, key_share=True)
        )
        started = await conn.execute(
            runs.update()
            .where(runs.c.id.in_(pending.scalar_subquery()))
            .values(status=RunStatus.RUNNING.value, started_at=now, updated_at=now)
            .returning(runs.c.id)
        )
        ids = [row.id for row in started]
        if ids:
            await conn.execute(
                run_events.insert(),
                [event_row(run_id, EventType.RUN_STARTED, {}, now) for run_id in ids],
            )
        if woken:
            waiting = (
                sa.select(runs.c.id)
                .where(runs.c.id.in_(sorted(woken)), runs.c.status == RunStatus.WAITING.value)
                .with_for_update(skip_locked=True, key_share=True)
            )
            await conn.execute(
                runs.update()
                .where(runs.c.id.in_(waiting.scalar_subquery()))
                .values(status=RunStatus.RUNNING.value, updated_at=now)
            )

    async def load_run_states(
        self, claimed: Sequence[StepRecord], *, listening: Collection[str] = frozenset()
    ) -> dict[tuple[RunId, str], RunState]:
        """Runs and, per branch, the latest finished execution of each node visible from it.

        A fixed number of queries per 500 runs: runs, their steps on the branches in view,
        and only when needed the map items, buffered signals (for steps of the node types
        ``listening`` names, and steps that wait for a signal) and fork results (for woken
        fork steps)."""
        wanted: dict[RunId, set[str]] = {}
        for step in claimed:
            wanted.setdefault(step.run_id, set()).add(step.branch)
        woken = [s.id for s in claimed if s.waiting_for in JOINED_WAITS]
        listening = {
            s.run_id
            for s in claimed
            if s.node_type in listening or waited_signal(s.waiting_for) is not None
        }

        async def fn(conn: AsyncConnection) -> dict[tuple[RunId, str], RunState]:
            states: dict[tuple[RunId, str], RunState] = {}
            for chunk in chunks(sorted(wanted), 500):
                found = {
                    RunId(row.id): run_record(row)
                    for row in await conn.execute(sa.select(runs).where(runs.c.id.in_(chunk)))
                }
                pending = await _pending_signals(conn, [r for r in found if r in listening])
                for run_id, run in found.items():
                    for branch in wanted[run_id]:
                        states[(run_id, branch)] = RunState(
                            run, branch=branch, signals=pending.get(run_id, [])
                        )
                await _load_steps(conn, [s for k, s in states.items() if k[0] in found])
            if woken:
                results = await load_branch_results(conn, woken)
                for step in claimed:
                    state = states.get((step.run_id, step.branch))
                    if state is not None and step.id in results:
                        state.children[step.id] = results[step.id]
            return states

        return await self._tx(fn, write=False)

    async def complete_steps(
        self, completions: Sequence[StepCompletion], now: datetime
    ) -> CompletionResult:
        """Record step results, schedule what follows and settle runs: one transaction, and a
        fixed number of statements however large the batch (the write lock is held briefly)."""
        if not completions:
            return CompletionResult([])

        async def fn(conn: AsyncConnection) -> CompletionResult:
            return await BatchCompletion(self, conn, completions, now).apply()

        try:
            return await self._tx(fn)
        except (DataError, IntegrityError, StatementError) as exc:
            if isinstance(exc, OperationalError | InterfaceError):
                raise
            # Not a connection problem: the data of a result cannot be stored as it is. The
            # message names the kinds of error only: the database's or the encoder's text may
            # quote the value (huge or secret), and str() of it may itself fail.
            cause = exc.orig
            kinds = exc.__class__.__name__ + (f" ({cause.__class__.__name__})" if cause else "")
            raise StoreRejected(f"the database refused the batch: {kinds}") from exc

    async def extend_leases(
        self, worker_id: str, held: Sequence[StepRecord], *, now: datetime, lease_s: float
    ) -> set[StepId]:
        """Heartbeat: extend the leases of steps still held; returns their ids. A step missing
        from the answer was lost (cancelled, or recovered by another worker): stop it."""
        if not held:
            return set()
        claims = {step.id: step.claims for step in held}

        async def fn(conn: AsyncConnection) -> set[StepId]:
            kept: set[StepId] = set()
            for chunk in chunks(sorted(claims), 500):
                rows = await conn.execute(
                    steps.update()
                    .where(steps.c.id.in_(chunk), steps.c.lease_owner == worker_id, LEASED)
                    .values(lease_expires_at=now + timedelta(seconds=lease_s))
                    .returning(steps.c.id, steps.c.claims)
                )
                kept.update(StepId(r.id) for r in rows if claims.get(StepId(r.id)) == r.claims)
            return kept

        return await self._tx(fn)

    async def release_steps(self, worker_id: str, held: Sequence[StepRecord], now: datetime) -> int:
        """Put claimed steps back; the interrupted attempt is not counted."""
        if not held:
            return 0

        async def fn(conn: AsyncConnection) -> int:
            total = 0
            paused = await self._lock_runs_paused(conn, {step.run_id for step in held})
            for step in held:
                result = await conn.execute(
                    steps.update()
                    .where(
                        steps.c.id == step.id,
                        steps.c.claims == step.claims,
                        steps.c.lease_owner == worker_id,
                        LEASED,
                    )
                    .values(
                        status=StepStatus.SCHEDULED.value,
                        lease_owner=None,
                        lease_expires_at=None,
                        attempt=steps.c.attempt - 1,
                        available_at=now,
                        held=step.run_id in paused,  # a paused run keeps it until resumed
                    )
                )
                if result.rowcount:
                    total += 1
                    await conn.execute(
                        run_events.insert().values(
                            **event_row(
                                step.run_id,
                                EventType.STEP_RELEASED,
                                {"node_id": step.node_id, "worker": worker_id},
                                now,
                                step_id=step.id,
                            )
                        )
                    )
            return total

        return await self._tx(fn)

    async def recover_expired(
        self, worker_id: str, *, now: datetime, max_recoveries: int, lease_s: float
    ) -> tuple[int, list[StepRecord]]:
        """Requeue expired leases; hand poison steps (too many recoveries) to the caller."""
        expired = sa.and_(LEASED, steps.c.lease_expires_at < now)

        async def fn(conn: AsyncConnection) -> tuple[int, list[StepRecord]]:
            run_ids = await conn.execute(sa.select(steps.c.run_id).where(expired).distinct())
            paused = await self._lock_runs_paused(conn, {row.run_id for row in run_ids})
            poison = [
                step_record(row)
                for row in await conn.execute(
                    steps.update()
                    .where(expired, steps.c.recoveries >= max_recoveries)
                    .values(
                        lease_owner=worker_id,
                        lease_expires_at=now + timedelta(seconds=lease_s),
                        claims=steps.c.claims + 1,
                    )
                    .returning(*steps.c)
                )
            ]
            requeued = list(
                await conn.execute(
                    steps.update()
                    .where(expired)
                    .values(
                        status=StepStatus.SCHEDULED.value,
                        lease_owner=None,
                        lease_expires_at=None,
                        available_at=now,
                        recoveries=steps.c.recoveries + 1,
                        # A step of a paused run is requeued held: it waits for the resume.
                        held=steps.c.run_id.in_(sorted(paused)),
                    )
                    .returning(steps.c.id, steps.c.run_id, steps.c.node_id, steps.c.lease_owner)
                )
            )
            if requeued:
                await conn.execute(
                    run_events.insert(),
                    [
                        event_row(
                            row.run_id,
                            EventType.STEP_RECOVERED,
                            {"node_id": row.node_id, "reason": "lease expired"},
                            now,
                            step_id=row.id,
                        )
                        for row in requeued
                    ],
                )
            return len(requeued), poison

        return await self._tx(fn)

    @staticmethod
    async def _lock_runs_paused(conn: AsyncConnection, run_ids: set[str]) -> set[str]:
        """Lock the runs (in id order, like every writer: run rows before step rows) and
        return those that are paused: a step put back in the queue for them must be held."""
        paused: set[str] = set()
        for chunk in chunks(sorted(run_ids), 500):
            rows = await conn.execute(
                sa.select(runs.c.id, runs.c.status)
                .where(runs.c.id.in_(chunk))
                .order_by(runs.c.id)
                .with_for_update(key_share=True)
            )
            paused.update(row.id for row in rows if row.status == RunStatus.PAUSED.value)
        return paused

    async def queue_depth(self) -> dict[str, int]:
        """Step counts by status."""

        async def fn(conn: AsyncConnection) -> dict[str, int]:
            rows = await conn.execute(
                sa.select(steps.c.status, sa.func.count()).group_by(steps.c.status)
            )
            return {row[0]: int(row[1]) for row in rows}

        return await self._tx(fn, write=False)

    async def due_backlog(self, now: datetime) -> tuple[float | None, int | None]:
        """Age of the oldest step due and not claimed (the claim's own index), and lock
        waits (PostgreSQL)."""

        async def fn(conn: AsyncConnection) -> tuple[float | None, int | None]:
            oldest = await conn.scalar(
                sa.select(sa.func.min(steps.c.available_at)).where(
                    CLAIMABLE, steps.c.available_at <= now
                )
            )
            age = None if oldest is None else max((now - oldest).total_seconds(), 0.0)
            return age, await self._lock_waits(conn)

        return await self._tx(fn, write=False)

    async def _lock_waits(self, conn: AsyncConnection) -> int | None:
        """Sessions waiting for a lock now; None when the dialect cannot tell."""
        return None


def claim_statement(worker_id: str, *, limit: int, now: datetime, lease_s: float) -> sa.Update:
    """The claim: one UPDATE of up to ``limit`` due steps, picked by a sub-select that locks
    them and skips rows another worker has locked (quoted in docs/architecture.md)."""
    due = (
        sa.select(steps.c.id)
        .where(CLAIMABLE, steps.c.available_at <= now)
        .order_by(steps.c.available_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (
        steps.update()
        .where(steps.c.id.in_(due.scalar_subquery()))
        .values(
            status=StepStatus.RUNNING.value,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_s),
            attempt=steps.c.attempt + 1,
            claims=steps.c.claims + 1,
            started_at=now,
        )
        .returning(*steps.c)
    )


async def _pending_signals(
    conn: AsyncConnection, run_ids: Sequence[RunId]
) -> dict[RunId, list[SignalRecord]]:
    pending: dict[RunId, list[SignalRecord]] = {}
    if not run_ids:
        return pending
    rows = await conn.execute(
        sa.select(signals)
        .where(signals.c.run_id.in_(run_ids), signals.c.consumed_at.is_(None))
        .order_by(signals.c.id)
    )
    for row in rows:
        pending.setdefault(RunId(row.run_id), []).append(signal_record(row))
    return pending


async def _load_steps(conn: AsyncConnection, states: Sequence[RunState]) -> None:
    """Fill each state with the finished steps of its branch and the enclosing ones, and
    the item of its innermost map branch. One query for all the runs: branch keys below
    the main path hold a step id, so each names one run only."""
    visible: dict[tuple[str, str], list[RunState]] = {}
    for state in states:
        for key in ancestors(state.branch):
            visible.setdefault((state.run.id, key), []).append(state)
    if not visible:
        return
    run_ids = sorted({run_id for run_id, _ in visible})
    keys = sorted({key for _, key in visible})
    rows = await conn.execute(
        sa.select(
            steps.c.run_id,
            steps.c.node_id,
            steps.c.iteration,
            steps.c.status,
            steps.c.output,
            steps.c.error,
            steps.c.branch,
        )
        .where(steps.c.run_id.in_(run_ids), steps.c.branch.in_(keys))
        .order_by(steps.c.id)
    )
    for row in rows:
        for state in visible.get((row.run_id, row.branch), ()):
            previous = state.iterations.get(row.node_id, -1)
            state.iterations[row.node_id] = max(previous, row.iteration)
            if row.status in _FINISHED:
                state.steps[row.node_id] = {
                    "output": row.output,
                    "error": row.error,
                    "status": row.status,
                    "iteration": row.iteration,
                }
    inner = [k for k in keys if k]
    if not inner:
        return
    items = {
        (row.run_id, row.key): row
        for row in await conn.execute(
            sa.select(branches.c.run_id, branches.c.key, branches.c.idx, branches.c.item).where(
                branches.c.run_id.in_(run_ids), branches.c.key.in_(inner), branches.c.kind == "map"
            )
        )
    }
    for state in states:
        for key in reversed(ancestors(state.branch)):  # the innermost map branch wins
            item = items.get((state.run.id, key))
            if item is not None:
                state.item, state.index = item.item, item.idx
                break
