"""The SQL store on SQLAlchemy Core: one code path for SQLite and PostgreSQL; the dialect
subclasses stay small."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.clock import utc_now
from flowyard.domain.errors import Conflict, NotFound, PreconditionFailed
from flowyard.domain.events import EventType
from flowyard.domain.ids import RunId, WorkflowId, new_run_id, new_workflow_id
from flowyard.domain.records import (
    EventRecord,
    NewRun,
    RunRecord,
    StepRecord,
    VersionRecord,
    WorkflowRecord,
)
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store.audit import note_target
from flowyard.store.auth import AuthOps
from flowyard.store.credentials import CredentialOps
from flowyard.store.lifecycle import LifecycleOps
from flowyard.store.logins import LoginOps
from flowyard.store.ports import EventListener
from flowyard.store.queue import QueueOps
from flowyard.store.rows import (
    chunks,
    created_only,
    definition_checksum,
    event_record,
    event_row,
    new_step_row,
    run_from_dict,
    run_record,
    step_record,
    version_record,
    workflow_record,
)
from flowyard.store.schema import run_events, runs, steps, workflow_versions, workflows
from flowyard.store.signals import SignalOps


class SqlStore(QueueOps, LifecycleOps, SignalOps, AuthOps, LoginOps, CredentialOps):
    """Workflows and runs; the queue comes from :class:`QueueOps`, run lifecycle from
    :class:`LifecycleOps`, the plumbing from :class:`SqlBase`."""

    # -- workflows -------------------------------------------------------------------------

    async def create_workflow(
        self,
        name: str,
        description: str | None,
        definition: dict[str, Any],
        actor: str | None,
        *,
        audit: AuditEntry | None = None,
    ) -> tuple[WorkflowRecord, VersionRecord]:
        """Create a workflow with version 1."""
        now = utc_now()
        workflow_id = new_workflow_id()
        checksum = definition_checksum(definition)

        async def fn(conn: AsyncConnection) -> tuple[WorkflowRecord, VersionRecord]:
            existing = await conn.execute(sa.select(workflows.c.id).where(workflows.c.name == name))
            if existing.first() is not None:
                raise Conflict(f"a workflow named {name!r} already exists")
            note_target(audit, "workflow", workflow_id)
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
            return await self._tx(fn, audit=audit)
        except IntegrityError as exc:
            raise Conflict(f"a workflow named {name!r} already exists") from exc

    async def add_version(
        self,
        workflow_id: WorkflowId,
        definition: dict[str, Any],
        actor: str | None,
        *,
        expected_latest: int | None = None,
        expected_archived: bool | None = None,
        audit: AuditEntry | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Append a version unless it equals the latest one. The expectations are checked
        under the workflow's row lock (PreconditionFailed)."""
        now = utc_now()
        checksum = definition_checksum(definition)

        async def fn(conn: AsyncConnection) -> tuple[VersionRecord, bool]:
            row = await self._locked_workflow(conn, workflow_id, expected_latest, expected_archived)
            latest = row.latest_version
            current = (
                await conn.execute(
                    sa.select(workflow_versions).where(
                        workflow_versions.c.workflow_id == workflow_id,
                        workflow_versions.c.version == latest,
                    )
                )
            ).one()
            if current.checksum == checksum and not row.archived:
                return version_record(current), False
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
            return await self._tx(fn, audit=audit)
        except IntegrityError as exc:
            raise Conflict(f"workflow {workflow_id!r} was changed concurrently; retry") from exc

    async def _locked_workflow(
        self,
        conn: AsyncConnection,
        workflow_id: WorkflowId,
        expected_latest: int | None,
        expected_archived: bool | None,
    ) -> Any:
        """The workflow's row, locked for the transaction (PostgreSQL ``FOR UPDATE``; SQLite
        writers are serialised), if it meets the expectations of a conditional request."""
        row = (
            await conn.execute(
                sa.select(workflows).where(workflows.c.id == workflow_id).with_for_update()
            )
        ).first()
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} not found")
        if (expected_latest is not None and expected_latest != row.latest_version) or (
            expected_archived is not None and expected_archived != bool(row.archived)
        ):
            state = " (archived)" if row.archived else ""
            raise PreconditionFailed(
                f"workflow {row.name!r} is at version {row.latest_version}{state}",
                detail={"latest_version": row.latest_version, "archived": bool(row.archived)},
            )
        return row

    async def archive_workflow(
        self,
        workflow_id: WorkflowId,
        *,
        expected_latest: int | None = None,
        expected_archived: bool | None = None,
        audit: AuditEntry | None = None,
    ) -> WorkflowRecord:
        """Archive a workflow: hidden from lists, no new runs; versions and runs are kept.
        The expectations are checked under the workflow's row lock (PreconditionFailed)."""
        now = utc_now()

        async def fn(conn: AsyncConnection) -> WorkflowRecord:
            if expected_latest is not None or expected_archived is not None:
                await self._locked_workflow(conn, workflow_id, expected_latest, expected_archived)
            row = (
                await conn.execute(
                    workflows.update()
                    .where(workflows.c.id == workflow_id, workflows.c.archived == sa.false())
                    .values(archived=True, updated_at=now)
                    .returning(*workflows.c)
                )
            ).first()
            if row is None:  # unknown, or archived already (left as it is)
                query = sa.select(workflows).where(workflows.c.id == workflow_id)
                row = (await conn.execute(query)).first()
            if row is None:
                raise NotFound(f"workflow {workflow_id!r} not found")
            return workflow_record(row)

        return await self._tx(fn, audit=audit)

    async def get_workflow(self, ref: str) -> WorkflowRecord:
        """A workflow by id or by name (an id match wins: names may also start with "wf_")."""
        where = sa.or_(workflows.c.id == ref, workflows.c.name == ref)

        async def fn(conn: AsyncConnection) -> WorkflowRecord:
            rows = list(await conn.execute(sa.select(workflows).where(where)))
            if not rows:
                raise NotFound(f"workflow {ref!r} not found")
            return workflow_record(next((row for row in rows if row.id == ref), rows[0]))

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
            return [workflow_record(row) for row in await conn.execute(query)]

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
            return version_record(row)

        return await self._tx(fn, write=False)

    async def list_versions(
        self, workflow_id: WorkflowId, *, limit: int | None = None, before: int | None = None
    ) -> list[VersionRecord]:
        """Versions newest first (every one without ``limit``), below a version cursor."""
        query = (
            sa.select(workflow_versions)
            .where(workflow_versions.c.workflow_id == workflow_id)
            .order_by(workflow_versions.c.version.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(workflow_versions.c.version < before)

        async def fn(conn: AsyncConnection) -> list[VersionRecord]:
            return [version_record(row) for row in await conn.execute(query)]

        return await self._tx(fn, write=False)

    # -- runs ------------------------------------------------------------------------------

    async def start_runs(
        self, new_runs: Sequence[NewRun], now: datetime, *, audit: AuditEntry | None = None
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
                results.append((run_from_dict(row), True))
            if run_rows:
                await conn.execute(runs.insert(), run_rows)
                step_rows = [
                    new_step_row(row["id"], new.start_node, new.start_node_type, now)
                    for row, new in zip(run_rows, created_only(new_runs, results), strict=True)
                ]
                await conn.execute(steps.insert(), step_rows)
                await conn.execute(
                    run_events.insert(),
                    [
                        event_row(
                            row["id"],
                            EventType.RUN_CREATED,
                            {"workflow_version": row["workflow_version"]},
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
            if len(final) == 1:
                note_target(audit, "run", final[0][0].id)
            return final

        try:
            return await self._tx(fn, audit=audit)
        except IntegrityError:
            # A concurrent start with the same idempotency key won the race: the retry sees it.
            return await self._tx(fn, audit=audit)

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
    ) -> list[RunRecord]:
        """Runs newest first (ids are time-ordered)."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(runs.c.status == status.value)
        if workflow_id is not None:
            query = query.where(runs.c.workflow_id == workflow_id)
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
