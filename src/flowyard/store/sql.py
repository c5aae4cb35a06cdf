"""The shared SQL store on SQLAlchemy Core; SQLite and PostgreSQL subclasses stay small."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flowyard.domain.errors import Conflict, NotFound, StoreUnavailable
from flowyard.domain.ids import EventId, RunId, StepId, WorkflowId, new_run_id, new_workflow_id
from flowyard.domain.records import (
    EventRecord,
    NewRun,
    RunRecord,
    StepRecord,
    VersionRecord,
    WorkflowRecord,
)
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store import migrate as migrations
from flowyard.store.ports import RunState, StepCompletion
from flowyard.store.schema import run_events, runs, steps, workflow_versions, workflows

T = TypeVar("T")
_log = logging.getLogger(__name__)

# Literal predicates (not bound parameters) so the planners can use the partial indexes.
_CLAIMABLE = sa.text("steps.status IN ('scheduled', 'retrying')")
_LEASED = sa.text("steps.status = 'running'")
_ACTIVE = ("scheduled", "retrying", "running")


def definition_checksum(definition: dict[str, Any]) -> str:
    """Stable hash of a definition (key order does not matter)."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _workflow(row: Row[Any]) -> WorkflowRecord:
    return WorkflowRecord(
        id=WorkflowId(row.id),
        name=row.name,
        latest_version=row.latest_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        archived=bool(row.archived),
        description=row.description,
    )


