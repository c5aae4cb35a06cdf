"""The claim's order (decision 0032): the lanes with due steps read off the claim index, then
each lane's due steps, highest priority first and, within a priority, in the order of the
worker's fair share (:mod:`flowyard.domain.fairness`). And the claim a completion makes of the
steps it has just made due in its own runs (decision 0039), and what every claim records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.events import EventType
from flowyard.domain.fairness import FairShare
from flowyard.domain.ids import RunId
from flowyard.domain.priorities import DEFAULT_WEIGHT, INTERACTIVE, NO_LANE
from flowyard.domain.records import StepRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store.rows import CLAIMABLE, event_row, step_record
from flowyard.store.schema import CLAIMABLE_SQL, UTCDateTime, campaigns, run_events, runs, steps


async def claim_by_lane(
    conn: AsyncConnection,
    fair: FairShare,
    worker_id: str,
    *,
    limit: int,
    now: datetime,
    lease_s: float,
) -> list[StepRecord]:
    """The lanes with due steps (read off the claim index, one probe per lane), then
    each lane's due steps in the order the worker's fair share gives."""
    lanes: dict[int, list[str]] = {}
    for row in await conn.execute(DUE_LANES, {"now": now}):
        lanes.setdefault(row.priority, []).append(row.lane)
    claimed: list[StepRecord] = []
    for priority in sorted(lanes, reverse=True):
        weights = await _weights(conn, lanes[priority])
        for lane in fair.order(priority, weights):
            claim = claim_statement(
                worker_id,
                limit=limit - len(claimed),
                now=now,
                lease_s=lease_s,
                priority=priority,
                lane=lane,
            )
            got = [step_record(row) for row in await conn.execute(claim)]
            fair.served(priority, lane, len(got), weights[lane])
            claimed.extend(got)
            if len(claimed) >= limit:
                return claimed
    return claimed


async def claim_of_runs(
    conn: AsyncConnection,
    worker_id: str,
    run_ids: Sequence[str],
    *,
    limit: int,
    now: datetime,
    lease_s: float,
) -> list[StepRecord]:
    """Claim up to ``limit`` due steps of these runs, whatever their lane: a worker that has
    just advanced the runs continues them (decision 0039). Records nothing else; see
    :func:`record_claims`."""
    if not run_ids or limit <= 0:
        return []
    due = (
        sa.select(steps.c.id)
        .where(CLAIMABLE, steps.c.run_id.in_(sorted(run_ids)), steps.c.available_at <= now)
        .order_by(steps.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [
        step_record(row)
        for row in await conn.execute(_claimed(due, worker_id, now=now, lease_s=lease_s))
    ]


async def record_claims(
    conn: AsyncConnection,
    claimed: Sequence[StepRecord],
    worker_id: str,
    now: datetime,
    *,
    runs_started: bool = False,
    events: list[dict[str, Any]] | None = None,
) -> None:
    """What every claim records with it: each step's ``step.started`` event, pending runs
    started (with their event), waiting runs whose step woke running again.
    ``runs_started``: the caller knows the runs are under way (a completion continuing
    them), so only woken ones are looked at; ``events``: add the event rows to this list,
    which the caller inserts with its own, rather than inserting them here."""
    if not claimed:
        return
    woken = {s.run_id for s in claimed if s.waiting_for is not None}
    if not runs_started or woken:
        await _mark_runs_started(
            conn, set() if runs_started else {s.run_id for s in claimed}, woken, now
        )
    rows = [
        event_row(
            s.run_id,
            EventType.STEP_STARTED,
            {"node_id": s.node_id, "attempt": s.attempt, "worker": worker_id},
            now,
            step_id=s.id,
        )
        for s in claimed
    ]
    if events is not None:
        events.extend(rows)
    else:
        await conn.execute(run_events.insert(), rows)


async def _mark_runs_started(
    conn: AsyncConnection, run_ids: set[RunId], woken: set[RunId], now: datetime
) -> None:
    """Pending runs start (with their event); waiting runs whose step woke run again."""
    # SKIP LOCKED: a run row locked by a completion is left alone (the completion marks it
    # running itself), so a claim never waits on a run lock and cannot deadlock. (A
    # completion that claims, decision 0039, holds those locks itself: they do not skip.)
    if run_ids:
        await _mark_pending_started(conn, run_ids, now)
    await _mark_runs_woken(conn, woken, now)


async def _mark_pending_started(conn: AsyncConnection, run_ids: set[RunId], now: datetime) -> None:
    """Pending runs start, with their event."""
    pending = (
        sa.select(runs.c.id)
        .where(runs.c.id.in_(sorted(run_ids)), runs.c.status == RunStatus.PENDING.value)
        .with_for_update(skip_locked=True, key_share=True)
    )
    started = await conn.execute(
        runs.update()
        .where(runs.c.id.in_(pending.scalar_subquery()))
        .values(status=RunStatus.RUNNING.value, started_at=now, updated_at=now)
        .returning(runs.c.id)
    )
    ids = [row.id for row in started]
    if ids:
        await conn.execute(
            run_events.insert(),
            [event_row(run_id, EventType.RUN_STARTED, {}, now) for run_id in ids],
        )


async def _mark_runs_woken(conn: AsyncConnection, woken: set[RunId], now: datetime) -> None:
    """Waiting runs whose step woke run again."""
    if woken:
        waiting = (
            sa.select(runs.c.id)
            .where(runs.c.id.in_(sorted(woken)), runs.c.status == RunStatus.WAITING.value)
            .with_for_update(skip_locked=True, key_share=True)
        )
        await conn.execute(
            runs.update()
            .where(runs.c.id.in_(waiting.scalar_subquery()))
            .values(status=RunStatus.RUNNING.value, updated_at=now)
        )


def claim_statement(
    worker_id: str,
    *,
    limit: int,
    now: datetime,
    lease_s: float,
    priority: int = INTERACTIVE,
    lane: str = NO_LANE,
) -> sa.Update:
    """The claim from one lane: one UPDATE of up to ``limit`` due steps, picked by a
    sub-select that locks them and skips rows another worker has locked (quoted in
    docs/architecture.md). The lane's due steps are one range of the claim index."""
    due = (
        sa.select(steps.c.id)
        .where(
            CLAIMABLE,
            steps.c.priority == priority,
            steps.c.lane == lane,
            steps.c.available_at <= now,
        )
        .order_by(steps.c.available_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return _claimed(due, worker_id, now=now, lease_s=lease_s)


def _claimed(
    due: sa.Select[tuple[int]], worker_id: str, *, now: datetime, lease_s: float
) -> sa.Update:
    """The UPDATE that leases the steps ``due`` selects, returning them."""
    return (
        steps.update()
        .where(steps.c.id.in_(due.scalar_subquery()))
        .values(
            status=StepStatus.RUNNING.value,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_s),
            attempt=steps.c.attempt + 1,
            claims=steps.c.claims + 1,
            started_at=now,
        )
        .returning(*steps.c)
    )


def _claimable(alias: str) -> str:
    """The claim predicate (literal, so the planners match the partial index) on ``alias``."""
    return CLAIMABLE_SQL.replace("status", f"{alias}.status").replace(" held", f" {alias}.held")


#: The next lane below ``f``'s: first within its priority, else in the next lower one. Two
#: probes with plain range conditions rather than one on a row value, ``(priority, lane) <
#: (p, l)``: SQLite seeks a row value by its first column only, and would read the whole lane
#: just visited before finding the next (its cost would grow with that lane's backlog).
_SAME_PRIORITY = f"""SELECT {{col}} FROM steps s WHERE {_claimable("s")}
      AND s.priority = f.priority AND s.lane < f.lane
      ORDER BY s.lane DESC LIMIT 1"""
_LOWER_PRIORITY = f"""SELECT {{col}} FROM steps s WHERE {_claimable("s")}
      AND s.priority < f.priority
      ORDER BY s.priority DESC, s.lane DESC LIMIT 1"""


def _next(col: str) -> str:
    return f"COALESCE(({_SAME_PRIORITY.format(col=col)}),\n    ({_LOWER_PRIORITY.format(col=col)}))"


DUE_LANES = sa.text(
    f"""WITH RECURSIVE f(priority, lane) AS (
  SELECT priority, lane FROM (
    SELECT s.priority, s.lane FROM steps s WHERE {_claimable("s")}
    ORDER BY s.priority DESC, s.lane DESC LIMIT 1) AS top
  UNION ALL
  SELECT {_next("s.priority")},
         {_next("s.lane")}
  FROM f WHERE f.priority IS NOT NULL
)
SELECT f.priority, f.lane FROM f
WHERE f.priority IS NOT NULL AND EXISTS (
  SELECT 1 FROM steps s WHERE {_claimable("s")}
    AND s.priority = f.priority AND s.lane = f.lane AND s.available_at <= :now)"""
).bindparams(sa.bindparam("now", type_=UTCDateTime))


async def _weights(conn: AsyncConnection, lanes: Sequence[str]) -> dict[str, int]:
    """Each lane's weight: its campaign's, 1 for the lane outside campaigns (and for a lane
    alone at its priority, where the weight does not matter: nothing is read)."""
    weights = dict.fromkeys(lanes, DEFAULT_WEIGHT)
    named = [lane for lane in lanes if lane != NO_LANE]
    if len(lanes) > 1 and named:
        rows = await conn.execute(
            sa.select(campaigns.c.id, campaigns.c.weight).where(campaigns.c.id.in_(named))
        )
        weights.update({row.id: int(row.weight) for row in rows})
    return weights
