"""Drafts in the SQL store: the document, its revision and its undo history.

The service computes every edit (the engine-free patch code in ``flowyard.drafts``); the
store records it if the draft is still at the revision the edit was computed from. That
check runs under the draft's row lock (``FOR UPDATE`` on PostgreSQL; SQLite serialises
writers), so two editors that read the same ETag cannot both win.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.clock import utc_now
from flowyard.domain.drafts import DraftRecord, DraftStepRecord, NewDraftStep, draft_overtaken
from flowyard.domain.errors import Conflict, NotFound, PreconditionFailed
from flowyard.domain.ids import WorkflowId, new_workflow_id
from flowyard.domain.records import VersionRecord, WorkflowRecord
from flowyard.store.audit import note_target
from flowyard.store.base import SqlBase
from flowyard.store.ports.drafts import DraftChangeFn, DraftMoveFn, DraftNotice
from flowyard.store.rows import definition_checksum, version_record, workflow_record
from flowyard.store.schema import draft_steps, drafts, workflow_versions, workflows
from flowyard.store.workflows import insert_workflow


def _step(row: Any) -> DraftStepRecord:
    return DraftStepRecord(
        seq=row.seq,
        forward=row.forward,
        inverse=row.inverse,
        summary=row.summary,
        actor=row.actor,
        at=row.at,
        undone=bool(row.undone),
    )


def _same_layout(stored: dict[str, Any] | None, layout: dict[str, Any]) -> bool:
    """Whether a version's layout (None: saved without one) is the draft's."""
    return (stored or {"nodes": {}}) == layout


class DraftOps(SqlBase):
    """Open, edit, undo, redo, discard and publish drafts."""

    async def create_draft_workflow(
        self,
        name: str,
        description: str | None,
        document: dict[str, Any],
        actor: str | None,
        *,
        audit: AuditEntry | None = None,
    ) -> tuple[WorkflowRecord, DraftRecord]:
        """A workflow without a version (``latest_version`` 0) and its draft."""
        now = utc_now()
        workflow_id = WorkflowId(new_workflow_id())

        async def fn(conn: AsyncConnection) -> tuple[WorkflowRecord, DraftRecord]:
            taken = await conn.execute(sa.select(workflows.c.id).where(workflows.c.name == name))
            if taken.first() is not None:
                raise Conflict(f"a workflow named {name!r} already exists")
            note_target(audit, "workflow", workflow_id)
            await insert_workflow(conn, workflow_id, name, description, 0, now)
            await self._workflow_changed(conn, workflow_id)
            draft = await self._insert_draft(conn, workflow_id, document, None, actor)
            wf = WorkflowRecord(workflow_id, name, 0, now, now, False, description)
            return wf, draft

        try:
            return await self._tx(fn, audit=audit)
        except IntegrityError as exc:
            raise Conflict(f"a workflow named {name!r} already exists") from exc

    async def _insert_draft(
        self,
        conn: AsyncConnection,
        workflow_id: WorkflowId,
        document: dict[str, Any],
        base_version: int | None,
        actor: str | None,
    ) -> DraftRecord:
        now = utc_now()
        await conn.execute(
            drafts.insert().values(
                workflow_id=workflow_id,
                revision=1,
                base_version=base_version,
                document=document,
                created_at=now,
                created_by=actor,
                updated_at=now,
                updated_by=actor,
            )
        )
        return DraftRecord(workflow_id, 1, base_version, document, now, actor, now, actor)

    async def open_draft(
        self,
        workflow_id: WorkflowId,
        document: dict[str, Any],
        base_version: int | None,
        actor: str | None,
    ) -> DraftRecord:
        """Open the workflow's draft (Conflict when one is open)."""

        async def fn(conn: AsyncConnection) -> DraftRecord:
            await self._lock_workflow_row(conn, workflow_id)
            existing = await self._draft_row(conn, workflow_id, lock=False, document=False)
            if existing is not None:
                raise Conflict(
                    "the workflow already has a draft: edit it, or discard it first "
                    "(DELETE .../draft)",
                    detail={"current_etag": f'"d{existing.revision}"'},
                )
            return await self._insert_draft(conn, workflow_id, document, base_version, actor)

        try:
            return await self._tx(fn)
        except IntegrityError as exc:
            raise Conflict("the workflow already has a draft (opened concurrently)") from exc

    async def _lock_workflow_row(self, conn: AsyncConnection, workflow_id: WorkflowId) -> Any:
        query = sa.select(workflows).where(workflows.c.id == workflow_id).with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} not found")
        return row

    async def _draft_row(
        self, conn: AsyncConnection, workflow_id: WorkflowId, *, lock: bool, document: bool = True
    ) -> Any:
        # Without the document: decoding a 1,000-node draft is most of a read, and an edit
        # needs only the revision it checks (the service already holds the document).
        columns = drafts.c if document else [c for c in drafts.c if c.name != "document"]
        query = sa.select(*columns).where(drafts.c.workflow_id == workflow_id)
        if lock:
            query = query.with_for_update()
        return (await conn.execute(query)).first()

    async def _locked_draft(
        self, conn: AsyncConnection, workflow_id: WorkflowId, expected_revision: int | None
    ) -> Any:
        """The draft's row, locked, if it is at ``expected_revision`` (PreconditionFailed)."""
        row = await self._draft_row(conn, workflow_id, lock=True, document=False)
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} has no draft")
        if expected_revision is not None and row.revision != expected_revision:
            raise PreconditionFailed(
                f'the draft is at ETag "d{row.revision}", not "d{expected_revision}": it '
                "changed since you read it; GET it again and retry",
                detail={"current_etag": f'"d{row.revision}"'},
            )
        return row

    @staticmethod
    def _depths(workflow_id: str) -> list[Any]:
        """The undo and redo depths as two scalar subqueries (read with the draft's row)."""
        mine = draft_steps.c.workflow_id == workflow_id
        return [
            sa.select(sa.func.count())
            .where(mine, draft_steps.c.undone == undone)
            .scalar_subquery()
            .label(label)
            for undone, label in ((False, "undo_depth"), (True, "redo_depth"))
        ]

    @staticmethod
    def _draft_record(row: Any, document: dict[str, Any] | None = None) -> DraftRecord:
        return DraftRecord(
            workflow_id=WorkflowId(row.workflow_id),
            revision=row.revision,
            base_version=row.base_version,
            document=row.document if document is None else document,
            created_at=row.created_at,
            created_by=row.created_by,
            updated_at=row.updated_at,
            updated_by=row.updated_by,
            undo_depth=row.undo_depth,
            redo_depth=row.redo_depth,
        )

    async def get_draft(self, workflow_id: WorkflowId) -> DraftRecord:
        """The workflow's draft with its depths (NotFound): one statement."""
        query = sa.select(*drafts.c, *self._depths(workflow_id)).where(
            drafts.c.workflow_id == workflow_id
        )

        async def fn(conn: AsyncConnection) -> DraftRecord:
            row = (await conn.execute(query)).first()
            if row is None:
                raise NotFound(f"workflow {workflow_id!r} has no draft")
            return self._draft_record(row)

        return await self._tx(fn, write=False)

    async def _save_document(
        self,
        conn: AsyncConnection,
        workflow_id: WorkflowId,
        expected_revision: int,
        document: dict[str, Any],
        actor: str | None,
    ) -> Any:
        """Write the document if the draft is at ``expected_revision`` (its row, without the
        document; NotFound or PreconditionFailed otherwise). The update is the check: it
        takes the row's lock (PostgreSQL) where a ``SELECT ... FOR UPDATE`` would, and saves
        that statement on every edit."""
        updated = (
            await conn.execute(
                drafts.update()
                .where(drafts.c.workflow_id == workflow_id, drafts.c.revision == expected_revision)
                .values(
                    document=document,
                    revision=expected_revision + 1,
                    updated_at=utc_now(),
                    updated_by=actor,
                )
                .returning(*[c for c in drafts.c if c.name != "document"])
            )
        ).first()
        if updated is None:
            await self._locked_draft(conn, workflow_id, expected_revision)
            raise AssertionError("unreachable: the draft is at the expected revision")
        return updated

    async def record_draft_edit(
        self,
        workflow_id: WorkflowId,
        expected_revision: int,
        document: dict[str, Any],
        step: NewDraftStep,
        actor: str | None,
        *,
        max_steps: int,
        notice: DraftNotice | None = None,
        audit: AuditEntry | None = None,
    ) -> DraftRecord:
        """Save an edit and its step; drop the redo tail and steps past ``max_steps``; the
        audit entry commits with them (one transaction per edit, not two)."""

        async def fn(conn: AsyncConnection) -> DraftRecord:
            note_target(audit, "workflow", workflow_id)
            return await self._record_edit(
                conn, workflow_id, expected_revision, document, step, actor, max_steps, notice
            )

        return await self._tx(fn, audit=audit)

    async def apply_draft_edit(
        self,
        workflow_id: WorkflowId,
        expected_revision: int | None,
        change: DraftChangeFn,
        actor: str | None,
        *,
        max_steps: int,
        notice: DraftNotice | None = None,
        audit: AuditEntry | None = None,
    ) -> tuple[DraftRecord, NewDraftStep]:
        """Read the draft (locked, at ``expected_revision``; None: as it is), have ``change``
        make the new document (in place) and its step, and record them, all in one
        transaction: an edit without a read transaction of its own before it."""

        async def fn(conn: AsyncConnection) -> tuple[DraftRecord, NewDraftStep]:
            note_target(audit, "workflow", workflow_id)
            row = await self._locked_document(conn, workflow_id, expected_revision)
            document = row.document
            step = change(document)
            record = await self._record_edit(
                conn, workflow_id, row.revision, document, step, actor, max_steps, notice
            )
            return record, step

        return await self._tx(fn, audit=audit)

    async def _locked_document(
        self, conn: AsyncConnection, workflow_id: WorkflowId, expected_revision: int | None
    ) -> Any:
        """The draft's row with its document, locked, if it is at ``expected_revision``
        (NotFound, PreconditionFailed)."""
        row = await self._draft_row(conn, workflow_id, lock=True)
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} has no draft")
        if expected_revision is not None and row.revision != expected_revision:
            raise PreconditionFailed(
                f'the draft is at ETag "d{row.revision}", not "d{expected_revision}": it '
                "changed since you read it; GET it again and retry",
                detail={"current_etag": f'"d{row.revision}"'},
            )
        return row

    async def _record_edit(
        self,
        conn: AsyncConnection,
        workflow_id: WorkflowId,
        expected_revision: int,
        document: dict[str, Any],
        step: NewDraftStep,
        actor: str | None,
        max_steps: int,
        notice: DraftNotice | None,
    ) -> DraftRecord:
        row = await self._save_document(conn, workflow_id, expected_revision, document, actor)
        mine = draft_steps.c.workflow_id == workflow_id
        await conn.execute(draft_steps.delete().where(mine, draft_steps.c.undone))
        last, count = (
            await conn.execute(
                sa.select(sa.func.max(draft_steps.c.seq), sa.func.count()).where(mine)
            )
        ).one()
        seq = (last or 0) + 1
        await conn.execute(
            draft_steps.insert().values(
                workflow_id=workflow_id,
                seq=seq,
                forward=step.forward,
                inverse=step.inverse,
                summary=step.summary[:500],
                actor=actor,
                at=utc_now(),
                undone=False,
            )
        )
        if seq > max_steps:  # seqs have no gaps below the tail: the oldest are <= this
            await conn.execute(
                draft_steps.delete().where(mine, draft_steps.c.seq <= seq - max_steps)
            )
        # The applied steps are seq - count .. seq, the last max_steps of them kept.
        depths = {"undo_depth": min(count + 1, max_steps), "redo_depth": 0}
        record = self._draft_record(SimpleNamespace(**row._mapping, **depths), document)
        if notice is not None:
            await self._draft_changed(conn, notice(record))
        return record

    @staticmethod
    def _step_query(workflow_id: WorkflowId, which: Literal["undo", "redo"]) -> Any:
        """The last applied step (undo) or the first undone one (redo)."""
        query = sa.select(draft_steps).where(draft_steps.c.workflow_id == workflow_id).limit(1)
        if which == "undo":
            return query.where(~draft_steps.c.undone).order_by(draft_steps.c.seq.desc())
        return query.where(draft_steps.c.undone).order_by(draft_steps.c.seq)

    async def draft_step(
        self, workflow_id: WorkflowId, which: Literal["undo", "redo"]
    ) -> DraftStepRecord | None:
        """The last applied step (undo) or the first undone one (redo)."""
        query = self._step_query(workflow_id, which)

        async def fn(conn: AsyncConnection) -> DraftStepRecord | None:
            row = (await conn.execute(query)).first()
            return None if row is None else _step(row)

        return await self._tx(fn, write=False)

    async def record_draft_move(
        self,
        workflow_id: WorkflowId,
        expected_revision: int,
        document: dict[str, Any],
        seq: int,
        undone: bool,
        actor: str | None,
        *,
        notice: DraftNotice | None = None,
        audit: AuditEntry | None = None,
    ) -> DraftRecord:
        """Save the document after undoing or redoing step ``seq`` (with its audit entry)."""

        async def fn(conn: AsyncConnection) -> DraftRecord:
            note_target(audit, "workflow", workflow_id)
            return await self._record_move(
                conn, workflow_id, expected_revision, document, seq, undone, actor, notice
            )

        return await self._tx(fn, audit=audit)

    async def apply_draft_move(
        self,
        workflow_id: WorkflowId,
        expected_revision: int | None,
        which: Literal["undo", "redo"],
        move: DraftMoveFn,
        actor: str | None,
        *,
        notice: DraftNotice | None = None,
        audit: AuditEntry | None = None,
    ) -> tuple[DraftRecord, DraftStepRecord, list[dict[str, Any]]]:
        """Undo the last applied step or redo the first undone one in one transaction: read
        the draft (locked, at ``expected_revision``) and the step, have ``move`` apply the
        step's patch to the document (in place; it answers the operations applied), record
        it (Conflict, naming the current ETag, when there is no step to move)."""

        async def fn(
            conn: AsyncConnection,
        ) -> tuple[DraftRecord, DraftStepRecord, list[dict[str, Any]]]:
            note_target(audit, "workflow", workflow_id)
            row = await self._locked_document(conn, workflow_id, expected_revision)
            found = (await conn.execute(self._step_query(workflow_id, which))).first()
            if found is None:
                raise Conflict(f"nothing to {which}", detail={"current_etag": f'"d{row.revision}"'})
            step = _step(found)
            document = row.document
            applied = move(document, step)
            record = await self._record_move(
                conn, workflow_id, row.revision, document, step.seq, which == "undo", actor, notice
            )
            return record, step, applied

        return await self._tx(fn, audit=audit)

    async def _record_move(
        self,
        conn: AsyncConnection,
        workflow_id: WorkflowId,
        expected_revision: int,
        document: dict[str, Any],
        seq: int,
        undone: bool,
        actor: str | None,
        notice: DraftNotice | None,
    ) -> DraftRecord:
        row = await self._save_document(conn, workflow_id, expected_revision, document, actor)
        moved = await conn.execute(
            draft_steps.update()
            .where(
                draft_steps.c.workflow_id == workflow_id,
                draft_steps.c.seq == seq,
                draft_steps.c.undone == (not undone),
            )
            .values(undone=undone)
        )
        if moved.rowcount != 1:
            raise Conflict(f"step {seq} of the draft was already {'un' if undone else 're'}done")
        depths = (await conn.execute(sa.select(*self._depths(workflow_id)))).one()
        record = self._draft_record(SimpleNamespace(**row._mapping, **depths._mapping), document)
        if notice is not None:
            await self._draft_changed(conn, notice(record))
        return record

    async def list_draft_steps(
        self, workflow_id: WorkflowId, *, limit: int = 100
    ) -> list[DraftStepRecord]:
        """The history, newest first."""

        async def fn(conn: AsyncConnection) -> list[DraftStepRecord]:
            if await self._draft_row(conn, workflow_id, lock=False, document=False) is None:
                raise NotFound(f"workflow {workflow_id!r} has no draft")
            query = (
                sa.select(draft_steps)
                .where(draft_steps.c.workflow_id == workflow_id)
                .order_by(draft_steps.c.seq.desc())
                .limit(limit)
            )
            return [_step(row) for row in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def _delete_draft(self, conn: AsyncConnection, workflow_id: WorkflowId) -> None:
        await conn.execute(draft_steps.delete().where(draft_steps.c.workflow_id == workflow_id))
        await conn.execute(drafts.delete().where(drafts.c.workflow_id == workflow_id))

    async def discard_draft(
        self, workflow_id: WorkflowId, *, expected_revision: int | None = None
    ) -> None:
        """Delete the draft and its history."""

        async def fn(conn: AsyncConnection) -> None:
            await self._locked_draft(conn, workflow_id, expected_revision)
            await self._delete_draft(conn, workflow_id)

        await self._tx(fn)

    async def publish_draft(
        self,
        workflow_id: WorkflowId,
        expected_revision: int,
        definition: dict[str, Any],
        layout: dict[str, Any],
        actor: str | None,
        *,
        expected_latest: int | None = None,
        audit: AuditEntry | None = None,
    ) -> tuple[WorkflowRecord, VersionRecord, bool]:
        """The draft becomes the next version (with its layout); the draft is closed. When
        the definition (by checksum) and the layout equal the latest version's, no version is
        made: that one is answered with False. ``expected_latest``: the version the workflow
        must be at (Conflict naming both otherwise), checked under the workflow's lock."""
        now = utc_now()
        checksum = definition_checksum(definition)

        async def fn(conn: AsyncConnection) -> tuple[WorkflowRecord, VersionRecord, bool]:
            wf = await self._lock_workflow_row(conn, workflow_id)
            await self._locked_draft(conn, workflow_id, expected_revision)
            if expected_latest is not None and wf.latest_version != expected_latest:
                raise draft_overtaken(expected_latest, wf.latest_version)
            note_target(audit, "workflow", workflow_id)
            if wf.latest_version > 0 and not wf.archived:
                current = (
                    await conn.execute(
                        sa.select(workflow_versions).where(
                            workflow_versions.c.workflow_id == workflow_id,
                            workflow_versions.c.version == wf.latest_version,
                        )
                    )
                ).one()
                if current.checksum == checksum and _same_layout(current.layout, layout):
                    await self._delete_draft(conn, workflow_id)
                    return workflow_record(wf), version_record(current), False
            version = wf.latest_version + 1
            await conn.execute(
                workflow_versions.insert().values(
                    workflow_id=workflow_id,
                    version=version,
                    definition=definition,
                    checksum=checksum,
                    created_at=now,
                    created_by=actor,
                    layout=layout,
                )
            )
            updated = (
                await conn.execute(
                    workflows.update()
                    .where(workflows.c.id == workflow_id)
                    .values(
                        latest_version=version,
                        updated_at=now,
                        archived=False,
                        description=definition.get("description"),
                    )
                    .returning(*workflows.c)
                )
            ).one()
            await self._delete_draft(conn, workflow_id)
            await self._workflow_changed(conn, workflow_id)
            record = VersionRecord(
                workflow_id, version, definition, checksum, now, actor, layout=layout
            )
            return workflow_record(updated), record, True

        try:
            return await self._tx(fn, audit=audit)
        except IntegrityError as exc:
            raise Conflict(f"workflow {workflow_id!r} was changed concurrently; retry") from exc