def _version(row: Row[Any]) -> VersionRecord:
    return VersionRecord(
        workflow_id=WorkflowId(row.workflow_id),
        version=row.version,
        definition=row.definition,
        checksum=row.checksum,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _run(row: Row[Any]) -> RunRecord:
    return RunRecord(
        id=RunId(row.id),
        workflow_id=WorkflowId(row.workflow_id),
        workflow_version=row.workflow_version,
        status=RunStatus(row.status),
        input=row.input,
        vars=row.vars or {},
        output=row.output,
        error=row.error,
        idempotency_key=row.idempotency_key,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        updated_at=row.updated_at,
        campaign_id=row.campaign_id,
        parent_run_id=RunId(row.parent_run_id) if row.parent_run_id else None,
        deadline_at=row.deadline_at,
    )


def _step(row: Row[Any]) -> StepRecord:
    return StepRecord(
        id=StepId(row.id),
        run_id=RunId(row.run_id),
        node_id=row.node_id,
        node_type=row.node_type,
        branch=row.branch,
        iteration=row.iteration,
        status=StepStatus(row.status),
        attempt=row.attempt,
        available_at=row.available_at,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        output=row.output,
        error=row.error,
        recoveries=row.recoveries,
        claims=row.claims,
    )


def _event(row: Row[Any]) -> EventRecord:
    return EventRecord(
        id=EventId(row.id),
        run_id=RunId(row.run_id),
        step_id=StepId(row.step_id) if row.step_id is not None else None,
        type=row.type,
        data=row.data or {},
        actor=row.actor,
        created_at=row.created_at,
    )


def _event_row(
    run_id: str,
    kind: str,
    data: dict[str, Any],
    now: datetime,
    *,
    step_id: int | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "step_id": step_id,
        "type": kind,
        "data": data,
        "actor": actor,
        "created_at": now,
    }


class SqlStore:
    """Store on SQLAlchemy Core. Subclasses provide engines, dialect inserts and error
    classification; everything else (the queue included) is one code path."""

    dialect = "sql"
    #: Attempts for a transaction that hit a transient database error (lock, deadlock).
    tx_attempts = 8

    def __init__(self, url: str, write_engine: AsyncEngine, read_engine: AsyncEngine | None = None):
        self.url = url
        self._write = write_engine
        self._read = read_engine or write_engine

    # -- plumbing --------------------------------------------------------------------------

    def _insert_ignore(self, table: sa.Table) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING for this dialect."""
        raise NotImplementedError

    def _is_transient(self, exc: DBAPIError) -> bool:
        """Errors worth retrying the whole transaction for (locks, deadlocks, restarts)."""
        return isinstance(exc, OperationalError)

    async def _tx(self, fn: Callable[[AsyncConnection], Awaitable[T]], *, write: bool = True) -> T:
        """Run ``fn`` in a transaction, retrying transient failures with jittered backoff."""
        engine = self._write if write else self._read
        delay = 0.01
        for attempt in range(1, self.tx_attempts + 1):
            try:
                async with engine.begin() as conn:
                    return await fn(conn)
            except DBAPIError as exc:
                if isinstance(exc, IntegrityError) or not self._is_transient(exc):
                    raise
                if attempt == self.tx_attempts:
                    raise StoreUnavailable(f"database unavailable: {exc.orig}") from exc
                _log.debug("transient database error (attempt %d): %s", attempt, exc.orig)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
            except OSError as exc:
                if attempt == self.tx_attempts:
                    raise StoreUnavailable(f"database unavailable: {exc}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    async def _lock_migrations(self, conn: AsyncConnection) -> None:
        """Take a database-wide lock before migrating, so workers starting together on a fresh
        database migrate one after the other (each dialect knows its lock)."""
        raise NotImplementedError

    async def migrate(self) -> None:
        """Upgrade the schema to head (Alembic), one process at a time."""
        async with self._write.connect() as conn:
            await self._lock_migrations(conn)
            await conn.run_sync(migrations.upgrade)
            await conn.commit()

    async def schema_is_current(self) -> bool:
        """True when the database is at the newest migration."""
        async with self._read.connect() as conn:
            return await conn.run_sync(migrations.is_current)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless a trivial query succeeds."""
        try:
            async with self._read.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (DBAPIError, OSError) as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    async def close(self) -> None:
        """Dispose of the engines."""
        await self._write.dispose()
        if self._read is not self._write:
            await self._read.dispose()

    # -- workflows -------------------------------------------------------------------------

    async def create_workflow(
        self, name: str, description: str | None, definition: dict[str, Any], actor: str | None
    ) -> tuple[WorkflowRecord, VersionRecord]:
        """Create a workflow with version 1."""
        now = _now()
        workflow_id = new_workflow_id()
        checksum = definition_checksum(definition)

        async def fn(conn: AsyncConnection) -> tuple[WorkflowRecord, VersionRecord]:
            existing = await conn.execute(sa.select(workflows.c.id).where(workflows.c.name == name))
            if existing.first() is not None:
                raise Conflict(f"a workflow named {name!r} already exists")
            await conn.execute(
                workflows.insert().values(
                    id=workflow_id,
                    name=name,
                    description=description,
                    latest_version=1,
                    archived=False,
                    created_at=now,
                    updated_at=now,
                )
            )
            await conn.execute(
                workflow_versions.insert().values(
                    workflow_id=workflow_id,
                    version=1,
                    definition=definition,
                    checksum=checksum,
                    created_at=now,
                    created_by=actor,
                )
            )
            wf = WorkflowRecord(WorkflowId(workflow_id), name, 1, now, now, False, description)
            return wf, VersionRecord(WorkflowId(workflow_id), 1, definition, checksum, now, actor)

        try:
            return await self._tx(fn)
        except IntegrityError as exc:
            raise Conflict(f"a workflow named {name!r} already exists") from exc

    async def add_version(
        self,
        workflow_id: WorkflowId,
        definition: dict[str, Any],
        actor: str | None,
        *,
        expected_latest: int | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Append a version unless it equals the latest one."""
        now = _now()
        checksum = definition_checksum(definition)

        async def fn(conn: AsyncConnection) -> tuple[VersionRecord, bool]:
            row = (
                await conn.execute(
                    sa.select(workflows).where(workflows.c.id == workflow_id).with_for_update()
                )
            ).first()
            if row is None:
                raise NotFound(f"workflow {workflow_id!r} not found")
            latest = row.latest_version
            if expected_latest is not None and expected_latest != latest:
                raise Conflict(
                    f"workflow {workflow_id!r} is at version {latest}, not {expected_latest}",
                    detail={"latest_version": latest},
                )
            current = (
                await conn.execute(
                    sa.select(workflow_versions).where(
                        workflow_versions.c.workflow_id == workflow_id,
                        workflow_versions.c.version == latest,
                    )
                )
            ).one()
            if current.checksum == checksum and not row.archived:
                return _version(current), False
            version = latest + 1
            await conn.execute(
                workflow_versions.insert().values(
                    workflow_id=workflow_id,
                    version=version,
                    definition=definition,
                    checksum=checksum,
                    created_at=now,
                    created_by=actor,
                )
            )
            await conn.execute(
                workflows.update()
                .where(workflows.c.id == workflow_id)
                .values(
                    latest_version=version,
                    updated_at=now,
                    archived=False,
                    description=definition.get("description"),
                )
            )
            return VersionRecord(workflow_id, version, definition, checksum, now, actor), True

        try:
            return await self._tx(fn)
        except IntegrityError as exc:
            raise Conflict(f"workflow {workflow_id!r} was changed concurrently; retry") from exc

    async def archive_workflow(self, workflow_id: WorkflowId) -> WorkflowRecord:
        """Archive a workflow: hidden from lists, no new runs; versions and runs are kept."""
        now = _now()

        async def fn(conn: AsyncConnection) -> WorkflowRecord:
            row = (
                await conn.execute(
                    workflows.update()
                    .where(workflows.c.id == workflow_id)
                    .values(archived=True, updated_at=now)
                    .returning(*workflows.c)
                )
            ).first()
            if row is None:
                raise NotFound(f"workflow {workflow_id!r} not found")
            return _workflow(row)

        return await self._tx(fn)

    async def get_workflow(self, ref: str) -> WorkflowRecord:
        """A workflow by id or by name (an id match wins: names may also start with "wf_")."""
        where = sa.or_(workflows.c.id == ref, workflows.c.name == ref)

        async def fn(conn: AsyncConnection) -> WorkflowRecord:
            rows = list(await conn.execute(sa.select(workflows).where(where)))
            if not rows:
                raise NotFound(f"workflow {ref!r} not found")
            return _workflow(next((row for row in rows if row.id == ref), rows[0]))

        return await self._tx(fn, write=False)

    async def list_workflows(
        self, *, limit: int = 50, after: str | None = None, include_archived: bool = False
    ) -> list[WorkflowRecord]:
        """Workflows ordered by name."""
        query = sa.select(workflows).order_by(workflows.c.name).limit(limit)
        if after is not None:
            query = query.where(workflows.c.name > after)
        if not include_archived:
            query = query.where(workflows.c.archived == sa.false())

        async def fn(conn: AsyncConnection) -> list[WorkflowRecord]:
            return [_workflow(row) for row in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def get_version(
        self, workflow_id: WorkflowId, version: int | None = None
    ) -> VersionRecord:
        """One version; the latest when ``version`` is None."""

        async def fn(conn: AsyncConnection) -> VersionRecord:
            query = sa.select(workflow_versions).where(
                workflow_versions.c.workflow_id == workflow_id
            )
            if version is None:
                query = query.order_by(workflow_versions.c.version.desc()).limit(1)
            else:
                query = query.where(workflow_versions.c.version == version)
            row = (await conn.execute(query)).first()
            if row is None:
                what = "any version" if version is None else f"version {version}"
                raise NotFound(f"workflow {workflow_id!r} has no {what}")
            return _version(row)

        return await self._tx(fn, write=False)

    async def list_versions(self, workflow_id: WorkflowId) -> list[VersionRecord]:
        """Every version, newest first."""

        async def fn(conn: AsyncConnection) -> list[VersionRecord]:
            rows = await conn.execute(
                sa.select(workflow_versions)
                .where(workflow_versions.c.workflow_id == workflow_id)
                .order_by(workflow_versions.c.version.desc())
            )
            return [_version(row) for row in rows]

        return await self._tx(fn, write=False)

    # -- runs ------------------------------------------------------------------------------

    async def start_runs(
        self, new_runs: Sequence[NewRun], now: datetime
    ) -> list[tuple[RunRecord, bool]]:
        """Create runs (idempotently by key) with their first step, in one transaction."""
        if now.tzinfo is not None:  # naive stays naive: the column type rejects it
            now = now.astimezone(UTC)  # the records returned are UTC, like those read back

        async def fn(conn: AsyncConnection) -> list[tuple[RunRecord, bool]]:
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
                    "created_at": now,
                    "started_at": None,
                    "finished_at": None,
                    "updated_at": now,
                }
                if key is not None:
                    seen_keys[key] = len(run_rows)
                run_rows.append(row)
                results.append((_run_from_dict(row), True))
            if run_rows:
                await conn.execute(runs.insert(), run_rows)
                step_rows = [
                    {
                        "run_id": row["id"],
                        "node_id": new.start_node,
                        "node_type": new.start_node_type,
                        "branch": "",
                        "iteration": 0,
                        "status": StepStatus.SCHEDULED.value,
                        "attempt": 0,
                        "priority": 0,
                        "available_at": now,
                        "claims": 0,
                        "recoveries": 0,
                        "created_at": now,
                    }
                    for row, new in zip(run_rows, _created(new_runs, results), strict=True)
                ]
                await conn.execute(steps.insert(), step_rows)
                await conn.execute(
                    run_events.insert(),
                    [
                        _event_row(
                            row["id"],
                            "run.created",
                            {"workflow_version": row["workflow_version"]},
                            now,
                            actor=new.actor,
                        )
                        for row, new in zip(run_rows, _created(new_runs, results), strict=True)
                    ],
                )
            final: list[tuple[RunRecord, bool]] = []
            for new, result in zip(new_runs, results, strict=True):
                if result is None:
                    assert new.idempotency_key is not None
                    first = run_rows[seen_keys[(new.workflow_id, new.idempotency_key)]]
                    result = (_run_from_dict(first), False)
                final.append(result)
            return final

        try:
            return await self._tx(fn)
        except IntegrityError:
            # A concurrent start with the same idempotency key won the race: the retry sees it.
            return await self._tx(fn)

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
            for chunk in _chunks(keys, 500):
                rows = await conn.execute(
                    sa.select(runs).where(
                        runs.c.workflow_id == workflow_id, runs.c.idempotency_key.in_(chunk)
                    )
                )
                for row in rows:
                    found[(row.workflow_id, row.idempotency_key)] = _run(row)
        return found

    async def get_run(self, run_id: str) -> RunRecord:
        """One run."""

        async def fn(conn: AsyncConnection) -> RunRecord:
            row = (await conn.execute(sa.select(runs).where(runs.c.id == run_id))).first()
            if row is None:
                raise NotFound(f"run {run_id!r} not found")
            return _run(row)

        return await self._tx(fn, write=False)

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow_id: WorkflowId | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[RunRecord]:
        """Runs newest first (ids are time-ordered)."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(runs.c.status == status.value)
        if workflow_id is not None:
            query = query.where(runs.c.workflow_id == workflow_id)
        if before is not None:
            query = query.where(runs.c.id < before)

        async def fn(conn: AsyncConnection) -> list[RunRecord]:
            return [_run(row) for row in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def list_steps(self, run_id: RunId) -> list[StepRecord]:
        """Steps of a run in creation order."""

        async def fn(conn: AsyncConnection) -> list[StepRecord]:
            rows = await conn.execute(
                sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.id)
            )
            return [_step(row) for row in rows]

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
            return [_event(row) for row in rows]

        return await self._tx(fn, write=False)

    # -- queue -----------------------------------------------------------------------------

    async def claim_steps(
        self, worker_id: str, *, limit: int, now: datetime, lease_s: float
    ) -> list[StepRecord]:
        """Claim due steps: one UPDATE over a locked, skip-locked sub-select."""
        due = (
            sa.select(steps.c.id)
            .where(_CLAIMABLE, steps.c.available_at <= now)
            .order_by(steps.c.available_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claim = (
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

        async def fn(conn: AsyncConnection) -> list[StepRecord]:
            claimed = [_step(row) for row in await conn.execute(claim)]
            if not claimed:
                return []
            await self._mark_runs_started(conn, {s.run_id for s in claimed}, now)
            await conn.execute(
                run_events.insert(),
                [
                    _event_row(
                        s.run_id,
                        "step.started",
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
        self, conn: AsyncConnection, run_ids: set[RunId], now: datetime
    ) -> None:
        # SKIP LOCKED: a run row locked by a completion is left alone (the completion marks it
        # running itself), so a claim never waits on a run lock and cannot deadlock.
        pending = (
            sa.select(runs.c.id)
            .where(runs.c.id.in_(sorted(run_ids)), runs.c.status == RunStatus.PENDING.value)
            .with_for_update(skip_locked=True)
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
                run_events.insert(), [_event_row(run_id, "run.started", {}, now) for run_id in ids]
            )

    async def load_run_states(self, run_ids: Sequence[RunId]) -> dict[RunId, RunState]:
        """Runs and the latest finished execution of each of their nodes."""

        async def fn(conn: AsyncConnection) -> dict[RunId, RunState]:
            states: dict[RunId, RunState] = {}
            for chunk in _chunks(sorted(set(run_ids)), 500):
                for row in await conn.execute(sa.select(runs).where(runs.c.id.in_(chunk))):
                    states[RunId(row.id)] = RunState(_run(row))
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
                    .where(steps.c.run_id.in_(chunk))
                    .order_by(steps.c.id)
                )
                for row in rows:
                    state = states.get(RunId(row.run_id))
                    if state is None:
                        continue
                    previous = state.iterations.get(row.node_id, -1)
                    state.iterations[row.node_id] = max(previous, row.iteration)
                    if row.status in (StepStatus.SUCCEEDED.value, StepStatus.FAILED.value):
                        state.steps[row.node_id] = {
                            "output": row.output,
                            "error": row.error,
                            "status": row.status,
                            "iteration": row.iteration,
                        }
            return states

        return await self._tx(fn, write=False)

    async def complete_steps(
        self, completions: Sequence[StepCompletion], now: datetime
    ) -> list[bool]:
        """Record step results, schedule what follows and settle runs: one transaction."""
        # Lock runs in one global order so concurrent batches cannot deadlock on them.
        order = sorted(range(len(completions)), key=lambda i: (completions[i].step.run_id, i))

        async def fn(conn: AsyncConnection) -> list[bool]:
            applied = [False] * len(completions)
            for index in order:
                applied[index] = await self._complete_one(conn, completions[index], now)
            return applied

        return await self._tx(fn)

    async def _complete_one(
        self, conn: AsyncConnection, completion: StepCompletion, now: datetime
    ) -> bool:
        step, tr = completion.step, completion.transition
        terminal = tr.step_status != StepStatus.RETRYING
        values: dict[str, Any] = {
            "status": tr.step_status.value,
            "output": tr.output,
            "error": tr.error.as_dict() if tr.error else None,
            "lease_owner": None,
            "lease_expires_at": None,
            "finished_at": now if terminal else None,
        }
        if tr.retry_at is not None:
            values["available_at"] = tr.retry_at
        updated = await conn.execute(
            steps.update()
            .where(steps.c.id == step.id, steps.c.claims == step.claims, _LEASED)
            .values(**values)
        )
        if updated.rowcount != 1:
            _log.info("discarding stale completion of step %s (lease lost)", step.id)
            return False
        run = (
            await conn.execute(
                sa.select(runs.c.status, runs.c.started_at)
                .where(runs.c.id == step.run_id)
                .with_for_update()
            )
        ).one()
        events = [_event_row(step.run_id, tr.event[0], tr.event[1], now, step_id=step.id)]
        events.extend(
            _event_row(step.run_id, kind, data, now, step_id=step.id)
            for kind, data in tr.extra_events
        )
        run_values: dict[str, Any] = {}
        if run.status == RunStatus.PENDING.value:
            # The claim skipped this run (row locked meanwhile): start it here, with its event.
            run_values.update(status=RunStatus.RUNNING.value, started_at=step.started_at or now)
            events.insert(0, _event_row(step.run_id, "run.started", {}, now))
        if RunStatus(run.status).is_terminal:
            # The run ended meanwhile (failed elsewhere, cancelled): record the step, go no further.
            await conn.execute(run_events.insert(), events)
            return True
        if tr.next_steps:
            await conn.execute(
                self._insert_ignore(steps),
                [
                    {
                        "run_id": step.run_id,
                        "node_id": n.node_id,
                        "node_type": n.node_type,
                        "branch": n.branch,
                        "iteration": n.iteration,
                        "status": StepStatus.SCHEDULED.value,
                        "attempt": 0,
                        "priority": 0,
                        "available_at": n.available_at,
                        "claims": 0,
                        "recoveries": 0,
                        "created_at": now,
                    }
                    for n in tr.next_steps
                ],
            )
        if tr.fail_run is not None:
            run_values.update(
                status=RunStatus.FAILED.value, error=tr.fail_run.as_dict(), finished_at=now
            )
            await conn.execute(
                steps.update()
                .where(steps.c.run_id == step.run_id, steps.c.status.in_(["scheduled", "retrying"]))
                .values(status=StepStatus.CANCELLED.value, finished_at=now)
            )
            events.append(
                _event_row(step.run_id, "run.failed", {"error": tr.fail_run.as_dict()}, now)
            )
        elif tr.path_ended:
            active = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(steps)
                    .where(steps.c.run_id == step.run_id, steps.c.status.in_(_ACTIVE))
                )
            ).scalar_one()
            if active == 0:
                run_values.update(
                    status=RunStatus.SUCCEEDED.value, output=tr.run_output, finished_at=now
                )
                events.append(_event_row(step.run_id, "run.succeeded", {}, now))
        if run_values:
            run_values["updated_at"] = now
            await conn.execute(runs.update().where(runs.c.id == step.run_id).values(**run_values))
        await conn.execute(run_events.insert(), events)
        return True

    async def extend_leases(
        self, worker_id: str, held: Sequence[StepRecord], *, now: datetime, lease_s: float
    ) -> int:
        """Heartbeat for steps still running here."""
        if not held:
            return 0

        async def fn(conn: AsyncConnection) -> int:
            total = 0
            for step in held:
                result = await conn.execute(
                    steps.update()
                    .where(
                        steps.c.id == step.id,
                        steps.c.claims == step.claims,
                        steps.c.lease_owner == worker_id,
                        _LEASED,
                    )
                    .values(lease_expires_at=now + timedelta(seconds=lease_s))
                )
                total += result.rowcount
            return total

        return await self._tx(fn)

    async def release_steps(self, worker_id: str, held: Sequence[StepRecord], now: datetime) -> int:
        """Put claimed steps back; the interrupted attempt is not counted."""
        if not held:
            return 0

        async def fn(conn: AsyncConnection) -> int:
            total = 0
            for step in held:
                result = await conn.execute(
                    steps.update()
                    .where(
                        steps.c.id == step.id,
                        steps.c.claims == step.claims,
                        steps.c.lease_owner == worker_id,
                        _LEASED,
                    )
                    .values(
                        status=StepStatus.SCHEDULED.value,
                        lease_owner=None,
                        lease_expires_at=None,
                        attempt=steps.c.attempt - 1,
                        available_at=now,
                    )
                )
                if result.rowcount:
                    total += 1
                    await conn.execute(
                        run_events.insert().values(
                            **_event_row(
                                step.run_id,
                                "step.released",
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
        expired = sa.and_(_LEASED, steps.c.lease_expires_at < now)

        async def fn(conn: AsyncConnection) -> tuple[int, list[StepRecord]]:
            poison = [
                _step(row)
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
                    )
                    .returning(steps.c.id, steps.c.run_id, steps.c.node_id, steps.c.lease_owner)
                )
            )
            if requeued:
                await conn.execute(
                    run_events.insert(),
                    [
                        _event_row(
                            row.run_id,
                            "step.recovered",
                            {"node_id": row.node_id, "reason": "lease expired"},
                            now,
                            step_id=row.id,
                        )
                        for row in requeued
                    ],
                )
            return len(requeued), poison

        return await self._tx(fn)

    async def queue_depth(self) -> dict[str, int]:
        """Step counts by status."""

        async def fn(conn: AsyncConnection) -> dict[str, int]:
            rows = await conn.execute(
                sa.select(steps.c.status, sa.func.count()).group_by(steps.c.status)
            )
            return {row[0]: int(row[1]) for row in rows}

        return await self._tx(fn, write=False)


def _now() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _created(
    new_runs: Sequence[NewRun], results: Sequence[tuple[RunRecord, bool] | None]
) -> list[NewRun]:
    return [
        new
        for new, result in zip(new_runs, results, strict=True)
        if result is not None and result[1]
    ]


def _run_from_dict(row: dict[str, Any]) -> RunRecord:
    return RunRecord(
        id=RunId(row["id"]),
        workflow_id=WorkflowId(row["workflow_id"]),
        workflow_version=row["workflow_version"],
        status=RunStatus(row["status"]),
        input=row["input"],
        vars=row["vars"] or {},
        output=None,
        error=None,
        idempotency_key=row["idempotency_key"],
        created_at=row["created_at"],
        started_at=None,
        finished_at=None,
        updated_at=row["updated_at"],
        campaign_id=row["campaign_id"],
        parent_run_id=row["parent_run_id"],
        deadline_at=row["deadline_at"],
    )
