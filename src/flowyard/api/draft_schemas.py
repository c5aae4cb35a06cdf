"""Request and response bodies of the draft routes (``/workflows/{ref}/draft``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flowyard.api.schemas import ProblemItem, _examples
from flowyard.domain.definition import NODE_ID_PATTERN
from flowyard.domain.drafts import DraftChange, DraftEvent, DraftEventType, DraftStepRecord
from flowyard.drafts.ops import EdgeKind, EdgeMode
from flowyard.service import DraftView

_DOCUMENT = {
    "definition": {
        "name": "lead-routing",
        "start": "new_lead",
        "nodes": [
            {"id": "new_lead", "type": "trigger", "next": "notify"},
            {"id": "notify", "type": "log", "config": {"message": "hi"}},
        ],
    },
    "layout": {"nodes": {"new_lead": {"x": 0, "y": 0}, "notify": {"x": 240, "y": 0}}},
}
_AT = "2026-12-01T10:00:00Z"
_STEP = {
    "seq": 3,
    "summary": "add node notify after new_lead",
    "actor": "ann",
    "at": _AT,
    "undone": False,
    "forward": [{"op": "add", "path": "/definition/nodes/-", "value": {"id": "notify"}}],
    "inverse": [{"op": "remove", "path": "/definition/nodes/1"}],
}
#: Request examples (OpenAPI).
PATCH_EXAMPLE = [{"op": "replace", "path": "/definition/nodes/1/config/message", "value": "hey"}]
NODE_EXAMPLE = {"id": "notify", "type": "log", "config": {"message": "bye"}, "next": "done"}
MERGE_EXAMPLE = {"config": {"message": "bye"}, "timeout_s": 10, "position": {"x": 10, "y": 20}}


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Position(_In):
    """Where a node sits on the canvas."""

    x: float = Field(ge=-1e7, le=1e7)
    y: float = Field(ge=-1e7, le=1e7)


class NodeAdd(_In):
    """A node to add; ``after`` splices it into that node's ``next`` edge."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "node": {"id": "audit", "type": "log", "config": {"message": "lead in"}},
                    "after": "new_lead",
                    "position": {"x": 120, "y": 0},
                }
            ]
        },
    )

    node: dict[str, Any] = Field(description="The node (id, type, config, ...).")
    after: str | None = Field(None, pattern=NODE_ID_PATTERN)
    position: Position | None = None


class NodeRename(_In):
    """A node's new id: every reference follows."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"id": "greet"}]})

    id: str = Field(pattern=NODE_ID_PATTERN)


class EdgeIn(_In):
    """A route to draw from ``source`` to ``target``: ``next``, a condition ``case`` (with
    ``when``), the condition's ``default``, a ``catch`` route (with ``errors``) or a
    parallel ``branch`` (with ``name``); ``index`` places a case, catch route or branch."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"source": "is_east", "target": "notify", "kind": "case", "when": "input.vip"}
            ]
        },
    )

    source: str = Field(pattern=NODE_ID_PATTERN)
    target: str = Field(pattern=NODE_ID_PATTERN)
    kind: EdgeKind = EdgeKind.NEXT
    when: str | None = Field(None, min_length=1, max_length=10_000)
    errors: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=100)
    name: str | None = Field(None, min_length=1, max_length=200)
    index: int | None = Field(None, ge=0, le=10_000)


