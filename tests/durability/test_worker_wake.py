"""A standalone worker on PostgreSQL wakes on ``LISTEN flowyard_events``: a run started by
another process is claimed at once, not at the worker's next poll."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from flowyard.bootstrap import build
from flowyard.settings import Settings
from support.procs import worker_group
from support.runs import THREE_SETS

#: A poll this long would make every run below wait for it.
SLOW_POLL = {"FLOWYARD_POLL_INTERVAL_S": "30"}


@pytest.mark.postgres
async def test_a_run_started_elsewhere_wakes_a_standalone_worker(
    pg_url: str, tmp_path: Path
) -> None:
    db_url = pg_url
    container = await build(Settings(db_url=db_url, workers=0, load_plugins=False))
    try:
        record, _, _ = await container.service.save_workflow(THREE_SETS)
        with worker_group(db_url, tmp_path, SLOW_POLL) as group:
            await group.start()
            # Its first poll found nothing: from now on only a wake-up makes it claim.
            await asyncio.sleep(0.5)
            for _ in range(3):
                started = time.monotonic()
                run, _ = await container.service.start_run(record.id, {})
                async with asyncio.timeout(10):  # a third of the poll
                    while not (await container.store.get_run(run.id)).status.is_terminal:
                        await asyncio.sleep(0.01)
                took = time.monotonic() - started
                assert (await container.store.get_run(run.id)).status.value == "succeeded"
                assert took < 10, took
    finally:
        await container.close()
