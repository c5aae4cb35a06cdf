"""Records of drafts: a workflow's shared, editable next version and its undo history."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from flowyard.domain.errors import Conflict
from flowyard.domain.ids import WorkflowId

_ETAG = re.compile(r'^\s*(?:W/)?(?:"d(\d{1,9})"|d(\d{1,9}))\s*$')


def draft_revision(etag: str) -> int | None:
    """The revision a draft ETag names (``"d7"``, also ``d7`` as typed in a shell), or None
    when the text is not a draft's ETag."""
    found = _ETAG.match(etag)
    return None if found is None else int(found.group(1) or found.group(2))


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


class DraftEventType(StrEnum):
    """The types of the draft events on the global stream (decision 0030)."""

    CHANGED = "draft.changed"
    PUBLISHED = "draft.published"


class DraftChange(StrEnum):
    """What happened to a draft."""

    OPENED = "opened"
    EDITED = "edited"
    UNDONE = "undone"
    REDONE = "redone"
    DISCARDED = "discarded"
    PUBLISHED = "published"

    @property
    def event_type(self) -> DraftEventType:
        """``draft.published`` for a publish, ``draft.changed`` for the rest."""
        if self is DraftChange.PUBLISHED:
            return DraftEventType.PUBLISHED
        return DraftEventType.CHANGED


#: Longest summary an event carries (a step's summary is at most 500 characters).
MAX_EVENT_SUMMARY = 500


@dataclass(frozen=True, slots=True)
class DraftEvent:
    """One change of a draft as the streams tell it: which workflow, what changed, the
    draft's new ETag (None once it is closed: discarded or published), the step's one-line
    summary (never a value of the document), who, and the undo/redo depths after it. A
    publish names the ``version`` it made."""

    workflow_id: WorkflowId
    workflow: str
    change: DraftChange
    etag: str | None
    summary: str | None
    actor: str | None
    undo_depth: int
    redo_depth: int
    at: datetime
    version: int | None = None

    @property
    def type(self) -> DraftEventType:
        """The event's type on the stream."""
        return self.change.event_type

    def to_json(self) -> str:
        """The event as one JSON document (what travels between processes)."""
        data = asdict(self)
        data["change"] = self.change.value
        data["at"] = self.at.isoformat()
        if self.summary is not None:
            data["summary"] = self.summary[:MAX_EVENT_SUMMARY]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DraftEvent:
        """The event :meth:`to_json` wrote (ValueError for anything else)."""
        try:
            data = json.loads(text)
            return cls(
                workflow_id=WorkflowId(_text(data["workflow_id"])),
                workflow=_text(data["workflow"]),
                change=DraftChange(data["change"]),
                etag=_text_or_none(data["etag"]),
                summary=_text_or_none(data["summary"]),
                actor=_text_or_none(data["actor"]),
                undo_depth=_count(data["undo_depth"]),
                redo_depth=_count(data["redo_depth"]),
                at=datetime.fromisoformat(_text(data["at"])),
                version=None if data.get("version") is None else _count(data["version"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a draft event: {exc}") from None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _text_or_none(value: Any) -> str | None:
    return None if value is None else _text(value)


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError("expected a count")
    return value


def draft_overtaken(base: int, latest: int) -> Conflict:
    """The answer to publishing a draft opened from version ``base`` when the workflow is
    at ``latest`` since: publishing would silently undo what was saved in between."""
    return Conflict(
        f"the draft was opened from version {base}, but the workflow is at version {latest}: "
        "publishing would undo what was saved since. Discard the draft and open it again, or "
        "publish with force to replace the latest version anyway",
        detail={"base_version": base, "latest_version": latest},
    )
