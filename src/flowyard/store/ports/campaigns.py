"""Campaigns: batches of runs started together and their counters by run status."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from flowyard.domain.auth import AuditEntry
from flowyard.domain.campaigns import (
    CampaignChange,
    CampaignLimits,
    CampaignRecord,
    CampaignStatus,
    ItemChunks,
    NewCampaign,
)
from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import RunRecord
from flowyard.domain.statuses import RunStatus


class CampaignStore(Protocol):
    """Create campaigns with their runs, read them with their counts, page their runs."""

    async def start_campaign(
        self,
        new: NewCampaign,
        items: ItemChunks,
        now: datetime,
        *,
        audit: AuditEntry | None = None,
    ) -> tuple[CampaignRecord, bool]:
        """Create the campaign and one pending run per item in one transaction (all or
        nothing). The same campaign again (workflow and name, or idempotency key) with the
        same items' checksum is answered as it is (False); other items are a Conflict."""
        ...

    async def get_campaign(self, campaign_id: str, *, now: datetime) -> CampaignRecord:
        """A campaign with its counts by run status and its runs ended in the last minute
        (NotFound)."""
        ...

    async def list_campaigns(
        self,
        *,
        workflow_id: WorkflowId | None = None,
        limit: int = 50,
        before: str | None = None,
        now: datetime,
    ) -> list[CampaignRecord]:
        """Campaigns newest first, before an id cursor, optionally of one workflow."""
        ...

    async def list_campaign_runs(
        self,
        campaign_id: str,
        *,
        statuses: Sequence[RunStatus] = (),
        correlation_key: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """A campaign's runs in id order after an id cursor, optionally only in
        ``statuses`` or holding ``correlation_key``."""
        ...

    async def set_campaign_status(
        self,
        campaign_id: str,
        status: CampaignStatus,
        *,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> CampaignRecord:
        """Record a campaign's status (NotFound)."""
        ...

    async def count_campaign_runs(self, campaign_id: str) -> dict[RunStatus, int]:
        """The campaign's runs by status, counted over the runs (checks, not progress)."""
        ...

    async def update_campaign(
        self,
        campaign_id: str,
        change: CampaignChange,
        *,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> CampaignRecord:
        """Record a change of the campaign's priority, weight or limits (its row and its
        whole-campaign quota row) in one transaction: NotFound; Conflict once every run has
        ended or it was cancelled. Its runs and quota rows per key follow by chunks."""
        ...

    async def reprioritize_campaign(
        self, campaign_id: str, priority: int, *, after: str | None, limit: int
    ) -> tuple[str | None, int]:
        """One short transaction: up to ``limit`` unfinished runs of the campaign after the
        id ``after`` (with their child runs) and their unfinished steps take ``priority``.
        Returns the next cursor (None: done) and the steps changed."""
        ...

    async def relimit_campaign_keys(
        self, campaign_id: str, limits: CampaignLimits, *, after: str | None, limit: int
    ) -> str | None:
        """One short transaction: up to ``limit`` of the campaign's quota rows per
        concurrency key after the key ``after`` take ``limits``' per-key values. Returns the
        next cursor (None: done)."""
        ...

    async def restore_campaign_limits(self, campaign_id: str, *, now: datetime) -> int:
        """Make the quota rows of the campaign's stored limits that are missing (for its
        failed runs' concurrency keys); the rows made."""
        ...
