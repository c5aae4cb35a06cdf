"""Provider quotas in the SQL store: one row per quota key holds its token bucket; a take
locks the rows of its keys in sorted order (``FOR UPDATE`` on PostgreSQL; SQLite's writers
are serialised by ``BEGIN IMMEDIATE``), asks :func:`flowyard.domain.quotas.take_all`, and
writes what it answered, in one transaction: every worker on every machine shares the
bucket."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import NotFound
from flowyard.domain.quotas import Bucket, Quota, QuotaState, full, slowed, take_all
from flowyard.store.audit import note_target
from flowyard.store.base import SqlBase
from flowyard.store.schema import quotas


def _quota(row: Row[Any]) -> Quota:
    return Quota(row.key, row.tokens, row.per_s, row.burst, row.enabled)


def _bucket(row: Row[Any]) -> Bucket:
    return Bucket(row.available, row.updated_at, row.paused_until, row.queue_until)


def _state(row: Row[Any]) -> QuotaState:
    return QuotaState(_quota(row), _bucket(row), row.created_at)


def _bucket_values(bucket: Bucket) -> dict[str, Any]:
    return {
        "available": bucket.available,
        "updated_at": bucket.updated_at,
        "paused_until": bucket.paused_until,
        "queue_until": bucket.queue_until,
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
            await conn.execute(
                self._insert_ignore(quotas).values(
                    key=quota.key,
                    tokens=quota.tokens,
                    per_s=quota.per_s,
                    burst=quota.burst,
                    enabled=quota.enabled,
                    created_at=now,
                    **_bucket_values(full(quota, now)),
                )
            )
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
                        available=min(row.available, float(quota.burst)),
                    )
                    .returning(*quotas.c)
                )
            ).one()
            return _state(updated)

        return await self._tx(fn, audit=audit)

    async def get_quota(self, key: str) -> QuotaState:
        """A quota and its bucket (NotFound)."""

        async def fn(conn: AsyncConnection) -> QuotaState:
            row = (await conn.execute(sa.select(quotas).where(quotas.c.key == key))).first()
            if row is None:
                raise NotFound(f"quota {key!r} not found")
            return _state(row)

        return await self._tx(fn, write=False)

    async def list_quotas(self) -> list[QuotaState]:
        """Every quota, by key (an installation has a handful: no pages)."""

        async def fn(conn: AsyncConnection) -> list[QuotaState]:
            rows = await conn.execute(sa.select(quotas).order_by(quotas.c.key))
            return [_state(r) for r in rows]

        return await self._tx(fn, write=False)

    async def delete_quota(self, key: str, *, audit: AuditEntry | None = None) -> None:
        """Delete a quota (NotFound)."""

        async def fn(conn: AsyncConnection) -> None:
            note_target(audit, "quota", key)
            deleted = await conn.execute(quotas.delete().where(quotas.c.key == key))
            if deleted.rowcount == 0:
                raise NotFound(f"quota {key!r} not found")

        await self._tx(fn, audit=audit)

    async def quota_keys(self) -> frozenset[str]:
        """The keys of the enabled quotas."""

        async def fn(conn: AsyncConnection) -> frozenset[str]:
            rows = await conn.execute(sa.select(quotas.c.key).where(quotas.c.enabled))
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

    async def take_quota(self, keys: Sequence[str], now: datetime) -> datetime | None:
        """A token from each of ``keys``, all or none: None when granted, else when to try
        again (the refused buckets' queues move: the next refused step gets a later slot)."""
        if not keys:
            return None

        async def fn(conn: AsyncConnection) -> datetime | None:
            rows = await self._lock_quotas(conn, keys)
            changed, retry_at = take_all({r.key: (_quota(r), _bucket(r)) for r in rows}, now)
            for key, bucket in sorted(changed.items()):
                await conn.execute(
                    quotas.update().where(quotas.c.key == key).values(**_bucket_values(bucket))
                )
            return retry_at

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
