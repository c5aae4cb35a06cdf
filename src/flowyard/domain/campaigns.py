"""Campaigns: a batch of runs of one workflow version started together, one per item, and
tracked as a whole (counts by run status kept by the store, decision 0028)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, overload

from flowyard.domain.ids import WorkflowId
from flowyard.domain.priorities import BULK, DEFAULT_WEIGHT
from flowyard.domain.quotas import parse_rate, rate_text
from flowyard.domain.statuses import RunStatus


class CampaignStatus(StrEnum):
    """What an operator made of a campaign; ``completed`` once every run has ended."""

    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class CampaignItem:
    """One item of a campaign as the store writes it: the run's input as canonical JSON
    text (checked already; written as is) and its correlation key."""

    input_json: str
    correlation_key: str | None
    #: The item's concurrency key (the campaign's ``concurrency_key`` rendered), when the
    #: campaign limits each key.
    concurrency_key: str | None = None


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_ESCAPED = re.compile(r"\\(.)")
_COPY_UNESCAPED = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def copy_field(value: str | None) -> str:
    """``value`` as a field of PostgreSQL's ``COPY`` text format: backslash, tab, newline
    and carriage return escaped; ``\\N`` for None."""
    if value is None:
        return "\\N"
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def from_copy_field(field: str) -> str | None:
    """The value of a field :func:`copy_field` wrote."""
    if field == "\\N":
        return None
    if "\\" not in field:
        return field
    return _COPY_ESCAPED.sub(lambda m: _COPY_UNESCAPED[m.group(1)], field)


class SpooledItems(Sequence[CampaignItem]):
    """A chunk of a campaign's items as the first pass spooled them: one line each,
    ``correlation key TAB concurrency key TAB input`` with every field in ``COPY`` text
    format (:func:`copy_field`). PostgreSQL's ``COPY`` takes the fields as they are
    (:attr:`lines`); as a sequence, the items are decoded one by one."""

    __slots__ = ("lines",)

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    @classmethod
    def of(cls, items: Iterable[CampaignItem]) -> SpooledItems:
        """The lines of ``items``."""
        return cls([spool_line(i.correlation_key, i.concurrency_key, i.input_json) for i in items])

    def __len__(self) -> int:
        return len(self.lines)

    @overload
    def __getitem__(self, index: int) -> CampaignItem: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[CampaignItem]: ...
    def __getitem__(self, index: int | slice) -> CampaignItem | Sequence[CampaignItem]:
        if isinstance(index, slice):
            return SpooledItems(self.lines[index])
        return _item(self.lines[index])

    def __iter__(self) -> Iterator[CampaignItem]:
        return map(_item, self.lines)


def spool_line(correlation_key: str | None, concurrency_key: str | None, input_json: str) -> str:
    """One item's line of :class:`SpooledItems` (without its newline)."""
    return f"{copy_field(correlation_key)}\t{copy_field(concurrency_key)}\t{copy_field(input_json)}"


def _item(line: str) -> CampaignItem:
    key, concurrency, input_json = line.split("\t", 2)
    return CampaignItem(
        from_copy_field(input_json) or "", from_copy_field(key), from_copy_field(concurrency)
    )


