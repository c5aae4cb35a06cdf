"""Campaigns in the SQL store: create one and start its runs in one transaction (bulk rows:
``COPY`` on PostgreSQL), read it with its counters, page its runs, change its status.

The counters (``campaign_counts``) are kept by the trigger of migration 0015 whenever a run's
status changes; this module only sets them when it creates the runs (all ``pending``)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.auth import AuditEntry
from flowyard.domain.campaigns import (
    CampaignItem,
    CampaignLimits,
    CampaignRecord,
    CampaignStatus,
    ItemChunks,
    NewCampaign,
)
from flowyard.domain.errors import Conflict, NotFound
from flowyard.domain.ids import WorkflowId, new_run_ids, new_ulid
from flowyard.domain.quotas import Quota, campaign_item_key, campaign_key
from flowyard.domain.records import RunRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store.audit import note_target
from flowyard.store.base import SqlBase
from flowyard.store.correlation import check_unique_keys
from flowyard.store.quotas import quota_row
from flowyard.store.rows import chunks, run_record
from flowyard.store.schema import (
    campaign_counts,
    campaigns,
    quotas,
    runs,
    workflows,
)

#: Columns each bulk-started row sets (the rest take their defaults).
RUN_COLUMNS = (
    "id",
    "workflow_id",
    "workflow_version",
    "status",
    "input",
    "vars",
    "campaign_id",
    "deadline_at",
    "correlation_key",
    "correlation_unique",
    "priority",
    "lane",
    "limit_key",
    "created_at",
    "updated_at",
)
STEP_COLUMNS = (
    "run_id",
    "node_id",
    "node_type",
    "branch",
    "iteration",
    "status",
    "attempt",
    "priority",
    "lane",
    "available_at",
    "claims",
    "recoveries",
    "held",
    "created_at",
)

#: A campaign's runs from ``[id, input, correlation key, limit key]`` rows (SQLite).
_CAMPAIGN_RUNS = sa.text(
    f"INSERT INTO runs ({', '.join(RUN_COLUMNS)})"
    " SELECT json_extract(value, '$[0]'), :workflow_id, :version, :status,"
    " json_extract(value, '$[1]'), :vars, :campaign_id, :deadline_at,"
    " json_extract(value, '$[2]'), :unique AND json_extract(value, '$[2]') IS NOT NULL,"
    " :priority, :campaign_id, json_extract(value, '$[3]'), :now, :now"
    " FROM json_each(:rows) ORDER BY key"
)
#: A campaign's first steps from its runs' ids (SQLite; PostgreSQL copies them).
_FIRST_STEPS = sa.text(
    f"INSERT INTO steps ({', '.join(STEP_COLUMNS)})"
    " SELECT value, :node_id, :node_type, '', 0, :status, 0, :priority, :lane, :now,"
    " 0, 0, 0, :now FROM json_each(:ids) ORDER BY key"
)


def _sqlite_time(value: datetime) -> str:
    """A time as SQLAlchemy's SQLite ``DateTime`` stores it (what ``UTCDateTime`` binds):
    naive UTC text that orders like the instants."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class CampaignOps(SqlBase):
    """Create, read and page campaigns and their runs."""

    #: Stripes of the counters this dialect's trigger writes (PostgreSQL overrides).
    count_stripes = 1

    async def start_campaign(
        self,
        new: NewCampaign,
        items: ItemChunks,
        now: datetime,
        *,
        audit: AuditEntry | None = None,
    ) -> tuple[CampaignRecord, bool]:
        """Create the campaign and one run per item (with its first step; no ``run.created``
        event, decision 0042) in one transaction: all of them or nothing. A campaign of the
        same workflow and name (or idempotency key) is answered as it is (False) when its
        items' checksum is the same, and refused (Conflict) otherwise."""
        now = now.astimezone(UTC)

        async def fn(conn: AsyncConnection) -> tuple[CampaignRecord, bool]:
            if (
                await conn.scalar(
                    sa.select(workflows.c.id).where(workflows.c.id == new.workflow_id)
                )
                is None
            ):
                raise NotFound(f"workflow {new.workflow_id!r} not found")
            found = await self._existing(conn, new, now)
            if found is not None:
                return found, False
            campaign_id = "cmp_" + new_ulid()
            await conn.execute(
                campaigns.insert().values(
                    id=campaign_id,
                    workflow_id=new.workflow_id,
                    workflow_version=new.workflow_version,
                    name=new.name,
                    status=CampaignStatus.RUNNING.value,
                    item_key=new.item_key,
                    idempotency_key=new.idempotency_key,
                    checksum=new.checksum,
                    total=new.total,
                    created_by=new.created_by,
                    created_at=now,
                    updated_at=now,
                    priority=new.priority,
                    weight=new.weight,
                    concurrency_key=new.concurrency_key,
                    limits=new.limits.as_json() if new.limits.whole or new.limits.per_key else None,
                )
            )
            await conn.execute(
                campaign_counts.insert(),
                [
                    {
                        "campaign_id": campaign_id,
                        "status": status.value,
                        "stripe": stripe,
                        "n": new.total if (status, stripe) == (RunStatus.PENDING, 0) else 0,
                    }
                    for status in RunStatus
                    for stripe in range(self.count_stripes)
                ],
            )
            started = 0
            limited: set[str] = set()
            for chunk in items():
                limited |= await self._start_chunk(conn, new, campaign_id, chunk, now)
                started += len(chunk)
            if started != new.total:  # the counters were set for new.total runs
                raise Conflict(f"the campaign has {started} items, not {new.total}")
            await self._limit(conn, new.limits, campaign_id, limited, now)
            await self._after_bulk_start(conn, started)
            note_target(audit, "campaign", campaign_id)
            return await self._read_campaign(conn, campaign_id, now), True

        try:
            return await self._tx(fn, audit=audit)
        except IntegrityError:
            # The same campaign posted concurrently won the race (unique name or key), or a
            # unique correlation key was taken meanwhile: the retry sees which.
            return await self._tx(fn, audit=audit)

    async def _existing(
        self, conn: AsyncConnection, new: NewCampaign, now: datetime
    ) -> CampaignRecord | None:
        same = sa.and_(campaigns.c.workflow_id == new.workflow_id, campaigns.c.name == new.name)
        if new.idempotency_key is not None:
            same = sa.or_(same, campaigns.c.idempotency_key == new.idempotency_key)
        row = (await conn.execute(sa.select(campaigns).where(same).limit(1))).first()
        if row is None:
            return None
        if row.checksum != new.checksum or row.workflow_id != new.workflow_id:
            raise Conflict(
                f"campaign {row.name!r} ({row.id}) exists with other items; give the new "
                "one another name (or idempotency key)",
                detail={"campaign_id": row.id},
            )
        return await self._read_campaign(conn, row.id, now)

    async def _start_chunk(
        self,
        conn: AsyncConnection,
        new: NewCampaign,
        campaign_id: str,
        chunk: Sequence[CampaignItem],
        now: datetime,
    ) -> set[str]:
        """Start the chunk's runs with their first steps (no ``run.created`` events:
        decision 0042); returns the quota keys of their concurrency keys."""
        ids = new_run_ids(len(chunk))
        per_key = bool(new.limits.per_key)
        items = list(chunk) if per_key or new.correlation_unique else None
        limit_keys: list[str | None] | None = None
        if per_key and items is not None:
            limit_keys = [
                campaign_item_key(campaign_id, item.concurrency_key)
                if item.concurrency_key is not None
                else None
                for item in items
            ]
        if new.correlation_unique and items is not None:
            await check_unique_keys(
                conn,
                [
                    {
                        "workflow_id": new.workflow_id,
                        "correlation_key": item.correlation_key,
                        "correlation_unique": item.correlation_key is not None,
                    }
                    for item in items
                ],
            )
        await self._campaign_runs(conn, new, campaign_id, chunk, ids, limit_keys, now)
        await self._campaign_first_steps(conn, new, campaign_id, ids, now)
        return {key for key in limit_keys or () if key is not None}

    async def _campaign_runs(
        self,
        conn: AsyncConnection,
        new: NewCampaign,
        campaign_id: str,
        chunk: Sequence[CampaignItem],
        ids: Sequence[str],
        limit_keys: Sequence[str | None] | None,
        now: datetime,
    ) -> None:
        """The chunk's runs (``limit_keys``: per item, when the campaign limits each key).
        SQLite: one ``INSERT ... SELECT`` over the rows' own fields as one JSON array
        (``json_each``), the campaign's constants bound once; PostgreSQL copies them."""
        when = _sqlite_time(now)
        await conn.execute(
            _CAMPAIGN_RUNS,
            {
                "rows": json.dumps(
                    [
                        [run_id, item.input_json, item.correlation_key, limit_key]
                        for run_id, item, limit_key in zip(
                            ids, chunk, limit_keys or itertools.repeat(None), strict=False
                        )
                    ],
                    ensure_ascii=False,
                ),
                "workflow_id": new.workflow_id,
                "version": new.workflow_version,
                "status": RunStatus.PENDING.value,
                "vars": _dumps(new.vars),
                "campaign_id": campaign_id,
                "deadline_at": _sqlite_time(new.deadline_at) if new.deadline_at else None,
                "unique": new.correlation_unique,
                "priority": new.priority,
                "now": when,
            },
        )

    async def _campaign_first_steps(
        self,
        conn: AsyncConnection,
        new: NewCampaign,
        campaign_id: str,
        ids: Sequence[str],
        now: datetime,
    ) -> None:
        """The first step of each run in ``ids`` (SQLite: one ``INSERT ... SELECT`` over
        the ids as one JSON array, no Python per row)."""
        when = _sqlite_time(now)
        await conn.execute(
            _FIRST_STEPS,
            {
                "ids": json.dumps(list(ids)),
                "node_id": new.start_node,
                "node_type": new.start_node_type,
                "status": StepStatus.SCHEDULED.value,
                "priority": new.priority,
                "lane": campaign_id,
                "now": when,
            },
        )

    async def _limit(
        self,
        conn: AsyncConnection,
        limits: CampaignLimits,
        campaign_id: str,
        item_keys: set[str],
        now: datetime,
    ) -> None:
        """The campaign's limits as quotas (decision 0032): one for the whole campaign, one
        per concurrency key its items have, each with a full bucket. Every worker takes
        from them like from a provider's quota, with the same slots and token buckets."""
        wanted: list[Quota] = []
        if limits.whole:
            tokens, per_s = limits.rate or (None, None)
            wanted.append(
                Quota(campaign_key(campaign_id), tokens, per_s, concurrency=limits.concurrency)
            )
        if limits.per_key:
            tokens, per_s = limits.key_rate or (None, None)
            wanted.extend(
                Quota(key, tokens, per_s, concurrency=limits.key_concurrency)
                for key in sorted(item_keys)
            )
        rows = [quota_row(q, now) for q in wanted]
        for chunk in chunks(rows, 2000):
            await conn.execute(self._insert_ignore(quotas), list(chunk))

    async def get_campaign(self, campaign_id: str, *, now: datetime) -> CampaignRecord:
        """A campaign with its counts (NotFound)."""

        async def fn(conn: AsyncConnection) -> CampaignRecord:
            return await self._read_campaign(conn, campaign_id, now)

        return await self._tx(fn, write=False)

    async def _read_campaign(
        self, conn: AsyncConnection, campaign_id: str, now: datetime
    ) -> CampaignRecord:
        row = (
            await conn.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id))
        ).first()
        if row is None:
            raise NotFound(f"campaign {campaign_id!r} not found")
        counts = dict.fromkeys(RunStatus, 0)
        for status, n in await conn.execute(
            sa.select(campaign_counts.c.status, sa.func.sum(campaign_counts.c.n))
            .where(campaign_counts.c.campaign_id == campaign_id)
            .group_by(campaign_counts.c.status)
        ):
            counts[RunStatus(status)] = int(n or 0)
        recent = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(runs)
            .where(
                runs.c.campaign_id == campaign_id,
                runs.c.finished_at.is_not(None),
                runs.c.finished_at >= now - timedelta(minutes=1),
            )
        )
        return _record(row, counts, int(recent or 0))

    async def list_campaigns(
        self,
        *,
        workflow_id: WorkflowId | None = None,
        limit: int = 50,
        before: str | None = None,
        now: datetime,
    ) -> list[CampaignRecord]:
        """Campaigns newest first (ids are time-ordered), with their counts."""
        query = sa.select(campaigns.c.id).order_by(campaigns.c.id.desc()).limit(limit)
        if workflow_id is not None:
            query = query.where(campaigns.c.workflow_id == workflow_id)
        if before is not None:
            query = query.where(campaigns.c.id < before)

        async def fn(conn: AsyncConnection) -> list[CampaignRecord]:
            ids = (await conn.execute(query)).scalars().all()
            return [await self._read_campaign(conn, i, now) for i in ids]

        return await self._tx(fn, write=False)

    async def list_campaign_runs(
        self,
        campaign_id: str,
        *,
        statuses: Sequence[RunStatus] = (),
        correlation_key: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """A campaign's runs in id order after the ``after`` cursor, optionally only in
        ``statuses`` or holding ``correlation_key``."""
        query = (
            sa.select(runs)
            .where(runs.c.campaign_id == campaign_id)
            .order_by(runs.c.id)
            .limit(limit)
        )
        if statuses:
            query = query.where(runs.c.status.in_([s.value for s in statuses]))
        if correlation_key is not None:
            query = query.where(runs.c.correlation_key == correlation_key)
        if after is not None:
            query = query.where(runs.c.id > after)

        async def fn(conn: AsyncConnection) -> list[RunRecord]:
            return [run_record(row) for row in await conn.execute(query)]

        return await self._tx(fn, write=False)

    async def set_campaign_status(
        self,
        campaign_id: str,
        status: CampaignStatus,
        *,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> CampaignRecord:
        """Record what an operator made of the campaign (its runs are moved by the
        lifecycle, run by run)."""

        async def fn(conn: AsyncConnection) -> CampaignRecord:
            done = await conn.execute(
                campaigns.update()
                .where(campaigns.c.id == campaign_id)
                .values(status=status.value, updated_at=now)
            )
            if done.rowcount == 0:
                raise NotFound(f"campaign {campaign_id!r} not found")
            note_target(audit, "campaign", campaign_id)
            return await self._read_campaign(conn, campaign_id, now)

        return await self._tx(fn, audit=audit)

    async def count_campaign_runs(self, campaign_id: str) -> dict[RunStatus, int]:
        """The campaign's runs by status counted over the runs themselves (what the counters
        must equal; for checks and tests, not for progress: it reads every run)."""

        async def fn(conn: AsyncConnection) -> dict[RunStatus, int]:
            counts = dict.fromkeys(RunStatus, 0)
            for status, n in await conn.execute(
                sa.select(runs.c.status, sa.func.count())
                .where(runs.c.campaign_id == campaign_id)
                .group_by(runs.c.status)
            ):
                counts[RunStatus(status)] = int(n)
            return counts

        return await self._tx(fn, write=False)


def _record(row: Any, counts: dict[RunStatus, int], recent: int) -> CampaignRecord:
    return CampaignRecord(
        id=row.id,
        workflow_id=WorkflowId(row.workflow_id),
        workflow_version=row.workflow_version,
        name=row.name,
        status=CampaignStatus(row.status),
        item_key=row.item_key,
        idempotency_key=row.idempotency_key,
        checksum=row.checksum,
        total=row.total,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        counts=counts,
        finished_last_minute=recent,
        priority=row.priority,
        weight=row.weight,
        concurrency_key=row.concurrency_key,
        pruned=row.pruned,
        limits=CampaignLimits.from_json(row.limits),
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
