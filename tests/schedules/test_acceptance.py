"""Acceptance: a schedule ticking every second, fired by 4 worker processes on PostgreSQL,
starts exactly one run per tick (counted in the database: no tick twice, none missing
between the first and the last); after every worker stopped for ~10 s the catch-up policy
holds (``skip``: the missed ticks never run; ``all``: every one of them runs, once).

Every wait is bounded and every process is killed and reaped (``worker_group``). Most of
the time is the workers' start (4 processes on 2 cores); the second batch is spawned while
the schedule is unattended, so the downtime is ~10 s, not 10 s plus a start."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flowyard.bootstrap import build
from flowyard.domain.clock import utc_now
from flowyard.domain.schedules import ScheduleId, ScheduleRecord, TickOutcome
from flowyard.service.schedules import ScheduleChange
from flowyard.settings import Settings
from flowyard.store import open_store
from support.procs import WorkerGroup, worker_group

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(150)]

WORKERS = 4
RUN_S = 20.0
DOWN_S = 10.0
AFTER_S = 5.0
GRACE_S = 2.0
POLICIES = ("skip", "all")
ENV = {"FLOWYARD_POLL_INTERVAL_S": "0.05", "FLOWYARD_SCHEDULE_POLL_S": "0.5"}
DEFINITION = {
    "name": "pulse",
    "start": "a",
    "nodes": [{"id": "a", "type": "set", "config": {"values": {"tick": "{{ input.n }}"}}}],
}


async def start_all(group: WorkerGroup) -> datetime:
    """Spawn the workers; when the first of them was ready (it fires from then on)."""
    batch = [group.spawn(concurrency=8) for _ in range(WORKERS)]
    first: datetime | None = None
    deadline = time.monotonic() + 40
    while not all(w.ready() for w in batch):
        assert all(w.running() for w in batch), group.logs()
        assert time.monotonic() < deadline, group.logs()
        if first is None and any(w.ready() for w in batch):
            first = utc_now()
        await asyncio.sleep(0.05)
    return first or utc_now()


def kill_all(group: WorkerGroup) -> None:
    """SIGKILL every worker at once, like machines dying (a tick being fired either
    committed with its run or not at all)."""
    for worker in group.workers:
        if worker.running():
            worker.kill()


async def ticks_and_runs(db_url: str, schedule_id: str) -> tuple[list[datetime], list[Any]]:
    """The fired ticks (in order) and the schedule's runs, read from the database."""
    store = open_store(db_url)
    try:
        fired = await store.list_schedule_fires(ScheduleId(schedule_id), limit=1000)
        started = await store.list_runs(schedule_id=schedule_id, limit=1000)
    finally:
        await store.close()
    assert {f.outcome for f in fired} <= {TickOutcome.FIRED}
    # One run per recorded tick and one recorded tick per run: no tick fired twice.
    assert sorted(str(f.run_id) for f in fired) == sorted(r.id for r in started)
    return sorted(f.tick_at for f in fired), started


async def schedule_now(db_url: str, schedule_id: str) -> ScheduleRecord:
    store = open_store(db_url)
    try:
        return await store.get_schedule(schedule_id)
    finally:
        await store.close()


def seconds_between(ticks: list[datetime]) -> list[float]:
    return [round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(ticks)]


async def scenario(pg_url: str, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Two schedules (catch-up ``skip`` and ``all``) on the same 4 workers: run them, stop
    every worker, start them again; what happened to each (one scenario for both policies:
    4 worker processes twice is the cost of the test)."""
    container = await build(Settings(db_url=pg_url, workers=0, load_plugins=False))
    try:
        await container.service.create_workflow(DEFINITION, "tester")
        ids = {}
        for catch_up in POLICIES:
            view = await container.schedules.create(
                ScheduleChange.of(
                    {
                        "name": f"every-second-{catch_up}",
                        "workflow": "pulse",
                        "every": "1s",
                        "input": {"n": 1},
                        "catch_up": catch_up,
                        "max_catch_up": 100,
                        "misfire_grace_s": GRACE_S,
                    }
                ),
                actor="tester",
            )
            ids[catch_up] = view.record.id
    finally:
        await container.close()
    with worker_group(pg_url, tmp_path, ENV) as group:
        spawned = time.monotonic()
        await start_all(group)
        startup_s = time.monotonic() - spawned
        await asyncio.sleep(RUN_S)
        kill_all(group)
        stopped_at = utc_now()
        before = {policy: (await ticks_and_runs(pg_url, sid))[0] for policy, sid in ids.items()}
        # The next batch takes about as long to start as the first: spawn it early so that
        # the schedule is unattended for ~DOWN_S, not DOWN_S plus a start.
        # The head start is capped: a second start faster than the first (a loaded machine)
        # must not shrink the downtime below what the test checks.
        await asyncio.sleep(max(DOWN_S - startup_s, DOWN_S - 3, 0.0))
        restart_at = await start_all(group)
        await asyncio.sleep(AFTER_S)
        kill_all(group)
        logs = group.logs()
    assert "Traceback" not in logs, logs
    assert (restart_at - stopped_at).total_seconds() >= DOWN_S - 3, (stopped_at, restart_at)
    seen = {}
    for policy, sid in ids.items():
        after, started_runs = await ticks_and_runs(pg_url, sid)
        seen[policy] = {
            "before": before[policy],
            "after": [t for t in after if t > before[policy][-1]],
            "all": after,
            "stopped_at": stopped_at,
            "restart_at": restart_at,
            "schedule": await schedule_now(pg_url, sid),
            "runs": started_runs,
        }
    return seen


async def test_every_tick_once_with_four_workers_and_each_catch_up_after_downtime(
    pg_url: str, tmp_path: Path
) -> None:
    both = await scenario(pg_url, tmp_path)
    check_skip(both["skip"])
    check_all(both["all"])


def check_skip(seen: dict[str, Any]) -> None:
    before, after = seen["before"], seen["after"]
    # ~20 s of ticks, one second apart, none missing and none twice.
    assert len(before) >= RUN_S - 6, before
    assert set(seconds_between(before)) == {1.0}, seconds_between(before)
    # skip: nothing for the ticks missed while every worker was down; only ticks within
    # the grace period of the restart fired, then one a second again.
    assert after, "nothing fired after the restart"
    down_s = (seen["restart_at"] - seen["stopped_at"]).total_seconds()
    gap = (after[0] - before[-1]).total_seconds()
    assert gap >= down_s - GRACE_S - 1, (before[-1], after[0], down_s)
    assert after[0] >= seen["restart_at"] - timedelta(seconds=GRACE_S + 1)
    assert set(seconds_between(after)) == {1.0}, seconds_between(after)
    assert seen["schedule"].missed >= gap - 1 - 1
    assert seen["schedule"].fired == len(seen["all"]) == len(seen["runs"])


def check_all(seen: dict[str, Any]) -> None:
    ticks = seen["all"]
    # all: the ticks missed while every worker was down ran after the restart; from the
    # first tick to the last, every second has exactly one run.
    down_s = (seen["restart_at"] - seen["stopped_at"]).total_seconds()
    downtime = [t for t in ticks if seen["stopped_at"] < t < seen["restart_at"]]
    assert len(downtime) >= down_s - 2, (downtime, down_s)
    assert set(seconds_between(ticks)) == {1.0}, seconds_between(ticks)
    assert seen["schedule"].missed == 0
    assert seen["schedule"].fired == len(ticks) == len(seen["runs"])
