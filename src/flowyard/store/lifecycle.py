"""Run lifecycle in the SQL store: cancel, pause, resume, retry from the failed step, and run
deadlines. Each operation is one transaction that locks the run row first."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.commands import JOINED_WAITS, RetryFrom
from flowyard.domain.errors import Conflict
from flowyard.domain.events import EventType
from flowyard.domain.ids import RunId
from flowyard.domain.priorities import NO_LANE
from flowyard.domain.records import RunRecord
from flowyard.domain.statuses import BranchStatus, RunStatus, StepStatus
from flowyard.engine.settlement import resumed
from flowyard.store.base import SqlBase
from flowyard.store.correlation import check_unique_keys
from flowyard.store.forks import ForkWriter, cancel_steps_of, drop_fork
from flowyard.store.rows import ACTIVE, PENDING, event_row, lock_run, run_record
from flowyard.store.schema import branches, campaigns, run_events, runs, steps

#: Runs that may be cancelled / paused / retried.
_CANCELLABLE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PAUSED)
_PAUSABLE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)
_RETRYABLE = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED)


class LifecycleOps(SqlBase):
    """Operator actions on runs and the enforcement of run deadlines."""

    async def _lock_run(
        self,
        conn: AsyncConnection,
        run_id: str,
        allowed: Collection[RunStatus],
        refusal: str,
    ) -> RunRecord:
        """Lock the run row (every writer locks runs before steps) and check its status."""
        run = await lock_run(conn, run_id)
        if run.status not in allowed:
            raise Conflict(
                f"run {run_id} is {run.status.value}; {refusal}",
                detail={"status": run.status.value},
            )
        return run

    @staticmethod
    async def _record(
        conn: AsyncConnection,
        run_id: str,
        kind: str,
        data: dict[str, Any],
        now: datetime,
        actor: str | None,
    ) -> None:
        await conn.execute(
            run_events.insert().values(**event_row(run_id, kind, data, now, actor=actor))
        )

    async def _end_run(
        self,
        conn: AsyncConnection,
        run: RunRecord,
        status: RunStatus,
        now: datetime,
        *,
        event: str,
        data: dict[str, Any],
        actor: str | None,
        error: dict[str, Any] | None = None,
    ) -> None:
        # Running steps are cancelled too: their worker's completion is then discarded (the
        # step is no longer 'running'), and its next heartbeat tells it to stop the step.
        await conn.execute(
            steps.update()
            .where(steps.c.run_id == run.id, steps.c.status.in_(ACTIVE))
            .values(
                status=StepStatus.CANCELLED.value,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
                held=False,
            )
        )
        await conn.execute(
            runs.update()
            .where(runs.c.id == run.id)
            .values(
                status=status.value,
                finished_at=now,
                updated_at=now,
                error=error,
                error_type=error["type"] if error else None,
            )
        )
        await self._record(conn, run.id, event, data, now, actor)
        if run.parent_run_id is not None:  # a child run: its parent's step hears of it
            events: list[dict[str, Any]] = []
            flow = ForkWriter(self, conn, now, events)
            await flow.settle_children([run.id])
            await flow.flush()
            if events:
                await conn.execute(run_events.insert(), events)

    async def cancel_run(
        self,
        run_id: str,
        *,
        actor: str | None,
        reason: str | None,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> RunRecord:
        """Cancel an unfinished run: no new steps; running steps are asked to stop."""

        async def fn(conn: AsyncConnection) -> RunRecord:
            run = await self._lock_run(
                conn, run_id, _CANCELLABLE, "only unfinished runs can be cancelled"
            )
            await self._end_run(
                conn,
                run,
                RunStatus.CANCELLED,
                now,
                event=EventType.RUN_CANCELLED,
                data={"reason": reason, "from": run.status.value},
                actor=actor,
            )
            return await self._reload(conn, run_id)

        return await self._tx(fn, audit=audit)

    async def pause_run(
        self, run_id: str, *, actor: str | None, now: datetime, audit: AuditEntry | None = None
    ) -> RunRecord:
        """Pause a run: steps that are due or backing off are held (deadlines kept); a step
        already running finishes, and what it schedules is held too."""

        async def fn(conn: AsyncConnection) -> RunRecord:
            run = await self._lock_run(
                conn, run_id, _PAUSABLE, "only pending, running or waiting runs can be paused"
            )
            await conn.execute(
                steps.update()
                .where(steps.c.run_id == run.id, steps.c.status.in_(PENDING))
                .values(held=True)
            )
            await conn.execute(
                runs.update()
                .where(runs.c.id == run.id)
                .values(status=RunStatus.PAUSED.value, updated_at=now)
            )
            await self._record(
                conn, run.id, EventType.RUN_PAUSED, {"from": run.status.value}, now, actor
            )
            return await self._reload(conn, run_id)

        return await self._tx(fn, audit=audit)

    async def resume_run(
        self, run_id: str, *, actor: str | None, now: datetime, audit: AuditEntry | None = None
    ) -> RunRecord:
        """Resume a paused run; held steps become claimable at their own ``available_at``."""

        async def fn(conn: AsyncConnection) -> RunRecord:
            run = await self._lock_run(
                conn, run_id, (RunStatus.PAUSED,), "not paused, so it cannot be resumed"
            )
            await conn.execute(
                steps.update()
                .where(steps.c.run_id == run.id, steps.c.held == sa.true())
                .values(held=False)
            )
            busy = False
            if run.started_at is not None:
                found = await conn.execute(
                    sa.select(steps.c.id)
                    .where(
                        steps.c.run_id == run.id,
                        steps.c.status.in_(ACTIVE),
                        steps.c.status != StepStatus.WAITING.value,
                    )
                    .limit(1)
                )
                busy = found.first() is not None
            status = resumed(started=run.started_at is not None, busy=busy)
            await conn.execute(
                runs.update().where(runs.c.id == run.id).values(status=status.value, updated_at=now)
            )
            await self._record(
                conn, run.id, EventType.RUN_RESUMED, {"to": status.value}, now, actor
            )
            return await self._reload(conn, run_id)

        return await self._tx(fn, audit=audit)

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
        """Re-run a failed, timed-out or cancelled run from where it stopped: the step that
        failed it and the main-path steps cancelled with it start again (attempts reset,
        same idempotency keys); outputs of steps that succeeded are kept. A fork among them
        starts its branches afresh (the old ones and their child runs are dropped). With
        ``workflow_version`` the run moves to that version of its workflow. With
        ``restart`` (the engine's decision) the caught step it names starts again instead,
        and the error branch's steps it lists are deleted."""

        async def fn(conn: AsyncConnection) -> RunRecord:
            run = await self._lock_run(
                conn, run_id, _RETRYABLE, "only failed, timed-out or cancelled runs can be retried"
            )
            if run.correlation_unique:  # another run may have taken its key since it ended
                await check_unique_keys(conn, [_unique_key_of(run)])
            failed_step = (run.error or {}).get("details", {}).get("step_id")
            discarded: list[str] = []
            if restart is not None:
                if failed_step != restart.failed_step_id:
                    raise Conflict(f"run {run_id} changed while it was being retried; try again")
                discarded = await self._discard_steps(conn, run.id, restart.discard, now)
                failed_step = restart.step_id
            redo = sa.and_(
                steps.c.branch == "",
                sa.or_(
                    steps.c.status == StepStatus.CANCELLED.value,
                    sa.and_(steps.c.id == failed_step, steps.c.status == StepStatus.FAILED.value)
                    if failed_step is not None
                    else sa.false(),
                ),
            )
            forks = await conn.execute(
                sa.select(steps.c.id, steps.c.branch).where(
                    steps.c.run_id == run.id,
                    redo,
                    steps.c.waiting_for.in_(JOINED_WAITS),
                )
            )
            for fork in forks:
                await drop_fork(conn, run.id, fork.branch, fork.id, now)
            priority = await _current_priority(conn, run)
            rows = list(
                await conn.execute(
                    steps.update()
                    .where(steps.c.run_id == run.id, redo)
                    .values(
                        status=StepStatus.SCHEDULED.value,
                        priority=priority,
                        attempt=0,
                        recoveries=0,
                        available_at=now,
                        output=None,
                        error=None,
                        finished_at=None,
                        started_at=None,
                        lease_owner=None,
                        lease_expires_at=None,
                        held=False,
                        wait_until=None,
                        waiting_for=None,
                        wait_data=None,
                    )
                    .returning(steps.c.id, steps.c.node_id)
                )
            )
            if not rows:
                raise Conflict(
                    f"run {run_id} has no failed or cancelled step to run again "
                    "(it failed outside a step, e.g. a loop guard)"
                )
            await conn.execute(
                runs.update()
                .where(runs.c.id == run.id)
                .values(
                    status=RunStatus.RUNNING.value if run.started_at else RunStatus.PENDING.value,
                    error=None,
                    error_type=None,
                    output=None,
                    finished_at=None,
                    updated_at=now,
                    deadline_at=deadline_at,
                    workflow_version=workflow_version or run.workflow_version,
                    priority=priority,
                )
            )
            retried: dict[str, Any] = {
                "from": run.status.value,
                "steps": sorted(r.node_id for r in rows),
                "previous_error": run.error,
            }
            if discarded:
                retried["discarded"] = discarded
            if workflow_version is not None and workflow_version != run.workflow_version:
                retried["workflow_version"] = {"from": run.workflow_version, "to": workflow_version}
            await self._record(conn, run.id, EventType.RUN_RETRIED, retried, now, actor)
            return await self._reload(conn, run_id)

        return await self._tx(fn, audit=audit)

    @staticmethod
    async def _discard_steps(
        conn: AsyncConnection, run_id: str, step_ids: Collection[int], now: datetime
    ) -> list[str]:
        """Delete main-path steps a retry leaves behind (an error branch), with the branches
        and child runs of any fork among them; their node ids, in order."""
        if not step_ids:
            return []
        where = sa.and_(steps.c.run_id == run_id, steps.c.branch == "", steps.c.id.in_(step_ids))
        rows = list(
            await conn.execute(
                sa.select(steps.c.id, steps.c.node_id, steps.c.branch, steps.c.waiting_for)
                .where(where)
                .order_by(steps.c.id)
            )
        )
        for row in rows:
            if row.waiting_for in JOINED_WAITS:
                await drop_fork(conn, run_id, row.branch, row.id, now)
        await conn.execute(steps.delete().where(where))
        return [row.node_id for row in rows]

    async def expire_runs(self, *, now: datetime, limit: int = 500) -> list[RunId]:
        """Time out unfinished runs whose deadline passed (``run_timeout_s``)."""

        async def fn(conn: AsyncConnection) -> list[RunId]:
            due = (
                sa.select(runs)
                .where(
                    runs.c.deadline_at.is_not(None),
                    runs.c.deadline_at < now,
                    runs.c.status.in_([s.value for s in _CANCELLABLE]),
                )
                .order_by(runs.c.deadline_at)
                .limit(limit)
                .with_for_update(skip_locked=True, key_share=True)
            )
            expired: list[RunId] = []
            for row in await conn.execute(due):
                run = run_record(row)
                error = {
                    "type": "run.timeout",
                    "message": "the run exceeded its run_timeout_s",
                    "transient": False,
                    "details": {
                        "deadline_at": run.deadline_at.isoformat() if run.deadline_at else None
                    },
                }
                await self._end_run(
                    conn,
                    run,
                    RunStatus.TIMED_OUT,
                    now,
                    event=EventType.RUN_TIMED_OUT,
                    data={"error": error},
                    actor=None,
                    error=error,
                )
                expired.append(run.id)
            return expired

        return await self._tx(fn)

    @staticmethod
    async def _reload(conn: AsyncConnection, run_id: str) -> RunRecord:
        return run_record((await conn.execute(sa.select(runs).where(runs.c.id == run_id))).one())

    async def cancel_orphans(self, now: datetime, *, limit: int = 500) -> list[RunId]:
        """Child runs still active whose parent run has ended or whose branch was cancelled:
        cancel them (with their steps). Returns their ids (callers repeat until empty:
        children of cancelled children come next)."""
        parent = runs.alias("parent")
        active = [s.value for s in RunStatus if not s.is_terminal]
        orphan = (
            sa.select(runs.c.id)
            .join(parent, parent.c.id == runs.c.parent_run_id)
            .where(
                runs.c.status.in_(active),
                sa.or_(
                    parent.c.status.in_([s.value for s in RunStatus if s.is_terminal]),
                    sa.exists().where(
                        branches.c.child_run_id == runs.c.id,
                        branches.c.status == BranchStatus.CANCELLED.value,
                    ),
                ),
            )
            .order_by(runs.c.id)
            .limit(limit)
        )

        async def fn(conn: AsyncConnection) -> list[RunId]:
            ids = [RunId(r) for r in (await conn.execute(orphan)).scalars().all()]
            if not ids:
                return []
            locked = (
                (
                    await conn.execute(
                        sa.select(runs.c.id)
                        .where(runs.c.id.in_(ids), runs.c.status.in_(active))
                        .order_by(runs.c.id)
                        .with_for_update(key_share=True)
                    )
                )
                .scalars()
                .all()
            )
            if not locked:
                return []
            await conn.execute(
                runs.update()
                .where(runs.c.id.in_(locked))
                .values(
                    status=RunStatus.CANCELLED.value,
                    finished_at=now,
                    updated_at=now,
                    error=None,
                )
            )
            await conn.execute(cancel_steps_of(locked, now))
            await conn.execute(
                run_events.insert(),
                [
                    event_row(r, EventType.RUN_CANCELLED, {"reason": "the parent run ended"}, now)
                    for r in locked
                ],
            )
            return [RunId(r) for r in locked]

        return await self._tx(fn)


async def _current_priority(conn: AsyncConnection, run: RunRecord) -> int:
    """The priority a retried run's steps take: its campaign's as it is now (the campaign's
    priority may have changed since the run ended), else the run's own."""
    if run.lane == NO_LANE:
        return run.priority
    found = await conn.scalar(sa.select(campaigns.c.priority).where(campaigns.c.id == run.lane))
    return run.priority if found is None else int(found)


def _unique_key_of(run: RunRecord) -> dict[str, Any]:
    """The run's unique correlation key, as :func:`check_unique_keys` reads it."""
    return {
        "workflow_id": run.workflow_id,
        "correlation_key": run.correlation_key,
        "correlation_unique": True,
    }
