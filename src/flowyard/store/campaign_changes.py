"""Steering a running campaign in the SQL store: its priority, weight and limits changed
(``PATCH /campaigns/{id}``), the change carried to its runs and their unfinished steps and to
its quota rows per concurrency key by bounded chunks, each its own short transaction; and the
quota rows the pruner deleted when the campaign ended (``store/retention.py``) restored for
a retry.

A chunk of the priority change locks its runs (in id order, like every writer of runs: run
rows before step rows), so a completion either committed before it (its new steps are in
the chunk's update) or reads the run's new priority after it. The steps updated are every
unfinished one (scheduled, retrying, waiting, running; held or not): a running step's
priority is what its retries, its map branches and its child runs inherit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.campaigns import (
    CampaignChange,
    CampaignLimits,
    CampaignRecord,
    CampaignStatus,
)
from flowyard.domain.errors import Conflict, NotFound
from flowyard.domain.quotas import Quota, campaign_key
from flowyard.domain.statuses import RunStatus
from flowyard.store.audit import note_target
from flowyard.store.campaigns import CampaignOps
from flowyard.store.quotas import campaign_item_rows, quota_row
from flowyard.store.rows import ACTIVE, chunks
from flowyard.store.schema import campaigns, quota_slots, quotas, runs, steps

#: Sub-workflow nesting followed below a campaign's run (as retention does).
MAX_DEPTH = 64
_IN = 500  # ids per IN (...) list


def _limit_values(concurrency: int | None, rate: tuple[int, float] | None) -> dict[str, Any]:
    """The new limits of a quota row; its burst and its bucket's tokens are kept as far as
    the new rate allows (as ``put_quota`` keeps them)."""
    tokens, per_s = rate or (None, None)
    burst: Any = (
        1 if tokens is None else sa.case((quotas.c.burst > tokens, tokens), else_=quotas.c.burst)
    )
    return {
        "tokens": tokens,
        "per_s": per_s,
        "concurrency": concurrency,
        "burst": burst,
        "available": sa.case((quotas.c.available > burst, burst), else_=quotas.c.available),
    }


class CampaignChangeOps(CampaignOps):
    """Change a running campaign; restore its quota rows."""

    async def update_campaign(
        self,
        campaign_id: str,
        change: CampaignChange,
        *,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> CampaignRecord:
        """Record the change on the campaign (and its whole-campaign quota row) in one
        transaction: NotFound; Conflict once every run has ended or it was cancelled. Its
        runs and their steps, and its quota rows per key, follow by chunks
        (:meth:`reprioritize_campaign`, :meth:`relimit_campaign_keys`)."""

        async def fn(conn: AsyncConnection) -> CampaignRecord:
            locked = await conn.execute(
                sa.select(campaigns.c.id).where(campaigns.c.id == campaign_id).with_for_update()
            )
            if locked.first() is None:
                raise NotFound(f"campaign {campaign_id!r} not found")
            current = await self._read_campaign(conn, campaign_id, now)
            if current.status == CampaignStatus.CANCELLED or current.ended:
                raise Conflict(
                    f"campaign {campaign_id} has ended: there is nothing left to change",
                    detail={"status": current.shown_status.value},
                )
            note_target(audit, "campaign", campaign_id)
            values: dict[str, Any] = {"updated_at": now}
            if change.priority is not None:
                values["priority"] = change.priority
            if change.weight is not None:
                values["weight"] = change.weight
            if change.limits is not None:
                limits = change.limits
                values["limits"] = limits.as_json() if limits.whole or limits.per_key else None
                await self._limit_whole(conn, campaign_id, limits, now)
            await conn.execute(
                campaigns.update().where(campaigns.c.id == campaign_id).values(**values)
            )
            return await self._read_campaign(conn, campaign_id, now)

        return await self._tx(fn, audit=audit)

    async def _limit_whole(
        self, conn: AsyncConnection, campaign_id: str, limits: CampaignLimits, now: datetime
    ) -> None:
        """The whole campaign's quota row after the change: made, changed or deleted."""
        key = campaign_key(campaign_id)
        if not limits.whole:
            await conn.execute(quota_slots.delete().where(quota_slots.c.key == key))
            await conn.execute(quotas.delete().where(quotas.c.key == key))
            return
        tokens, per_s = limits.rate or (None, None)
        fresh = Quota(key, tokens, per_s, concurrency=limits.concurrency)
        await conn.execute(self._insert_ignore(quotas).values(**quota_row(fresh, now)))
        await conn.execute(
            quotas.update()
            .where(quotas.c.key == key)
            .values(**_limit_values(limits.concurrency, limits.rate))
        )

    async def reprioritize_campaign(
        self, campaign_id: str, priority: int, *, after: str | None, limit: int
    ) -> tuple[str | None, int]:
        """One chunk of a priority change: up to ``limit`` unfinished runs of the campaign
        after the id ``after``, with their child runs, take ``priority``, and so do their
        unfinished steps. Returns the cursor of the next chunk (None: done) and the steps
        changed."""

        async def fn(conn: AsyncConnection) -> tuple[str | None, int]:
            page = [
                row.id
                for row in await conn.execute(
                    sa.select(runs.c.id)
                    .where(
                        runs.c.campaign_id == campaign_id,
                        runs.c.finished_at.is_(None),
                        runs.c.id > (after or ""),
                    )
                    .order_by(runs.c.id)
                    .limit(limit)
                )
            ]
            if not page:
                return None, 0
            family = sorted(set(page) | await _descendants(conn, page))
            for chunk in chunks(family, _IN):
                await conn.execute(
                    sa.select(runs.c.id)
                    .where(runs.c.id.in_(chunk))
                    .order_by(runs.c.id)
                    .with_for_update(key_share=True)
                )
            moved = 0
            for chunk in chunks(family, _IN):
                await conn.execute(
                    runs.update()
                    .where(runs.c.id.in_(chunk), runs.c.priority != priority)
                    .values(priority=priority)
                )
                done = await conn.execute(
                    steps.update()
                    .where(
                        steps.c.run_id.in_(chunk),
                        steps.c.status.in_(ACTIVE),
                        steps.c.priority != priority,
                    )
                    .values(priority=priority)
                )
                moved += int(done.rowcount or 0)
            return (page[-1] if len(page) == limit else None), moved

        return await self._tx(fn)

    async def relimit_campaign_keys(
        self, campaign_id: str, limits: CampaignLimits, *, after: str | None, limit: int
    ) -> str | None:
        """One chunk of a change of the limits per concurrency key: up to ``limit`` of the
        campaign's quota rows per key after the key ``after`` take them. Returns the cursor
        of the next chunk (None: done)."""

        async def fn(conn: AsyncConnection) -> str | None:
            query = sa.select(quotas.c.key).where(campaign_item_rows(campaign_id))
            if after is not None:
                query = query.where(quotas.c.key > after)
            keys = list((await conn.execute(query.order_by(quotas.c.key).limit(limit))).scalars())
            if not keys:
                return None
            await conn.execute(
                quotas.update()
                .where(quotas.c.key.in_(keys))
                .values(**_limit_values(limits.key_concurrency, limits.key_rate))
            )
            return keys[-1] if len(keys) == limit else None

        return await self._tx(fn)

    async def restore_campaign_limits(self, campaign_id: str, *, now: datetime) -> int:
        """The quota rows of the campaign's limits made again where they are missing (the
        pruner deleted them when its runs had all ended; a retry-failed brings runs back):
        the whole campaign's, and one per concurrency key of its failed runs. Returns the
        rows made."""

        async def fn(conn: AsyncConnection) -> int:
            row = (
                await conn.execute(
                    sa.select(campaigns.c.limits).where(campaigns.c.id == campaign_id)
                )
            ).first()
            if row is None:
                raise NotFound(f"campaign {campaign_id!r} not found")
            limits = CampaignLimits.from_json(row.limits)
            keys: set[str] = set()
            if limits.per_key:
                found = await conn.execute(
                    sa.select(runs.c.limit_key)
                    .where(
                        runs.c.campaign_id == campaign_id,
                        runs.c.status.in_([RunStatus.FAILED.value, RunStatus.TIMED_OUT.value]),
                        runs.c.limit_key.is_not(None),
                    )
                    .distinct()
                )
                keys = {key for (key,) in found}
            before = await _quota_rows(conn, campaign_id)
            await self._limit(conn, limits, campaign_id, keys, now)
            return await _quota_rows(conn, campaign_id) - before

        return await self._tx(fn)


async def _descendants(conn: AsyncConnection, roots: Sequence[str]) -> set[str]:
    """The unfinished child runs under ``roots``, however deep (to :data:`MAX_DEPTH`)."""
    found: set[str] = set()
    level = list(roots)
    for _ in range(MAX_DEPTH):
        children: list[str] = []
        for chunk in chunks(sorted(level), _IN):
            rows = await conn.execute(
                sa.select(runs.c.id).where(
                    runs.c.parent_run_id.in_(chunk), runs.c.finished_at.is_(None)
                )
            )
            children.extend(row.id for row in rows)
        found.update(children)
        if not children:
            break
        level = children
    return found


async def _quota_rows(conn: AsyncConnection, campaign_id: str) -> int:
    n = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(quotas)
        .where(sa.or_(quotas.c.key == campaign_key(campaign_id), campaign_item_rows(campaign_id)))
    )
    return int(n or 0)
