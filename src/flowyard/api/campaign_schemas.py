"""The public models of the campaigns API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flowyard.domain.campaigns import CampaignRecord
from flowyard.domain.priorities import (
    BULK,
    DEFAULT_WEIGHT,
    INTERACTIVE,
    MAX_PRIORITY,
    MAX_WEIGHT,
    MIN_PRIORITY,
)
from flowyard.domain.quotas import MAX_CONCURRENCY

#: The window the rate is measured over.
RATE_WINDOW_S = 60.0

CREATE_EXAMPLE: dict[str, Any] = {
    "workflow": "mailer",
    "name": "spring",
    "item_key": "{{ item.email }}",
    "items": [{"email": "ada@example.com"}, {"email": "bob@example.com"}],
}
CAMPAIGN_EXAMPLE: dict[str, Any] = {
    "id": "cmp_01JD0000000000000000000000",
    "name": "spring",
    "workflow_id": "wf_01JD0000000000000000000000",
    "workflow_version": 3,
    "status": "running",
    "item_key": "{{ item.email }}",
    "priority": 3,
    "weight": 1,
    "limits": {"concurrency": 50, "rate": None, "key_concurrency": None, "key_rate": None},
    "total": 50000,
    "counts": {"pending": 20000, "running": 40, "succeeded": 29950, "failed": 10},
    "finished": 29960,
    "pruned": 0,
    "rate_per_s": 1650.0,
    "eta_s": 12.1,
    "created_by": "user:ada",
    "created_at": "2026-12-01T10:00:00Z",
    "updated_at": "2026-12-01T10:00:00Z",
}


class CampaignLimitsIn(BaseModel):
    """A campaign's limits, shared by every worker (quotas ``campaign:<id>`` and one per
    concurrency key): steps of its runs in flight, and step starts per window."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int | None = Field(None, ge=1, le=MAX_CONCURRENCY)
    rate: str | None = Field(None, max_length=100, description="`10/s`, `100 per minute`")
    key_concurrency: int | None = Field(
        None, ge=1, le=MAX_CONCURRENCY, description="The same per concurrency key"
    )
    key_rate: str | None = Field(None, max_length=100, description="The same per key")


class CampaignLimitsPatch(CampaignLimitsIn):
    """A JSON merge patch of a campaign's limits: a member given replaces that limit, a
    member given null removes it, a member left out keeps it."""


PATCH_EXAMPLE: dict[str, Any] = {"priority": 5, "weight": 3, "limits": {"rate": "20/s"}}


class CampaignPatch(BaseModel):
    """``PATCH /campaigns/{id}`` (a JSON merge patch): the priority, the weight and the limits
    of a running campaign; what is left out is kept."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [PATCH_EXAMPLE]})

    priority: int | None = Field(
        None,
        ge=MIN_PRIORITY,
        le=MAX_PRIORITY,
        description="The new priority of its unfinished runs' steps and of those to come",
    )
    weight: int | None = Field(
        None, ge=1, le=MAX_WEIGHT, description="Its new share among the campaigns of its priority"
    )
    limits: CampaignLimitsPatch | None = Field(
        None, description="Limits to set (a value) or remove (null); the others are kept"
    )


class CampaignCreate(BaseModel):
    """``POST /campaigns`` with a JSON body: the items inline."""

    model_config = ConfigDict(json_schema_extra={"examples": [CREATE_EXAMPLE]})

    workflow: str = Field(min_length=1, max_length=200, description="Workflow id or name")
    name: str = Field(min_length=1, max_length=200, description="Unique within the workflow")
    items: list[Any] = Field(description="One run per item; the item is the run's input")
    item_key: str | None = Field(
        None,
        max_length=500,
        description="Template of each run's correlation key: `{{ item.email }}`; unique "
        "within the campaign",
    )
    vars: dict[str, Any] | None = Field(None, description="Vars of every run")
    priority: int = Field(
        BULK,
        ge=MIN_PRIORITY,
        le=MAX_PRIORITY,
        description="The priority of its runs' steps in the claim (higher first); runs "
        f"started one at a time have {INTERACTIVE}, campaigns {BULK} unless they say",
    )
    weight: int = Field(
        DEFAULT_WEIGHT,
        ge=1,
        le=MAX_WEIGHT,
        description="Its share of the workers among the campaigns of its priority",
    )
    limits: CampaignLimitsIn | None = Field(None, description="Limits shared by every worker")
    concurrency_key: str | None = Field(
        None,
        max_length=500,
        description="Template of each item's concurrency key (`{{ item.tenant }}`): the "
        "key the `key_*` limits apply to",
    )


class CampaignPublic(BaseModel):
    """A campaign and its progress (counts read from counters, not from the runs)."""

    model_config = ConfigDict(json_schema_extra={"examples": [CAMPAIGN_EXAMPLE]})

    id: str
    name: str
    workflow_id: str
    workflow_version: int
    status: str
    item_key: str | None
    priority: int
    weight: int
    concurrency_key: str | None = None
    limits: dict[str, Any] = Field(
        default_factory=dict,
        description="Its limits as last set (null: none): `concurrency`, `rate`, "
        "`key_concurrency`, `key_rate`",
    )
    total: int
    counts: dict[str, int]
    finished: int
    pruned: int = Field(
        description="Runs deleted by retention: still counted in counts, no longer listed"
    )
    rate_per_s: float = Field(description="Runs ended per second over the last minute")
    eta_s: float | None = Field(description="Seconds until every run ended at that rate")
    created_by: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: CampaignRecord, now: datetime) -> CampaignPublic:
        """From a store record read at ``now``."""
        age = max((now - record.created_at).total_seconds(), 1.0)
        rate = record.finished_last_minute / min(age, RATE_WINDOW_S)
        left = record.total - record.finished
        return cls(
            id=record.id,
            name=record.name,
            workflow_id=record.workflow_id,
            workflow_version=record.workflow_version,
            status=record.shown_status.value,
            item_key=record.item_key,
            priority=record.priority,
            weight=record.weight,
            concurrency_key=record.concurrency_key,
            limits=record.limits.as_json(),
            total=record.total,
            counts={s.value: n for s, n in record.counts.items()},
            finished=record.finished,
            pruned=record.pruned,
            rate_per_s=round(rate, 3),
            eta_s=round(left / rate, 1) if rate > 0 and left > 0 else (0.0 if left <= 0 else None),
            created_by=record.created_by,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class CampaignActionResult(BaseModel):
    """What a whole-campaign action did."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"campaign": CAMPAIGN_EXAMPLE, "moved": 20040, "skipped": 3}]
        }
    )

    campaign: CampaignPublic
    moved: int = Field(description="Runs moved by this call")
    skipped: int = Field(description="Runs that had moved on by themselves meanwhile")
