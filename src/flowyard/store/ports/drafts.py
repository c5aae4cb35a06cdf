"""Drafts: one shared draft per workflow, its undo history, publishing it as a version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

from flowyard.domain.auth import AuditEntry
from flowyard.domain.drafts import DraftRecord, DraftStepRecord, NewDraftStep
from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import VersionRecord, WorkflowRecord

#: The notice of a draft change for other processes (JSON), from the draft as saved.
DraftNotice = Callable[[DraftRecord], str]
#: Makes an edit on the document as read (in place): the step that did it.
DraftChangeFn = Callable[[dict[str, Any]], NewDraftStep]
#: Applies a step's patch (inverse to undo, forward to redo) to the document as read, in
#: place: the operations applied.
DraftMoveFn = Callable[[dict[str, Any], DraftStepRecord], list[dict[str, Any]]]


class DraftStore(Protocol):
    """Drafts and their steps. Every write names the revision it was computed from and is
    refused (PreconditionFailed) when the draft moved on, checked under the draft's lock:
    of two writers that read the same revision exactly one wins."""

    async def create_draft_workflow(
        self,
        name: str,
        description: str | None,
        document: dict[str, Any],
        actor: str | None,
        *,
        audit: AuditEntry | None = None,
    ) -> tuple[WorkflowRecord, DraftRecord]:
        """A new workflow with no version (``latest_version`` 0) and its draft (Conflict
        when the name is taken)."""
        ...

    async def open_draft(
        self,
        workflow_id: WorkflowId,
        document: dict[str, Any],
        base_version: int | None,
        actor: str | None,
    ) -> DraftRecord:
        """Open the workflow's draft (NotFound; Conflict when one is open)."""
        ...

    async def get_draft(self, workflow_id: WorkflowId) -> DraftRecord:
        """The workflow's draft with its undo and redo depths (NotFound)."""
        ...

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
        """Save the edited document and its step: the redo tail is dropped, and the oldest
        steps past ``max_steps``. ``notice`` gives the change's notice for other processes,
        written in the same transaction where the store does that (``records_draft_notices``);
        ``audit`` is written in it too."""

        ...

    async def draft_step(
        self, workflow_id: WorkflowId, which: Literal["undo", "redo"]
    ) -> DraftStepRecord | None:
        """The step an undo would revert (the last applied) or a redo re-apply (the first
        undone); None when there is none."""
        ...

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
        """:meth:`record_draft_edit` of what ``change`` makes of the draft's document, read
        in the same transaction (NotFound, PreconditionFailed; None: at any revision)."""
        ...

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
        """Undo or redo in one transaction: the draft and its step read, ``move`` applied to
        the document, :meth:`record_draft_move` of it (Conflict when there is no step)."""
        ...

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
        """Save the document after undoing (``undone``) or redoing step ``seq`` (``notice``
        and ``audit``: as for :meth:`record_draft_edit`)."""
        ...

    async def list_draft_steps(
        self, workflow_id: WorkflowId, *, limit: int = 100
    ) -> list[DraftStepRecord]:
        """The draft's history, newest first (NotFound without a draft)."""
        ...

    async def discard_draft(
        self, workflow_id: WorkflowId, *, expected_revision: int | None = None
    ) -> None:
        """Delete the draft and its history (NotFound)."""
        ...

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
        """Make the draft the workflow's next version (with its layout) and close the
        draft, in one transaction; an unchanged draft (definition checksum and layout of the
        latest version) makes none: that version is answered with False. Conflict when the
        workflow is not at ``expected_latest`` (None: whatever it is at)."""
        ...
