"""Records of drafts: a workflow's shared, editable next version and its undo history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowyard.domain.ids import WorkflowId


@dataclass(frozen=True, slots=True)
class DraftRecord:
    """A workflow's draft: its document (``{"definition", "layout"}``), the revision its
    ETag names, the version it was opened from (None: a new workflow), how many steps can
    be undone and redone."""

    workflow_id: WorkflowId
    revision: int
    base_version: int | None
    document: dict[str, Any]
    created_at: datetime
    created_by: str | None
    updated_at: datetime
    updated_by: str | None
    undo_depth: int = 0
    redo_depth: int = 0

    @property
    def etag(self) -> str:
        """The draft's strong entity tag."""
        return f'"d{self.revision}"'


@dataclass(frozen=True, slots=True)
class NewDraftStep:
    """An edit to record: its forward JSON Patch, the inverse, a one-line summary."""

    forward: list[dict[str, Any]]
    inverse: list[dict[str, Any]]
    summary: str


@dataclass(frozen=True, slots=True)
class DraftStepRecord:
    """One step of a draft's history; ``undone`` steps are the redo tail."""

    seq: int
    forward: list[dict[str, Any]]
    inverse: list[dict[str, Any]]
    summary: str
    actor: str | None
    at: datetime
    undone: bool
