"""Issue 13: a campaign's progress counters (kept by a database trigger, decision 0028) equal a
real count of its runs after chaos: three worker processes SIGKILLed at random and replaced
while they drain the campaign, on SQLite and PostgreSQL. A killed worker's steps come back
when their lease expires, and every status change on the way (claimed, re-queued, succeeded,
failed) must have moved the counters exactly once."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from flowyard.bootstrap import build
from flowyard.campaigns.items import ItemFormat
from flowyard.domain.statuses import RunStatus
from flowyard.settings import Settings
from support.http import RecordingServer
from support.procs import worker_group

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ITEMS = 120
WORKERS = 3
KILL_S = 6.0
MIN_KILLS = 3
#: Short leases so that a killed worker's steps come back within the test.
ENV = {
    "FLOWYARD_POLL_INTERVAL_S": "0.05",
    "FLOWYARD_LEASE_S": "2",
    "FLOWYARD_REAP_INTERVAL_S": "0.3",
}


def definition(base_url: str) -> dict[str, object]:
    """set -> http -> condition: a third of the runs fail (the condition routes them to a
    failing node), so the counters see every kind of ending."""
    call = {"method": "POST", "url": f"{base_url}/work", "json": {"n": "{{ input.n }}"}}
    route = {"cases": [{"when": "input.n % 3 == 0", "next": "boom"}], "default": "done"}
    return {
        "name": "chaos-campaign",
        "start": "prepare",
        "nodes": [
            {"id": "prepare", "type": "set", "config": {"values": {"n": 1}}, "next": "call"},
            {"id": "call", "type": "http", "config": call, "next": "route"},
            {"id": "route", "type": "condition", "config": route},
            {"id": "boom", "type": "fail", "config": {"error": "chaos.rejected"}},
            {"id": "done", "type": "end"},
        ],
    }


async def test_campaign_counters_equal_a_real_count_after_workers_are_killed(
    db_url: str, http_server: RecordingServer, tmp_path: Path
) -> None:
    container = await build(Settings(db_url=db_url, workers=0, load_plugins=False))
    try:
        await container.service.create_workflow(definition(http_server.url), "tester")
        campaign, created = await container.service.start_campaign(
            "chaos-campaign",
            "chaos",
            ItemFormat.JSON,
            [{"n": n, "email": f"u{n}@example.com"} for n in range(ITEMS)],
            item_key="{{ item.email }}",
            actor="tester",
        )
        assert created
        rng = random.Random()
        kills = 0
        with worker_group(db_url, tmp_path, ENV) as group:
            slots = [group.spawn(concurrency=8) for _ in range(WORKERS)]
            # At least KILL_S of chaos and MIN_KILLS kills (workers start slowly on a loaded
            # machine: only a ready one is killed), within a bound.
            deadline, bound = time.monotonic() + KILL_S, time.monotonic() + 60
            while time.monotonic() < deadline or (kills < MIN_KILLS and time.monotonic() < bound):
                await asyncio.sleep(rng.uniform(0.5, 1.5))
                victim = rng.randrange(WORKERS)
                if slots[victim].ready():
                    slots[victim].kill()
                    kills += 1
                    slots[victim] = group.spawn(concurrency=8)

            async def drained() -> bool:
                real = await container.store.count_campaign_runs(campaign.id)
                return sum(n for s, n in real.items() if s.is_terminal) == ITEMS

            finish = time.monotonic() + 120
            while not await drained():
                assert time.monotonic() < finish, group.logs()
                await asyncio.sleep(0.3)
        assert kills >= MIN_KILLS, f"only {kills} workers were killed"
        real = await container.store.count_campaign_runs(campaign.id)
        shown = await container.service.get_campaign(campaign.id)
        assert shown.counts == real
        assert {s: n for s, n in real.items() if n} == {
            RunStatus.SUCCEEDED: ITEMS - ITEMS // 3,
            RunStatus.FAILED: ITEMS // 3,
        }
    finally:
        await container.close()