@dataclass(frozen=True, slots=True)
class CampaignLimits:
    """A campaign's limits (decision 0032), kept as quotas so every worker shares them:
    ``concurrency`` steps of its runs in flight and a ``rate`` of ``(tokens, per_s)`` step
    starts for the whole campaign, and the same per concurrency key (``key_*``)."""

    concurrency: int | None = None
    rate: tuple[int, float] | None = None
    key_concurrency: int | None = None
    key_rate: tuple[int, float] | None = None

    @property
    def whole(self) -> bool:
        """It limits the whole campaign."""
        return self.concurrency is not None or self.rate is not None

    @property
    def per_key(self) -> bool:
        """It limits each concurrency key."""
        return self.key_concurrency is not None or self.key_rate is not None

    def as_json(self) -> dict[str, Any]:
        """The limits as the API shows them and the campaign row keeps them (rates as
        text: ``"10 per 1s"``; None: no such limit)."""
        return {
            "concurrency": self.concurrency,
            "rate": rate_text(*self.rate) if self.rate else None,
            "key_concurrency": self.key_concurrency,
            "key_rate": rate_text(*self.key_rate) if self.key_rate else None,
        }

    @classmethod
    def from_json(cls, value: Any) -> CampaignLimits:
        """The limits :meth:`as_json` wrote (checked when they were set); none for None."""
        if not isinstance(value, dict):
            return cls()
        rate, key_rate = value.get("rate"), value.get("key_rate")
        return cls(
            concurrency=value.get("concurrency"),
            rate=parse_rate(rate) if rate else None,
            key_concurrency=value.get("key_concurrency"),
            key_rate=parse_rate(key_rate) if key_rate else None,
        )


@dataclass(frozen=True, slots=True)
class NewCampaign:
    """What the store needs to create a campaign and start its runs."""

    workflow_id: WorkflowId
    workflow_version: int
    name: str
    start_node: str
    start_node_type: str
    checksum: str
    total: int
    item_key: str | None = None
    idempotency_key: str | None = None
    created_by: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    deadline_at: datetime | None = None
    #: The version declares its correlation keys unique among unfinished runs.
    correlation_unique: bool = False
    #: Its runs' priority, and its share of the workers among the campaigns of that
    #: priority (decision 0032).
    priority: int = BULK
    weight: int = DEFAULT_WEIGHT
    limits: CampaignLimits = field(default_factory=CampaignLimits)
    #: The template of each item's concurrency key (``{{ item.tenant }}``).
    concurrency_key: str | None = None


@dataclass(frozen=True, slots=True)
class CampaignRecord:
    """A campaign with its counts of runs by status (read from the counters)."""

    id: str
    workflow_id: WorkflowId
    workflow_version: int
    name: str
    status: CampaignStatus
    item_key: str | None
    idempotency_key: str | None
    checksum: str
    total: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    counts: dict[RunStatus, int] = field(default_factory=dict)
    #: Runs that ended during the minute before the read.
    finished_last_minute: int = 0
    priority: int = BULK
    weight: int = DEFAULT_WEIGHT
    concurrency_key: str | None = None
    #: Runs deleted by retention: still in ``counts`` (the campaign's history), gone from
    #: its list of runs (decision 0031).
    pruned: int = 0
    #: Its limits as last set (at its start or by a change): kept on the campaign, so they
    #: are shown, and restored by retry-failed, after its quota rows were deleted.
    limits: CampaignLimits = field(default_factory=CampaignLimits)

    @property
    def finished(self) -> int:
        """Runs that have ended, however."""
        return sum(n for status, n in self.counts.items() if status.is_terminal)

    @property
    def ended(self) -> bool:
        """Every run has ended (completed, or cancelled to the last run): nothing of it is
        left to steer, and its quota rows can go (a retry-failed restores them)."""
        return self.finished >= self.total

    @property
    def shown_status(self) -> CampaignStatus:
        """The stored status, or ``completed`` once a running campaign's runs all ended."""
        if self.status == CampaignStatus.RUNNING and self.finished >= self.total:
            return CampaignStatus.COMPLETED
        return self.status


@dataclass(frozen=True, slots=True)
class CampaignChange:
    """What an operator changes on a running campaign (None: unchanged). ``limits`` are the
    campaign's whole limits after the change (checked; merged with the current ones)."""

    priority: int | None = None
    weight: int | None = None
    limits: CampaignLimits | None = None


#: A campaign's items in chunks, as the store writes them; called again when the store
#: retries its transaction (the items are read afresh).
ItemChunks = Callable[[], Iterable[Sequence[CampaignItem]]]
