"""Retention in the SQL store: delete a workflow's old finished runs by small batches, each
its own short transaction; the rows whose owner is gone (quota rows of ended campaigns,
throttle windows that are over, debounce and throttle rows of deleted hooks and triggers);
and the leases that keep one periodic pruner at a time.

A batch takes up to ``limit`` top-level runs of one workflow that finished before a cutoff,
oldest finish first, through the partial index ``ix_runs_retention``. On PostgreSQL it locks
them ``FOR UPDATE SKIP LOCKED``: a run whose row a worker or a request holds (a completion,
a retry, a signal) is skipped, never waited for, and looked at again by the next prune. The
batch then leaves alone every run that something could still write to: a run (or one of its
child runs) with a step scheduled, waiting or running, a child run that has not finished,
a child run another transaction holds. What remains is deleted with its child runs
(recursively: a sub-workflow's runs go with their parent, never before it) and every row
that names them: events, signals, branches, steps. Holding the runs' locks, nothing else can
add to those rows: every writer locks a run before it writes under it.

On SQLite there is one writer at a time: a batch holds the database's write lock for its
short transaction, and workers wait that long (which is why batches are small).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.clock import utc_now
from flowyard.domain.ids import WorkflowId
from flowyard.domain.quotas import campaign_key
from flowyard.domain.retention import PRUNED_TABLES, PruneBatch, PruneCursor, WorkflowRetention
from flowyard.domain.statuses import RunStatus
from flowyard.domain.triggers import HOOK_SOURCE, MAX_PERIOD_S, TRIGGER_SOURCE
from flowyard.store.base import SqlBase
from flowyard.store.quotas import campaign_item_rows, delete_quota_rows
from flowyard.store.rows import ACTIVE, chunks
from flowyard.store.schema import (
    UTCDateTime,
    branches,
    campaign_counts,
    campaigns,
    event_triggers,
    hooks,
    leases,
    quotas,
    run_events,
    runs,
    signals,
    steps,
    trigger_debounces,
    trigger_throttles,
    workflow_versions,
    workflows,
)

#: Run statuses a prune may delete.
FINISHED = tuple(sorted(s.value for s in RunStatus if s.is_terminal))
#: Sub-workflow nesting followed below a run before giving up on it (runs deeper than this
#: keep their parent).
MAX_DEPTH = 64
_TABLES: dict[str, sa.Table] = {
    "run_events": run_events,
    "signals": signals,
    "branches": branches,
    "steps": steps,
    "runs": runs,
}
_IN = 500  # ids per IN (...) list


class RetentionOps(SqlBase):
    """Prune finished runs by batches; leases for loops that run once across processes."""

    async def workflow_retentions(self) -> list[WorkflowRetention]:
        """Every workflow with a version, and the ``retention`` its latest version declares
        (one query: the definition's top-level key)."""
        declared = workflow_versions.c.definition["retention"].as_string()
        query = (
            sa.select(workflows.c.id, workflows.c.name, declared)
            .join(
                workflow_versions,
                sa.and_(
                    workflow_versions.c.workflow_id == workflows.c.id,
                    workflow_versions.c.version == workflows.c.latest_version,
                ),
            )
            .order_by(workflows.c.name)
        )

        async def fn(conn: AsyncConnection) -> list[WorkflowRetention]:
            return [
                WorkflowRetention(WorkflowId(row[0]), row[1], row[2])
                for row in await conn.execute(query)
            ]

        return await self._tx(fn, write=False)

    async def prune_runs(
        self,
        workflow_id: WorkflowId,
        before: datetime,
        *,
        limit: int,
        after: PruneCursor | None = None,
        dry_run: bool = False,
    ) -> PruneBatch:
        """One batch, one transaction: delete up to ``limit`` top-level runs of the workflow
        that finished before ``before`` (after ``after``), with their child runs and every
        row that names them; or, with ``dry_run``, count what would be deleted and lock
        nothing. ``seen < limit`` in the answer: no candidate is left after its cursor."""

        async def fn(conn: AsyncConnection) -> PruneBatch:
            candidates = await self._candidates(conn, workflow_id, before, limit, after, dry_run)
            if not candidates:
                return PruneBatch(dict.fromkeys(PRUNED_TABLES, 0), 0, 0, None)
            cursor = PruneCursor(candidates[-1][1], candidates[-1][0])
            roots = [run_id for run_id, _ in candidates]
            root_of, kept = await self._trees(conn, roots, lock=not dry_run)
            doomed = sorted(run_id for run_id, root in root_of.items() if root not in kept)
            if dry_run:
                counts = await _count(conn, doomed)
            else:
                await _count_pruned_campaign_runs(conn, doomed)
                counts = await _delete(conn, doomed)
            return PruneBatch(counts, len(roots), len(kept), cursor)

        return await self._tx(fn, write=not dry_run)

    async def _candidates(
        self,
        conn: AsyncConnection,
        workflow_id: WorkflowId,
        before: datetime,
        limit: int,
        after: PruneCursor | None,
        dry_run: bool,
    ) -> list[tuple[str, datetime]]:
        query = (
            sa.select(runs.c.id, runs.c.finished_at)
            .where(
                runs.c.workflow_id == workflow_id,
                # The index's predicate, spelled out so both planners pick it.
                runs.c.finished_at.is_not(None),
                runs.c.parent_run_id.is_(None),
                runs.c.finished_at < before,
                runs.c.status.in_(FINISHED),
            )
            .order_by(runs.c.finished_at, runs.c.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(
                sa.tuple_(runs.c.finished_at, runs.c.id)
                > sa.tuple_(
                    sa.bindparam("after_at", after.finished_at, type_=UTCDateTime()),
                    sa.bindparam("after_id", after.run_id, type_=runs.c.id.type),
                )
            )
        if not dry_run:
            # FOR UPDATE (a delete's lock): a run a worker holds is skipped, not waited for.
            query = query.with_for_update(skip_locked=True)
        return [(row.id, row.finished_at) for row in await conn.execute(query)]

    async def _trees(
        self, conn: AsyncConnection, roots: Sequence[str], *, lock: bool
    ) -> tuple[dict[str, str], set[str]]:
        """Every run under ``roots`` (themselves included) mapped to its root, and the roots
        to keep this time: something in their tree is unfinished, busy or held elsewhere."""
        root_of = {run_id: run_id for run_id in roots}
        kept: set[str] = set()
        level: list[str] = list(roots)
        for _ in range(MAX_DEPTH):
            children: list[str] = []
            for chunk in chunks(sorted(level), _IN):
                rows = await conn.execute(
                    sa.select(runs.c.id, runs.c.parent_run_id, runs.c.status).where(
                        runs.c.parent_run_id.in_(chunk)
                    )
                )
                for row in rows:
                    root_of[row.id] = root_of[row.parent_run_id]
                    children.append(row.id)
                    if row.status not in FINISHED:
                        kept.add(root_of[row.id])
            if lock and children:
                locked: set[str] = set()
                for chunk in chunks(sorted(children), _IN):
                    held = await conn.execute(
                        sa.select(runs.c.id)
                        .where(runs.c.id.in_(chunk))
                        .with_for_update(skip_locked=True)
                    )
                    locked.update(row.id for row in held)
                kept.update(root_of[c] for c in children if c not in locked)
            level = children
            if not level:
                break
        else:
            kept.update(root_of[run_id] for run_id in level)  # nested too deep: keep
        for chunk in chunks(sorted(root_of), _IN):
            busy = await conn.execute(
                sa.select(steps.c.run_id)
                .where(steps.c.run_id.in_(chunk), steps.c.status.in_(ACTIVE))
                .distinct()
            )
            kept.update(root_of[row.run_id] for row in busy)
        return root_of, kept

    async def release_campaign_limits(self, *, limit: int, dry_run: bool = False) -> int:
        """Delete (or, with ``dry_run``, count) up to ``limit`` quota rows (with their
        slots) of campaigns whose runs have all ended, by their counters: nothing takes
        from them any more. The campaign keeps its limits (shown; a retry-failed makes the
        rows again). Returns the rows."""

        async def fn(conn: AsyncConnection) -> int:
            ended = list(
                await conn.execute(
                    sa.select(campaigns.c.id)
                    .join(campaign_counts, campaign_counts.c.campaign_id == campaigns.c.id)
                    .where(campaign_counts.c.status.in_(FINISHED))
                    .group_by(campaigns.c.id, campaigns.c.total)
                    .having(sa.func.sum(campaign_counts.c.n) >= campaigns.c.total)
                    .order_by(campaigns.c.id)
                )
            )
            keys: list[str] = []
            for (campaign_id,) in ended:
                if len(keys) >= limit:
                    break
                found = await conn.execute(
                    sa.select(quotas.c.key)
                    .where(
                        sa.or_(
                            quotas.c.key == campaign_key(campaign_id),
                            campaign_item_rows(campaign_id),
                        )
                    )
                    .order_by(quotas.c.key)
                    .limit(limit - len(keys))
                )
                keys.extend(found.scalars())
            if not dry_run:
                await delete_quota_rows(conn, keys)
            return len(keys)

        return await self._tx(fn, write=not dry_run)

    async def purge_trigger_rows(
        self, now: datetime, *, limit: int, dry_run: bool = False
    ) -> dict[str, int]:
        """Delete (or, with ``dry_run``, count) up to ``limit`` throttle windows that are
        over (begun longer ago than the longest period) or whose hook or event trigger is
        gone, and up to ``limit`` debounced starts whose owner is gone. Returns the rows by
        table."""
        over = now - timedelta(seconds=MAX_PERIOD_S)

        async def fn(conn: AsyncConnection) -> dict[str, int]:
            windows = list(
                await conn.execute(
                    sa.select(trigger_throttles.c.source, trigger_throttles.c.key)
                    .where(
                        sa.or_(
                            trigger_throttles.c.window_start < over,
                            _orphaned(trigger_throttles.c.source),
                        )
                    )
                    .limit(limit)
                )
            )
            starts = list(
                (
                    await conn.execute(
                        sa.select(trigger_debounces.c.id)
                        .where(_orphaned(trigger_debounces.c.source))
                        .limit(limit)
                    )
                ).scalars()
            )
            if not dry_run:
                for chunk in chunks(windows, _IN):
                    await conn.execute(
                        trigger_throttles.delete().where(
                            sa.tuple_(trigger_throttles.c.source, trigger_throttles.c.key).in_(
                                [tuple(w) for w in chunk]
                            )
                        )
                    )
                for ids in chunks(starts, _IN):
                    await conn.execute(
                        trigger_debounces.delete().where(trigger_debounces.c.id.in_(ids))
                    )
            return {"trigger_throttles": len(windows), "trigger_debounces": len(starts)}

        return await self._tx(fn, write=not dry_run)

    async def take_lease(self, name: str, owner: str, *, now: datetime, until: datetime) -> bool:
        """Hold the lease ``name`` until ``until`` if it is free (never taken, or expired) or
        already ``owner``'s; False when another owner holds it. A compare-and-set on one row:
        of two processes racing for it, one wins."""

        async def fn(conn: AsyncConnection) -> bool:
            await conn.execute(
                self._insert_ignore(leases).values(
                    name=name, owner=None, expires_at=now, updated_at=now
                )
            )
            taken = await conn.execute(
                leases.update()
                .where(
                    leases.c.name == name,
                    sa.or_(leases.c.owner == owner, leases.c.expires_at <= now),
                )
                .values(owner=owner, expires_at=until, updated_at=now)
            )
            return bool(taken.rowcount == 1)

        return await self._tx(fn)

    async def release_lease(self, name: str, owner: str, *, until: datetime) -> bool:
        """Give up ``name`` if ``owner`` holds it; nobody may take it before ``until``
        (False: ``owner`` did not hold it)."""

        async def fn(conn: AsyncConnection) -> bool:
            released = await conn.execute(
                leases.update()
                .where(leases.c.name == name, leases.c.owner == owner)
                .values(owner=None, expires_at=until, updated_at=utc_now())
            )
            return bool(released.rowcount == 1)

        return await self._tx(fn)


def _orphaned(source: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """A debounce or throttle row whose hook or event trigger is gone (its owner's primary
    key probed with the id cut out of ``source``)."""

    def gone(prefix: str, owner: sa.Table) -> sa.ColumnElement[bool]:
        owner_id = sa.func.substr(source, len(prefix) + 1)
        return sa.and_(source.like(prefix + "%"), ~sa.exists().where(owner.c.id == owner_id))

    return sa.or_(gone(HOOK_SOURCE, hooks), gone(TRIGGER_SOURCE, event_triggers))


async def _count(conn: AsyncConnection, doomed: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(PRUNED_TABLES, 0)
    for chunk in chunks(doomed, _IN):
        for name in PRUNED_TABLES:
            table = _TABLES[name]
            column = table.c.id if name == "runs" else table.c.run_id
            n = await conn.scalar(
                sa.select(sa.func.count()).select_from(table).where(column.in_(chunk))
            )
            counts[name] += int(n or 0)
    return counts


async def _delete(conn: AsyncConnection, doomed: Sequence[str]) -> dict[str, int]:
    """Delete the runs and what names them, referencing rows first (foreign keys)."""
    counts = dict.fromkeys(PRUNED_TABLES, 0)
    for chunk in chunks(doomed, _IN):
        for name in PRUNED_TABLES:
            table = _TABLES[name]
            column = table.c.id if name == "runs" else table.c.run_id
            result: Any = await conn.execute(table.delete().where(column.in_(chunk)))
            counts[name] += int(result.rowcount or 0)
    return counts


async def _count_pruned_campaign_runs(conn: AsyncConnection, doomed: Sequence[str]) -> None:
    """Add the campaign runs about to be deleted to their campaign's ``pruned``: the counts
    by status stay as they are (the campaign's history)."""
    pruned: dict[str, int] = {}
    for chunk in chunks(doomed, _IN):
        rows = await conn.execute(
            sa.select(runs.c.campaign_id, sa.func.count())
            .where(runs.c.id.in_(chunk), runs.c.campaign_id.is_not(None))
            .group_by(runs.c.campaign_id)
        )
        for campaign_id, n in rows:
            pruned[campaign_id] = pruned.get(campaign_id, 0) + int(n)
    for campaign_id in sorted(pruned):
        await conn.execute(
            campaigns.update()
            .where(campaigns.c.id == campaign_id)
            .values(pruned=campaigns.c.pruned + pruned[campaign_id])
        )
