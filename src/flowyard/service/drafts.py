"""Draft use cases: open a workflow's shared draft, edit it node by node (each edit one
undoable step), undo, redo, read its history, discard it, publish it as the next version.

Every edit is computed here from the draft as read (the pure ``flowyard.drafts`` code: a
JSON Patch and its inverse) and recorded by the store only if the draft is still at the
revision the client's ``If-Match`` named (decision 0027).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from flowyard.domain.auth import AuditEntry
from flowyard.domain.definition import WORKFLOW_NAME_PATTERN
from flowyard.domain.drafts import (
    DraftChange,
    DraftEvent,
    DraftRecord,
    DraftStepRecord,
    NewDraftStep,
    draft_overtaken,
)
from flowyard.domain.errors import Conflict, InvalidInput, NotFound, PreconditionFailed, Problem
from flowyard.domain.records import VersionRecord, WorkflowRecord
from flowyard.drafts import ops
from flowyard.drafts.patching import (
    Document,
    Operation,
    apply_patch,
    definition_operations,
    new_document,
)
from flowyard.drafts.routes import registry_references
from flowyard.engine.incremental import DefinitionCheck, IncrementalValidator, reusable
from flowyard.service.base import _Recent
from flowyard.service.workflows import WorkflowUseCases
from flowyard.store.ports.drafts import DraftNotice

#: Steps of undo history kept per draft unless the settings say otherwise.
DRAFT_HISTORY = 100

#: Builds an edit from the document as it is (and how to find references to a node).
EditBuilder = Callable[[Document, ops.References], ops.Edit]
#: Drafts whose last check is kept for their next edit (per process).
DRAFT_CHECKS = 32
#: An edit that leaves at most this many nodes to check again is checked on the event loop
#: (a few milliseconds); more go to a compile slot's thread, like a whole definition.
INLINE_NODES = 64
#: One draft's content: its opening time and its revision (both change with the content).
_DraftKey = tuple[datetime, int]


@dataclass(frozen=True, slots=True)
class DraftView:
    """A draft as clients see it: the record and its validation problems (pointers into
    the draft document)."""

    workflow: WorkflowRecord
    draft: DraftRecord
    problems: list[Problem]
    summary: str | None = None


class DraftUseCases(WorkflowUseCases):
    """Drafts over the store's DraftStore port."""

    history_limit: int = DRAFT_HISTORY

    @functools.cached_property
    def _incremental(self) -> IncrementalValidator:
        return IncrementalValidator(self.validator)

    @functools.cached_property
    def _draft_checks(self) -> _Recent[str, tuple[_DraftKey, DefinitionCheck]]:
        return _Recent(DRAFT_CHECKS)

    async def _workflow(self, ref: str) -> WorkflowRecord:
        # Through the read cache: a draft needs the workflow's id and name, which never
        # change; what a write must not get wrong, the store checks under its locks.
        return await self.get_workflow(ref)

    def _noticed(
        self,
        workflow: WorkflowRecord,
        change: DraftChange,
        summary: Callable[[], str],
        actor: str | None,
    ) -> tuple[DraftNotice | None, list[DraftEvent]]:
        """The notice a store that records it in the change's transaction writes (decision
        0037), and the list the event it wrote goes to; (None, []) where the change is
        announced after it committed. ``summary`` is asked when the notice is written (the
        step is made in the transaction)."""
        made: list[DraftEvent] = []
        if not self.store.records_draft_notices:
            return None, made

        def notice(draft: DraftRecord) -> str:
            made.append(self._draft_event(workflow, change, draft, summary(), actor))
            return made[-1].to_json()

        return notice, made

    async def _told(
        self,
        workflow: WorkflowRecord,
        change: DraftChange,
        saved: DraftRecord,
        summary: str,
        actor: str | None,
        made: list[DraftEvent],
    ) -> None:
        """After a change committed: this process's streams hear the notice the store
        wrote with it, or every process's hear it now."""
        if made:  # (the last: a retried transaction made one per attempt)
            self.changes.deliver(made[-1])
        else:
            await self.changes.announce(self._draft_event(workflow, change, saved, summary, actor))

    def _draft_event(
        self,
        workflow: WorkflowRecord,
        change: DraftChange,
        draft: DraftRecord | None,
        summary: str | None,
        actor: str | None,
        *,
        version: int | None = None,
    ) -> DraftEvent:
        """A change of a draft as the streams tell it (decision 0030)."""
        return DraftEvent(
            workflow_id=workflow.id,
            workflow=workflow.name,
            change=change,
            etag=None if draft is None else draft.etag,
            summary=summary,
            actor=actor,
            undo_depth=0 if draft is None else draft.undo_depth,
            redo_depth=0 if draft is None else draft.redo_depth,
            at=self.clock(),
            version=version,
        )

    async def _view(
        self,
        workflow: WorkflowRecord,
        draft: DraftRecord,
        summary: str | None = None,
        patch: Sequence[Operation] | None = None,
    ) -> DraftView:
        problems = await self.draft_problems(workflow, draft, patch)
        return DraftView(workflow, draft, problems, summary)

    async def draft_problems(
        self,
        workflow: WorkflowRecord,
        draft: DraftRecord,
        patch: Sequence[Operation] | None = None,
    ) -> list[Problem]:
        """What publishing would refuse the draft for, located in the draft document.
        ``patch``: the operations that made this revision from the previous one, so that
        only what they touched is checked again."""
        definition = draft.document.get("definition")
        check = await self._check_draft(workflow.id, draft, patch)
        found = check.problems or await self.missing_credentials(check.credentials)
        problems = [Problem("/definition" + p.pointer, p.message, p.code) for p in found]
        if isinstance(definition, dict) and definition.get("name") != workflow.name:
            problems.append(
                Problem(
                    "/definition/name", f"must be the workflow's name {workflow.name!r}", "name"
                )
            )
        return problems

    async def _check_draft(
        self, workflow_id: str, draft: DraftRecord, patch: Sequence[Operation] | None
    ) -> DefinitionCheck:
        """The draft's check: kept from the last one at this revision, derived from the
        previous revision's when ``patch`` made this one from it (decision 0037), else whole
        (in a compile slot)."""
        key = (draft.created_at, draft.revision)
        kept = self._draft_checks.get(workflow_id)
        if kept is not None and kept[0] == key:
            return kept[1]
        definition = draft.document.get("definition")
        previous: DefinitionCheck | None = None
        reuse = None
        if kept is not None and patch is not None and kept[0] == (key[0], key[1] - 1):
            previous = kept[1]
            nodes = definition.get("nodes") if isinstance(definition, dict) else None
            if isinstance(nodes, list):
                reuse = reusable(previous, definition_operations(patch), len(nodes))
        if reuse is not None and sum(1 for node in reuse if node is None) <= INLINE_NODES:
            check = self._incremental.check(definition, previous=previous, reuse=reuse)
        else:
            whole = functools.partial(self._incremental.check, previous=previous, reuse=reuse)
            check = await self._in_compile_slot(whole, definition)
        self._draft_checks.put(workflow_id, (key, check))
        return check

    async def create_draft_workflow(
        self, raw: Any, actor: str | None, *, audit: AuditEntry | None = None
    ) -> DraftView:
        """A new workflow that starts as a draft: no version (runs refuse it) until the
        first publish. Only its name must be valid now; the rest may be unfinished."""
        if not isinstance(raw, dict):
            raise InvalidInput("a workflow definition must be a JSON object")
        body = dict(raw)
        body.pop("draft", None)
        layout = body.pop("layout", None)
        name = body.get("name")
        if not isinstance(name, str) or not re.match(WORKFLOW_NAME_PATTERN, name):
            raise InvalidInput(
                "a draft workflow needs a valid name",
                [Problem("/name", "lowercase letters, digits, '_', '.', '-'", "pattern")],
            )
        await self._refuse_archived_name(name)
        document = new_document(body, layout if isinstance(layout, dict) else None)
        record, draft = await self.store.create_draft_workflow(
            name, body.get("description"), document, actor, audit=audit
        )
        self.reads.forget(record.id)
        opened = self._draft_event(record, DraftChange.OPENED, draft, "new workflow", actor)
        await self.changes.announce(opened)
        return await self._view(record, draft)

    async def open_draft(
        self, ref: str, actor: str | None, *, from_version: int | None = None
    ) -> DraftView:
        """Open the workflow's draft from its latest version (or ``from_version``)."""
        workflow = await self._workflow(ref)
        if workflow.latest_version == 0:
            raise Conflict(f"workflow {workflow.name!r} already has its first draft open")
        if from_version is not None and from_version < 1:
            raise NotFound(f"workflow {ref!r} has no version {from_version}")
        version = await self.store.get_version(workflow.id, from_version)
        document = new_document(copy.deepcopy(version.definition), version.layout)
        draft = await self.store.open_draft(workflow.id, document, version.version, actor)
        summary = f"opened from version {version.version}"
        await self.changes.announce(
            self._draft_event(workflow, DraftChange.OPENED, draft, summary, actor)
        )
        return await self._view(workflow, draft)

    async def get_draft(self, ref: str) -> DraftView:
        """The draft with its problems and undo/redo depths (NotFound)."""
        workflow = await self._workflow(ref)
        return await self._view(workflow, await self.store.get_draft(workflow.id))

    async def _current(
        self, ref: str, expected_revision: int | None
    ) -> tuple[WorkflowRecord, DraftRecord]:
        """The workflow and its draft, at ``expected_revision`` (None: as it is now, for
        scripts that edit without having read it; the store still refuses a draft that
        moved on between this read and the write)."""
        workflow = await self._workflow(ref)
        draft = await self.store.get_draft(workflow.id)
        if expected_revision is not None and draft.revision != expected_revision:
            raise stale(draft.revision, expected_revision)
        return workflow, draft

    async def edit_draft(
        self,
        ref: str,
        expected_revision: int | None,
        build: EditBuilder,
        actor: str | None,
        *,
        audit: AuditEntry | None = None,
    ) -> DraftView:
        """Apply one edit as one step (PreconditionFailed when the draft moved on); ``audit``
        commits with it. The draft is read in the transaction that records the edit (one
        transaction, no read before it); the edit is computed there, on the document as
        read (the store's fresh copy: ours to change)."""
        workflow = await self._workflow(ref)
        references = registry_references(self.validator.registry, self.validator.expressions)

        summaries: list[str] = []  # the step's, once made in the transaction

        def change(document: Document) -> NewDraftStep:
            edit = build(document, references)
            if not edit.ops:
                raise InvalidInput(f"nothing to change: {edit.summary}")
            step = apply_patch(document, edit.ops, edit.summary)
            summaries.append(step.summary)
            return NewDraftStep(step.forward, step.inverse, step.summary)

        notice, made = self._noticed(workflow, DraftChange.EDITED, lambda: summaries[-1], actor)
        saved, step = await self.store.apply_draft_edit(
            workflow.id,
            expected_revision,
            change,
            actor,
            max_steps=self.history_limit,
            notice=notice,
            audit=audit,
        )
        await self._told(workflow, DraftChange.EDITED, saved, step.summary, actor, made)
        return await self._view(workflow, saved, step.summary, step.forward)

    async def move_draft(
        self,
        ref: str,
        expected_revision: int | None,
        which: Literal["undo", "redo"],
        actor: str | None,
        *,
        audit: AuditEntry | None = None,
    ) -> DraftView:
        """Undo the last applied step or redo the first undone one (Conflict when there is
        none), in one transaction with the reads of the draft and the step."""
        workflow = await self._workflow(ref)
        change = DraftChange.UNDONE if which == "undo" else DraftChange.REDONE

        summaries: list[str] = []

        def move(document: Document, step: DraftStepRecord) -> list[Operation]:
            patch = step.inverse if which == "undo" else step.forward
            summaries.append(f"{which}: {step.summary}")
            return apply_patch(document, copy.deepcopy(patch), f"{which} {step.summary}").forward

        notice, made = self._noticed(workflow, change, lambda: summaries[-1], actor)
        saved, step, applied = await self.store.apply_draft_move(
            workflow.id, expected_revision, which, move, actor, notice=notice, audit=audit
        )
        summary = f"{which}: {step.summary}"
        await self._told(workflow, change, saved, summary, actor, made)
        return await self._view(workflow, saved, summary, applied)

    async def draft_history(
        self, ref: str, *, limit: int = 100
    ) -> tuple[DraftRecord, list[DraftStepRecord]]:
        """The draft and its steps, newest first."""
        workflow = await self._workflow(ref)
        draft = await self.store.get_draft(workflow.id)
        return draft, await self.store.list_draft_steps(workflow.id, limit=limit)

    async def discard_draft(
        self, ref: str, expected_revision: int | None, actor: str | None = None
    ) -> None:
        """Delete the draft and its history."""
        workflow = await self._workflow(ref)
        await self.store.discard_draft(workflow.id, expected_revision=expected_revision)
        discarded = self._draft_event(workflow, DraftChange.DISCARDED, None, "discarded", actor)
        await self.changes.announce(discarded)

    async def publish_draft(
        self,
        ref: str,
        expected_revision: int | None,
        actor: str | None,
        *,
        force: bool = False,
        audit: AuditEntry | None = None,
    ) -> tuple[WorkflowRecord, VersionRecord, bool]:
        """Validate the draft and make it the next immutable version (with its layout);
        Conflict listing every problem when it is not valid. Conflict too when a version
        was saved since the draft was opened (publishing would silently undo it), unless
        ``force``. A draft equal to the latest version (definition and layout) makes no
        version: that one is answered, with False, and the draft is closed all the same."""
        workflow, draft = await self._current(ref, expected_revision)
        base = draft.base_version or 0
        if not force and workflow.latest_version != base:  # the store checks it under lock
            raise draft_overtaken(base, workflow.latest_version)
        problems = await self.draft_problems(workflow, draft)
        if problems:
            count = len(problems)
            raise Conflict(
                f"the draft has {count} problem{'s' if count != 1 else ''}: fix them, then publish",
                detail={"errors": [p.as_dict() for p in problems]},
            )
        try:
            record, version, created = await self.store.publish_draft(
                workflow.id,
                draft.revision,
                draft.document["definition"],
                draft.document["layout"],
                actor,
                expected_latest=None if force else base,
                audit=audit,
            )
        finally:
            self.reads.forget(workflow.id)
        summary = (
            f"published as version {version.version}"
            if created
            else f"published unchanged: version {version.version} is the same"
        )
        await self.changes.announce(
            self._draft_event(
                record, DraftChange.PUBLISHED, None, summary, actor, version=version.version
            )
        )
        return record, version, created


def stale(current: int, sent: int) -> PreconditionFailed:
    """The draft moved on since the client read it."""
    return PreconditionFailed(
        f'the draft is at ETag "d{current}", not "d{sent}": it changed since you read it; '
        "GET it again and retry",
        detail={"current_etag": f'"d{current}"'},
    )
