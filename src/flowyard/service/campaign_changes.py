"""Steering a running campaign: its priority, weight and limits changed while it drains
(``PATCH /campaigns/{id}``, ``flowyard campaigns set``).

The change is recorded on the campaign first, in one transaction with its audit entry (the
weight then applies at the next claim: the claim reads it; the whole campaign's limits at
the workers' next quota take). The new priority then reaches its unfinished runs and their
unfinished steps, and the limits per concurrency key its quota rows per key, by chunks of
:data:`CHUNK`, each its own short transaction: nothing holds 50,000 rows locked. Steps
enqueued after a chunk take the run's new priority. A change interrupted half-way (the
process stopped) is finished by sending it again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowyard.domain.auth import AuditEntry
from flowyard.domain.campaigns import CampaignChange, CampaignLimits, CampaignRecord
from flowyard.domain.errors import InvalidInput, Problem
from flowyard.domain.priorities import check_priority, check_weight
from flowyard.service.campaigns import CampaignUseCases, LimitsSpec, checked_limits

#: Runs (with their steps) or quota rows per key changed per transaction.
CHUNK = 2000
_LIMIT_FIELDS = ("concurrency", "rate", "key_concurrency", "key_rate")


@dataclass(frozen=True, slots=True)
class CampaignChanged:
    """A campaign after a change, and how many unfinished steps took its new priority."""

    campaign: CampaignRecord
    steps: int


class CampaignChangeUseCases(CampaignUseCases):
    """Change a running campaign's priority, weight and limits."""

    async def update_campaign(
        self,
        campaign_id: str,
        *,
        priority: int | None = None,
        weight: int | None = None,
        limits: Mapping[str, Any] | None = None,
        audit: AuditEntry | None = None,
    ) -> CampaignChanged:
        """Change what is given (None: kept); ``limits`` is a JSON merge patch of the
        campaign's limits (a member given null removes that limit). InvalidInput naming
        each bad field, NotFound, Conflict for a campaign that has ended or was cancelled."""
        problems: list[Problem] = []
        for pointer, check, value in (
            ("/priority", check_priority, priority),
            ("/weight", check_weight, weight),
        ):
            if value is not None:
                try:
                    check(value)
                except ValueError as exc:
                    problems.append(Problem(pointer, str(exc), "range"))
        if problems:
            raise InvalidInput("the campaign change is invalid", problems)
        campaign = await self.store.get_campaign(campaign_id, now=self.clock())
        new_limits = None if limits is None else _merged(campaign, limits)
        change = CampaignChange(priority=priority, weight=weight, limits=new_limits)
        changed = await self.store.update_campaign(
            campaign.id, change, now=self.clock(), audit=audit
        )
        moved = 0
        if priority is not None:
            after: str | None = None
            while True:
                after, n = await self.store.reprioritize_campaign(
                    campaign.id, priority, after=after, limit=CHUNK
                )
                moved += n
                if after is None:
                    break
        if new_limits is not None and new_limits.per_key:
            key: str | None = None
            while True:
                key = await self.store.relimit_campaign_keys(
                    campaign.id, new_limits, after=key, limit=CHUNK
                )
                if key is None:
                    break
        if moved:
            self._enqueued()  # steps may have moved ahead of others: wake the workers
        return CampaignChanged(changed, moved)


def _merged(campaign: CampaignRecord, patch: Mapping[str, Any]) -> CampaignLimits:
    """The campaign's limits with the merge patch applied, checked as a start checks them."""
    unknown = sorted(set(patch) - set(_LIMIT_FIELDS))
    if unknown:
        raise InvalidInput(
            "unknown limits",
            [Problem(f"/limits/{name}", "not a limit", "extra_forbidden") for name in unknown],
        )
    merged = {**campaign.limits.as_json(), **patch}
    if campaign.concurrency_key is None:
        per_key = [f for f in ("key_concurrency", "key_rate") if merged[f] is not None]
        if per_key:
            raise InvalidInput(
                "the campaign has no concurrency_key: limits per key need one from its start",
                [
                    Problem(f"/limits/{f}", "the campaign has no concurrency_key", "required")
                    for f in per_key
                ],
            )
    return checked_limits(LimitsSpec(**merged), campaign.concurrency_key)
