"""Provider quotas in the SQL store: one row per quota key holds its token bucket and its
concurrency limit's queue, and ``quota_slots`` the slots running steps hold. A take locks
the rows of its keys in sorted order (``FOR UPDATE`` on PostgreSQL; SQLite's writers are
serialised by ``BEGIN IMMEDIATE``), counts the live slots (deleting those that stopped
counting), asks :func:`flowyard.domain.quotas.decide`, and writes what it answered, in one
transaction: every worker on every machine shares the bucket and the slots."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import NotFound
from flowyard.domain.quotas import (
    CAMPAIGN_PREFIX,
    Bucket,
    Quota,
    QuotaState,
    SlotHolder,
    Slots,
    campaign_key,
    decide,
    full,
    observe_hold,
    slowed,
)
from flowyard.domain.statuses import StepStatus
from flowyard.store.audit import note_target
from flowyard.store.base import SqlBase
from flowyard.store.schema import quota_slots, quotas, steps


def _quota(row: Row[Any]) -> Quota:
    return Quota(row.key, row.tokens, row.per_s, row.burst, row.enabled, row.concurrency)


def _bucket(row: Row[Any]) -> Bucket:
    return Bucket(row.available, row.updated_at, row.paused_until, row.queue_until)


def _slots(row: Row[Any], in_flight: int) -> Slots:
    return Slots(in_flight, row.hold_s, row.slot_queue_until)


def _state(row: Row[Any], in_flight: int = 0) -> QuotaState:
    return QuotaState(_quota(row), _bucket(row), row.created_at, _slots(row, in_flight))


def _slot_held(now: datetime | None) -> sa.ColumnElement[bool]:
    """A slot counts while its step runs under the claim that took it (and, given ``now``,
    its lease is live): the step's completion, failure, cancel or timeout, or a worker
    that died (its lease lapses, another claim follows), frees it."""
    held = sa.and_(
        steps.c.status == StepStatus.RUNNING.value, steps.c.claims == quota_slots.c.claims
    )
    if now is not None:
        held = sa.and_(held, steps.c.lease_expires_at > now)
    return held


def _slot_rows(keys: Sequence[str]) -> sa.Select[Any]:
    """The slots of ``keys`` with what decides whether they still count."""
    return (
        sa.select(
            quota_slots.c.key,
            quota_slots.c.step_id,
            quota_slots.c.claims,
            quota_slots.c.acquired_at,
            steps.c.status,
            steps.c.claims.label("step_claims"),
            steps.c.lease_expires_at,
            steps.c.finished_at,
        )
        .select_from(quota_slots.outerjoin(steps, steps.c.id == quota_slots.c.step_id))
        .where(quota_slots.c.key.in_(keys))
    )


def _bucket_values(bucket: Bucket) -> dict[str, Any]:
    return {
        "available": bucket.available,
        "updated_at": bucket.updated_at,
        "paused_until": bucket.paused_until,
        "queue_until": bucket.queue_until,
    }


def campaign_item_rows(campaign_id: str) -> sa.ColumnElement[bool]:
    """The campaign's quota rows per concurrency key (``campaign:<id>:<digest>``): one
    range of the primary key."""
    whole = campaign_key(campaign_id)
    return sa.and_(quotas.c.key > whole + ":", quotas.c.key < whole + ";")


async def delete_quota_rows(conn: AsyncConnection, keys: Sequence[str]) -> int:
    """Delete quota rows with their slots (the foreign key cascades too; SQLite enforces it
    only with its pragma on); the rows deleted."""
    deleted = 0
    for i in range(0, len(keys), 500):
        chunk = sorted(keys)[i : i + 500]
        await conn.execute(quota_slots.delete().where(quota_slots.c.key.in_(chunk)))
        result = await conn.execute(quotas.delete().where(quotas.c.key.in_(chunk)))
        deleted += int(result.rowcount or 0)
    return deleted


def quota_row(quota: Quota, now: datetime) -> dict[str, Any]:
    """The ``quotas`` row of a new quota, its bucket full."""
    return {
        "key": quota.key,
        "tokens": quota.tokens,
        "per_s": quota.per_s,
        "burst": quota.burst,
        "enabled": quota.enabled,
        "concurrency": quota.concurrency,
        "created_at": now,
        **_bucket_values(full(quota, now)),
    }


class QuotaOps(SqlBase):
    """The ``quotas`` table. Admin writes take their audit entry; workers' takes none."""

    async def put_quota(
        self, quota: Quota, now: datetime, *, audit: AuditEntry | None = None
    ) -> QuotaState:
        """Create the quota with a full bucket, or change it (the bucket keeps its tokens,
        at most the new burst, and its pause)."""

        async def fn(conn: AsyncConnection) -> QuotaState:
            note_target(audit, "quota", quota.key)
            await conn.execute(self._insert_ignore(quotas).values(**quota_row(quota, now)))
            row = (
                await conn.execute(
                    sa.select(quotas).where(quotas.c.key == quota.key).with_for_update()
                )
            ).one()
            updated = (
                await conn.execute(
                    quotas.update()
                    .where(quotas.c.key == quota.key)
                    .values(
                        tokens=quota.tokens,
                        per_s=quota.per_s,
                        burst=quota.burst,
                        enabled=quota.enabled,
                        concurrency=quota.concurrency,
                        available=min(row.available, float(quota.burst)),
                    )
                    .returning(*quotas.c)
                )
            ).one()
            return _state(
                updated, (await self._in_flight(conn, [quota.key], now)).get(quota.key, 0)
            )

        return await self._tx(fn, audit=audit)

    async def _in_flight(
        self, conn: AsyncConnection, keys: Sequence[str] | None, now: datetime | None
    ) -> dict[str, int]:
        """Slots held per key (of ``keys``; None: every key)."""
        query = (
            sa.select(quota_slots.c.key, sa.func.count().label("n"))
            .select_from(quota_slots.join(steps, steps.c.id == quota_slots.c.step_id))
            .where(_slot_held(now))
            .group_by(quota_slots.c.key)
        )
        if keys is not None:
            query = query.where(quota_slots.c.key.in_(keys))
        return {r.key: r.n for r in await conn.execute(query)}

    async def get_quota(self, key: str, *, now: datetime | None = None) -> QuotaState:
        """A quota, its bucket and its slots held (NotFound)."""

        async def fn(conn: AsyncConnection) -> QuotaState:
            row = (await conn.execute(sa.select(quotas).where(quotas.c.key == key))).first()
            if row is None:
                raise NotFound(f"quota {key!r} not found")
            return _state(row, (await self._in_flight(conn, [key], now)).get(key, 0))

        return await self._tx(fn, write=False)

    async def find_quota(self, key: str, *, now: datetime | None = None) -> QuotaState | None:
        """A quota, its bucket and its slots held; None when ``key`` has none."""
        try:
            return await self.get_quota(key, now=now)
        except NotFound:
            return None

    async def list_quotas(self, *, now: datetime | None = None) -> list[QuotaState]:
        """Every quota, by key (an installation has a handful: no pages), but for campaigns'
        quotas per concurrency key (one campaign may have thousands; read one by its key)."""

        async def fn(conn: AsyncConnection) -> list[QuotaState]:
            rows = list(
                await conn.execute(
                    sa.select(quotas)
                    .where(quotas.c.key.not_like(CAMPAIGN_PREFIX + "%:%"))
                    .order_by(quotas.c.key)
                )
            )
            held = await self._in_flight(conn, None, now) if rows else {}
            return [_state(r, held.get(r.key, 0)) for r in rows]

        return await self._tx(fn, write=False)

    async def delete_quota(self, key: str, *, audit: AuditEntry | None = None) -> None:
        """Delete a quota (NotFound)."""

        async def fn(conn: AsyncConnection) -> None:
            note_target(audit, "quota", key)
            # The foreign key cascades too; SQLite enforces it only with its pragma on.
            await conn.execute(quota_slots.delete().where(quota_slots.c.key == key))
            deleted = await conn.execute(quotas.delete().where(quotas.c.key == key))
            if deleted.rowcount == 0:
                raise NotFound(f"quota {key!r} not found")

        await self._tx(fn, audit=audit)

    async def quota_keys(self) -> frozenset[str]:
        """The keys of the enabled quotas, but for campaigns' quotas per concurrency key
        (a run names its own; a campaign may have thousands)."""

        async def fn(conn: AsyncConnection) -> frozenset[str]:
            rows = await conn.execute(
                sa.select(quotas.c.key).where(
                    quotas.c.enabled, quotas.c.key.not_like(CAMPAIGN_PREFIX + "%:%")
                )
            )
            return frozenset(r.key for r in rows)

        return await self._tx(fn, write=False)

    async def _lock_quotas(self, conn: AsyncConnection, keys: Sequence[str]) -> list[Row[Any]]:
        """The rows of ``keys``, locked in key order (two takes of overlapping keys lock
        in the same order, so they queue instead of deadlocking)."""
        result = await conn.execute(
            sa.select(quotas)
            .where(quotas.c.key.in_(sorted(set(keys))))
            .order_by(quotas.c.key)
            .with_for_update()
        )
        return list(result)

    async def _held_slots(
        self, conn: AsyncConnection, rows: list[Row[Any]], now: datetime
    ) -> dict[str, Slots]:
        """The slots of the concurrency-limited ``rows`` now: those still held counted,
        those that stopped counting deleted, their hold times folded into the average."""
        limited = {r.key: r for r in rows if r.concurrency is not None and r.enabled}
        if not limited:
            return {}
        counts = dict.fromkeys(limited, 0)
        samples: dict[str, list[float]] = {k: [] for k in limited}
        gone: list[tuple[str, int]] = []
        for slot in await conn.execute(_slot_rows(sorted(limited))):
            same_claim = slot.step_claims == slot.claims
            if (
                same_claim
                and slot.status == StepStatus.RUNNING.value
                and slot.lease_expires_at is not None
                and slot.lease_expires_at > now
            ):
                counts[slot.key] += 1
                continue
            gone.append((slot.key, slot.step_id))
            if same_claim and slot.finished_at is not None:
                samples[slot.key].append((slot.finished_at - slot.acquired_at).total_seconds())
        if gone:
            await conn.execute(
                quota_slots.delete().where(
                    sa.tuple_(quota_slots.c.key, quota_slots.c.step_id).in_(gone)
                )
            )
        return {
            k: Slots(counts[k], observe_hold(r.hold_s, samples[k]), r.slot_queue_until)
            for k, r in limited.items()
        }

    async def take_quota(
        self, keys: Sequence[str], now: datetime, *, holder: SlotHolder | None = None
    ) -> datetime | None:
        """A token (rates) and a slot (concurrency limits, held by ``holder``) of each of
        ``keys``, all or none: None when granted, else when to try again (the refused
        quotas' queues move: the next refused step gets a later time)."""
        if not keys:
            return None

        async def fn(conn: AsyncConnection) -> datetime | None:
            rows = await self._lock_quotas(conn, keys)
            if holder is None:
                # No step to hold a slot: only the rates apply.
                rows = [r for r in rows if r.tokens is not None]
                held: dict[str, Slots] = {}
            else:
                held = await self._held_slots(conn, rows, now)
            decision = decide(
                {r.key: (_quota(r), _bucket(r), held.get(r.key, Slots())) for r in rows}, now
            )
            for key, bucket in sorted(decision.buckets.items()):
                await conn.execute(
                    quotas.update().where(quotas.c.key == key).values(**_bucket_values(bucket))
                )
            for key, seen in sorted(held.items()):
                slots = decision.slots.get(key, seen)
                await conn.execute(
                    quotas.update()
                    .where(quotas.c.key == key)
                    .values(hold_s=seen.hold_s, slot_queue_until=slots.queue_until)
                )
                if decision.granted and holder is not None:
                    await conn.execute(
                        quota_slots.insert().values(
                            key=key,
                            step_id=holder.step_id,
                            claims=holder.claims,
                            acquired_at=now,
                        )
                    )
            return decision.retry_at

        return await self._tx(fn)

    async def slow_quota(self, keys: Sequence[str], until: datetime) -> None:
        """Pause ``keys``' buckets until ``until`` and empty them."""
        if not keys:
            return

        async def fn(conn: AsyncConnection) -> None:
            for row in await self._lock_quotas(conn, keys):
                bucket = slowed(_bucket(row), until)
                await conn.execute(
                    quotas.update().where(quotas.c.key == row.key).values(**_bucket_values(bucket))
                )

        await self._tx(fn)
