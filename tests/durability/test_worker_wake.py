"""Workers on PostgreSQL wake on ``LISTEN flowyard_events``: a run started by another
process is claimed at once, not at the worker's next poll — a standalone ``flowyard worker``
and the embedded workers of ``flowyard serve`` alike."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from flowyard.api.app import create_app
from flowyard.bootstrap import Container, build
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
            await _three_runs_end_before_the_poll(container, record.id)
    finally:
        await container.close()


@pytest.mark.postgres
async def test_a_run_started_elsewhere_wakes_the_workers_of_serve(pg_url: str) -> None:
    elsewhere = await build(Settings(db_url=pg_url, workers=0, load_plugins=False))
    try:
        record, _, _ = await elsewhere.service.save_workflow(THREE_SETS)
        settings = Settings(db_url=pg_url, workers=1, load_plugins=False, poll_interval_s=30)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            await asyncio.sleep(0.5)  # its first poll is behind it
            # Started through another container: no in-process enqueue wakes serve's worker.
            await _three_runs_end_before_the_poll(elsewhere, record.id)
            [worker] = app.state.workers
            assert worker.stats.committed >= 9
    finally:
        await elsewhere.close()


async def _three_runs_end_before_the_poll(container: Container, workflow_id: str) -> None:
    for _ in range(3):
        started = time.monotonic()
        run, _ = await container.service.start_run(workflow_id, {})
        async with asyncio.timeout(10):  # a third of the poll
            while not (await container.store.get_run(run.id)).status.is_terminal:
                await asyncio.sleep(0.01)
        took = time.monotonic() - started
        assert (await container.store.get_run(run.id)).status.value == "succeeded"
        assert took < 10, took