class DraftPublic(BaseModel):
    """A draft: its document, what publishing would refuse it for (pointers into the
    document), its undo/redo depths and its ETag (``"d<revision>"``)."""

    model_config = _examples(
        {
            "workflow_id": "wf_01J0000000000000000000000",
            "workflow_name": "lead-routing",
            "etag": '"d4"',
            "revision": 4,
            "base_version": 2,
            "document": _DOCUMENT,
            "valid": True,
            "problems": [],
            "undo_depth": 3,
            "redo_depth": 0,
            "created_at": _AT,
            "created_by": "ann",
            "updated_at": _AT,
            "updated_by": "ann",
            "last_step": "add node notify after new_lead",
        }
    )

    workflow_id: str
    workflow_name: str
    etag: str
    revision: int
    base_version: int | None
    document: dict[str, Any] | None = Field(
        description="The draft (`definition`, `layout`); null in an edit's answer to a "
        "request that sent `Prefer: return=minimal` (RFC 7240)."
    )
    valid: bool
    problems: list[ProblemItem]
    undo_depth: int
    redo_depth: int
    created_at: datetime
    created_by: str | None
    updated_at: datetime
    updated_by: str | None
    last_step: str | None = Field(None, description="What the request that answered did.")

    @classmethod
    def of(cls, view: DraftView, *, minimal: bool = False) -> DraftPublic:
        """From the service's view (``minimal``: without the document)."""
        d = view.draft
        return cls(
            workflow_id=view.workflow.id,
            workflow_name=view.workflow.name,
            etag=d.etag,
            revision=d.revision,
            base_version=d.base_version,
            document=None if minimal else d.document,
            valid=not view.problems,
            problems=[ProblemItem(**p.as_dict()) for p in view.problems],
            undo_depth=d.undo_depth,
            redo_depth=d.redo_depth,
            created_at=d.created_at,
            created_by=d.created_by,
            updated_at=d.updated_at,
            updated_by=d.updated_by,
            last_step=view.summary,
        )


class DraftStepPublic(BaseModel):
    """One step of a draft's history (``undone``: on the redo tail)."""

    model_config = _examples(_STEP)

    seq: int
    summary: str
    actor: str | None
    at: datetime
    undone: bool
    forward: list[dict[str, Any]]
    inverse: list[dict[str, Any]]

    @classmethod
    def of(cls, step: DraftStepRecord) -> DraftStepPublic:
        """From a store record."""
        return cls(
            seq=step.seq,
            summary=step.summary,
            actor=step.actor,
            at=step.at,
            undone=step.undone,
            forward=step.forward,
            inverse=step.inverse,
        )


class DraftHistory(BaseModel):
    """A draft's steps, newest first."""

    model_config = _examples({"etag": '"d4"', "undo_depth": 3, "redo_depth": 0, "items": [_STEP]})

    etag: str
    undo_depth: int
    redo_depth: int
    items: list[DraftStepPublic]


__all__ = ["DraftHistory", "DraftPublic", "EdgeIn", "EdgeKind", "EdgeMode", "NodeAdd"]


class DraftEventData(BaseModel):
    """What a draft event says (never a value of the document)."""

    workflow: str = Field(description="The workflow's name.")
    change: DraftChange
    etag: str | None = Field(description="The draft's new ETag; null once it is closed.")
    summary: str | None = Field(description="The step's one-line summary.")
    undo_depth: int
    redo_depth: int
    version: int | None = Field(None, description="The version a publish made.")


class DraftEventPublic(BaseModel):
    """A draft change on the global stream (``WS /stream``): ``draft.changed`` (opened,
    edited, undone, redone, discarded) or ``draft.published``. Live only: it has no id and
    is not replayed by ``?after=`` (the draft's ETag says where it is)."""

    model_config = _examples(
        {
            "type": "draft.changed",
            "workflow_id": "wf_01J0000000000000000000000",
            "data": {
                "workflow": "lead-routing",
                "change": "edited",
                "etag": '"d5"',
                "summary": "add node notify after new_lead",
                "undo_depth": 4,
                "redo_depth": 0,
                "version": None,
            },
            "actor": "user:ann",
            "created_at": _AT,
        }
    )

    type: DraftEventType
    workflow_id: str
    data: DraftEventData
    actor: str | None
    created_at: datetime

    @classmethod
    def of(cls, event: DraftEvent) -> DraftEventPublic:
        """From a service event."""
        return cls(
            type=event.type,
            workflow_id=event.workflow_id,
            data=DraftEventData(
                workflow=event.workflow,
                change=event.change,
                etag=event.etag,
                summary=event.summary,
                undo_depth=event.undo_depth,
                redo_depth=event.redo_depth,
                version=event.version,
            ),
            actor=event.actor,
            created_at=event.at,
        )
