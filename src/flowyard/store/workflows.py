"""Workflows and their immutable versions in the SQL store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.clock import utc_now
from flowyard.domain.errors import Conflict, NotFound, PreconditionFailed
from flowyard.domain.ids import WorkflowId, new_workflow_id
from flowyard.domain.records import (
    VersionRecord,
    WorkflowRecord,
)
from flowyard.store.audit import note_target
from flowyard.store.base import SqlBase
from flowyard.store.rows import (
    definition_checksum,
    version_record,
    workflow_record,
)
from flowyard.store.schema import workflow_versions, workflows


async def insert_workflow(
    conn: AsyncConnection,
    workflow_id: str,
    name: str,
    description: str | None,
    latest_version: int,
    now: datetime,
) -> None:
    """Insert a workflow's row (``latest_version`` 0: it starts as a draft)."""
    await conn.execute(
        workflows.insert().values(
            id=workflow_id,
            name=name,
            description=description,
            latest_version=latest_version,
            archived=False,
            created_at=now,
            updated_at=now,
        )
    )


class WorkflowOps(SqlBase):
    """Create, version, archive and read workflows."""

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
            await insert_workflow(conn, workflow_id, name, description, 1, now)
            await self._workflow_changed(conn, workflow_id)
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
            await self._workflow_changed(conn, workflow_id)
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
            await self._workflow_changed(conn, workflow_id)
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
