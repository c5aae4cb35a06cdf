"""Runs, their steps and their history (events) in the SQL store: bulk start and reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import NotFound
from flowyard.domain.events import EventType
from flowyard.domain.ids import RunId, WorkflowId, new_run_id
from flowyard.domain.records import (
    EventRecord,
    NewRun,
    RunRecord,
    StepRecord,
)
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store.audit import note_target
from flowyard.store.base import SqlBase
from flowyard.store.correlation import check_unique_keys
from flowyard.store.ports import EventListener
from flowyard.store.rows import (
    chunks,
    created_only,
    event_record,
    event_row,
    new_step_row,
    run_from_dict,
    run_record,
    step_record,
)
from flowyard.store.schema import UNFINISHED_STATUSES, run_events, runs, steps, workflows


def _created_data(row: dict[str, Any]) -> dict[str, Any]:
    """What ``run.created`` records: the version, and the schedule that started the run."""
    data: dict[str, Any] = {"workflow_version": row["workflow_version"]}
    if row["schedule_id"] is not None:
        data["schedule_id"] = row["schedule_id"]
    return data


class RunOps(SqlBase):
    """Start runs (in bulk, idempotently) and read runs, steps and events."""

    async def start_runs(
        self, new_runs: Sequence[NewRun], now: datetime, *, audit: AuditEntry | None = None
    ) -> list[tuple[RunRecord, bool]]:
        """Create runs (idempotently by key) with their first step, in one transaction."""
        if now.tzinfo is not None:  # naive stays naive: the column type rejects it
            now = now.astimezone(UTC)  # the records returned are UTC, like those read back

        async def fn(conn: AsyncConnection) -> list[tuple[RunRecord, bool]]:
            final = await self._insert_runs(conn, new_runs, now)
            await self._after_bulk_start(conn, len(new_runs))
            if len(final) == 1:
                note_target(audit, "run", final[0][0].id)
            return final

        try:
            return await self._tx(fn, audit=audit)
        except IntegrityError:
            # A concurrent start with the same idempotency key (or unique correlation key)
            # won the race: the retry sees it.
            return await self._tx(fn, audit=audit)

    async def _insert_runs(
        self, conn: AsyncConnection, new_runs: Sequence[NewRun], now: datetime
    ) -> list[tuple[RunRecord, bool]]:
        """Insert runs, their first steps and ``run.created`` events on ``conn`` (the
        caller's transaction: a scheduled tick starts its run in the one that records it)."""
        wanted = sorted({n.workflow_id for n in new_runs})
        found = set(
            (await conn.execute(sa.select(workflows.c.id).where(workflows.c.id.in_(wanted))))
            .scalars()
            .all()
        )
        if missing := [w for w in wanted if w not in found]:
            raise NotFound(f"workflow {missing[0]!r} not found")
        existing = await self._existing_by_key(conn, new_runs)
        results: list[tuple[RunRecord, bool] | None] = []
        run_rows: list[dict[str, Any]] = []
        seen_keys: dict[tuple[str, str], int] = {}
        for new in new_runs:
            key = (new.workflow_id, new.idempotency_key) if new.idempotency_key else None
            if key is not None and key in existing:
                results.append((existing[key], False))
                continue
            if key is not None and key in seen_keys:
                results.append(None)  # same key twice in one batch: resolved below
                continue
            run_id = new_run_id()
            row = {
                "id": run_id,
                "workflow_id": new.workflow_id,
                "workflow_version": new.workflow_version,
                "status": RunStatus.PENDING.value,
                "input": new.input,
                "vars": new.vars,
                "output": None,
                "error": None,
                "idempotency_key": new.idempotency_key,
                "campaign_id": new.campaign_id,
                "parent_run_id": new.parent_run_id,
                "deadline_at": new.deadline_at,
                "correlation_key": new.correlation_key,
                "correlation_unique": new.correlation_unique and bool(new.correlation_key),
                "schedule_id": new.schedule_id,
                "priority": new.priority,
                "lane": new.lane,
                "created_at": now,
                "started_at": None,
                "finished_at": None,
                "updated_at": now,
            }
            if key is not None:
                seen_keys[key] = len(run_rows)
            run_rows.append(row)
            results.append((run_from_dict(row), True))
        await check_unique_keys(conn, run_rows)
        if run_rows:
            await conn.execute(runs.insert(), run_rows)
            step_rows = [
                new_step_row(
                    row["id"],
                    new.start_node,
                    new.start_node_type,
                    now,
                    priority=new.priority,
                    lane=new.lane,
                )
                for row, new in zip(run_rows, created_only(new_runs, results), strict=True)
            ]
            await conn.execute(steps.insert(), step_rows)
            await conn.execute(
                run_events.insert(),
                [
                    event_row(
                        row["id"],
                        EventType.RUN_CREATED,
                        _created_data(row),
                        now,
                        actor=new.actor,
                    )
                    for row, new in zip(run_rows, created_only(new_runs, results), strict=True)
                ],
            )
        final: list[tuple[RunRecord, bool]] = []
        for new, result in zip(new_runs, results, strict=True):
            if result is None:
                assert new.idempotency_key is not None
                first = run_rows[seen_keys[(new.workflow_id, new.idempotency_key)]]
                result = (run_from_dict(first), False)
            final.append(result)
        return final

    async def _existing_by_key(
        self, conn: AsyncConnection, new_runs: Sequence[NewRun]
    ) -> dict[tuple[str, str], RunRecord]:
        keyed = [(n.workflow_id, n.idempotency_key) for n in new_runs if n.idempotency_key]
        if not keyed:
            return {}
        found: dict[tuple[str, str], RunRecord] = {}
        by_workflow: dict[str, list[str]] = {}
        for wf_id, key in keyed:
            assert key is not None
            by_workflow.setdefault(wf_id, []).append(key)
        for workflow_id, keys in by_workflow.items():
            for chunk in chunks(keys, 500):
                rows = await conn.execute(
                    sa.select(runs).where(
                        runs.c.workflow_id == workflow_id, runs.c.idempotency_key.in_(chunk)
                    )
                )
                for row in rows:
                    found[(row.workflow_id, row.idempotency_key)] = run_record(row)
        return found

    async def get_run(self, run_id: str) -> RunRecord:
        """One run."""

        async def fn(conn: AsyncConnection) -> RunRecord:
            row = (await conn.execute(sa.select(runs).where(runs.c.id == run_id))).first()
            if row is None:
                raise NotFound(f"run {run_id!r} not found")
            return run_record(row)

        return await self._tx(fn, write=False)

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow_id: WorkflowId | None = None,
        limit: int = 50,
        before: str | None = None,
        error_type: str | None = None,
        correlation_key: str | None = None,
        parent_run_id: str | None = None,
        schedule_id: str | None = None,
        campaign_id: str | None = None,
    ) -> list[RunRecord]:
        """Runs newest first (ids are time-ordered)."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if schedule_id is not None:
            query = query.where(runs.c.schedule_id == schedule_id)
        if campaign_id is not None:
            query = query.where(runs.c.campaign_id == campaign_id)
        if status is not None:
            query = query.where(runs.c.status == status.value)
        if workflow_id is not None:
            query = query.where(runs.c.workflow_id == workflow_id)
        if correlation_key is not None:
            query = query.where(runs.c.correlation_key == correlation_key)
        if parent_run_id is not None:
            query = query.where(runs.c.parent_run_id == parent_run_id)
        if before is not None:
            query = query.where(runs.c.id < before)
        if error_type is not None:
            # A trailing '*' matches a prefix ('http.*' finds every HTTP failure). substr, not
            # LIKE: LIKE is case-insensitive on SQLite and treats '_' and '%' as wildcards.
            if error_type.endswith("*"):
                prefix = error_type[:-1]
                query = query.where(sa.func.substr(runs.c.error_type, 1, len(prefix)) == prefix)
            else:
                query = query.where(runs.c.error_type == error_type)

        async def fn(conn: AsyncConnection) -> list[RunRecord]:
            return [run_record(row) for row in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def unfinished_runs_by_key(
        self, workflow_id: WorkflowId, correlation_key: str, *, limit: int = 10
    ) -> list[RunRecord]:
        """The workflow's unfinished runs holding ``correlation_key``, oldest first."""
        query = (
            sa.select(runs)
            .where(
                runs.c.correlation_key == correlation_key,
                runs.c.workflow_id == workflow_id,
                runs.c.status.in_(UNFINISHED_STATUSES),
            )
            .order_by(runs.c.id)
            .limit(limit)
        )

        async def fn(conn: AsyncConnection) -> list[RunRecord]:
            return [run_record(row) for row in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def list_steps(
        self,
        run_id: RunId,
        *,
        limit: int | None = None,
        after: int | None = None,
        status: StepStatus | None = None,
        node_id: str | None = None,
    ) -> list[StepRecord]:
        """Steps of a run in creation order (every one without ``limit``), after a step-id
        cursor, optionally in one status or of one node."""
        query = sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.id).limit(limit)
        if after is not None:
            query = query.where(steps.c.id > after)
        if status is not None:
            query = query.where(steps.c.status == status.value)
        if node_id is not None:
            query = query.where(steps.c.node_id == node_id)

        async def fn(conn: AsyncConnection) -> list[StepRecord]:
            return [step_record(row) for row in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def list_events(
        self, run_id: RunId, *, after: int = 0, limit: int = 1000
    ) -> list[EventRecord]:
        """Events of a run in commit order after the ``after`` cursor."""

        async def fn(conn: AsyncConnection) -> list[EventRecord]:
            rows = await conn.execute(
                sa.select(run_events)
                .where(run_events.c.run_id == run_id, run_events.c.id > after)
                .order_by(run_events.c.id)
                .limit(limit)
            )
            return [event_record(row) for row in rows]

        return await self._tx(fn, write=False)

    async def read_events(
        self,
        *,
        after: int,
        upto: int,
        run_id: RunId | None = None,
        workflow_id: WorkflowId | None = None,
        status: RunStatus | None = None,
        limit: int = 500,
    ) -> list[EventRecord]:
        """Events with ``after < id <= upto`` in id order, of one run, of one workflow's runs
        and/or of runs currently in ``status`` (the streams' read)."""

        async def fn(conn: AsyncConnection) -> list[EventRecord]:
            query = sa.select(run_events).where(run_events.c.id > after, run_events.c.id <= upto)
            if run_id is not None:
                query = query.where(run_events.c.run_id == run_id)
            if workflow_id is not None or status is not None:
                query = query.join(runs, runs.c.id == run_events.c.run_id)
                if workflow_id is not None:
                    query = query.where(runs.c.workflow_id == workflow_id)
                if status is not None:
                    query = query.where(runs.c.status == status.value)
            rows = await conn.execute(query.order_by(run_events.c.id).limit(limit))
            return [event_record(row) for row in rows]

        return await self._tx(fn, write=False)

    async def event_horizon(self) -> int | None:
        """The highest event id below which every event is committed or never will be.

        SQLite serialises writers (``BEGIN IMMEDIATE``), so ids commit in order and the
        horizon is the largest committed id. PostgreSQL overrides this."""

        async def fn(conn: AsyncConnection) -> int:
            value = await conn.scalar(sa.select(sa.func.max(run_events.c.id)))
            return int(value or 0)

        return await self._tx(fn, write=False)

    async def listen_for_events(self, wake: Callable[[], None]) -> EventListener | None:
        """SQLite cannot notify another process: streams poll (None). PostgreSQL overrides
        this."""
        return None
