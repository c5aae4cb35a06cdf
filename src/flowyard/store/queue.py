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

from flowyard.domain.commands import StepCompletion
from flowyard.domain.errors import StoreRejected
from flowyard.domain.events import EventType
from flowyard.domain.ids import RunId, StepId
from flowyard.domain.records import StepRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store.base import SqlBase
from flowyard.store.claim import claim_by_lane, record_claims
from flowyard.store.completion import BatchCompletion
from flowyard.store.ports import Claimed, ClaimRequest, CompletionResult, RunState
from flowyard.store.rows import (
    CLAIMABLE,
    LEASED,
    chunks,
    event_row,
    step_record,
)
from flowyard.store.runstate import read_run_states
from flowyard.store.schema import (
    run_events,
    runs,
    steps,
)


class QueueOps(SqlBase):
    """Claim due steps, apply completions, extend/release leases, recover expired ones."""

    # -- queue -----------------------------------------------------------------------------

    async def claim_steps(
        self, worker_id: str, *, limit: int, now: datetime, lease_s: float
    ) -> list[StepRecord]:
        """Claim due steps: the highest priority first and, within a priority, the lanes in
        the order of their fair shares (decision 0032); from each lane one UPDATE over a
        locked, skip-locked sub-select, until ``limit`` are claimed."""

        async def fn(conn: AsyncConnection) -> list[StepRecord]:
            claimed = await claim_by_lane(
                conn, self._fair, worker_id, limit=limit, now=now, lease_s=lease_s
            )
            await record_claims(conn, claimed, worker_id, now)
            return claimed

        return await self._tx(fn)

    async def claim_work(self, request: ClaimRequest, now: datetime) -> Claimed:
        """:meth:`claim_steps` and :meth:`load_run_states` in one transaction: what a worker
        does before executing."""

        async def fn(conn: AsyncConnection) -> Claimed:
            claimed = await claim_by_lane(
                conn,
                self._fair,
                request.worker_id,
                limit=request.limit,
                now=now,
                lease_s=request.lease_s,
            )
            if not claimed:
                return Claimed()
            await record_claims(conn, claimed, request.worker_id, now)
            return Claimed(claimed, await read_run_states(conn, claimed, request.listening))

        return await self._tx(fn)

    async def load_run_states(
        self, claimed: Sequence[StepRecord], *, listening: Collection[str] = frozenset()
    ) -> dict[tuple[RunId, str], RunState]:
        """Runs and, per branch, the latest finished execution of each node visible from it
        (:func:`flowyard.store.runstate.read_run_states`)."""

        async def fn(conn: AsyncConnection) -> dict[tuple[RunId, str], RunState]:
            return await read_run_states(conn, claimed, listening)

        return await self._tx(fn, write=False)

    async def complete_steps(
        self,
        completions: Sequence[StepCompletion],
        now: datetime,
        *,
        chain: ClaimRequest | None = None,
    ) -> CompletionResult:
        """Record step results, schedule what follows and settle runs: one transaction, and a
        fixed number of statements however large the batch (the write lock is held briefly).
        With ``chain``, the same transaction claims the steps it made due in those runs
        (decision 0039)."""
        if not completions:
            return CompletionResult([])

        async def fn(conn: AsyncConnection) -> CompletionResult:
            return await BatchCompletion(self, conn, completions, now, chain=chain).apply()

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
