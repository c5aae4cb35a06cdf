"""Scale out (issue 13, part 5): twenty ``flowyard worker`` processes on one PostgreSQL, all
of them through PgBouncer in transaction mode (ten server connections for the lot), execute
every step exactly once; the API side works through the same pooler, and live streams LISTEN
on the direct URL (a pooler cannot keep a LISTEN) or poll without one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from durability.test_workers import chain, until
from flowyard.bootstrap import build
from flowyard.domain.statuses import RunStatus
from flowyard.settings import Settings
from support.bulk import ended_runs, numbered_runs, steps_ran_once
from support.http import RecordingServer
from support.pgbouncer import pgbouncer
from support.procs import worker_group

WORKERS = 20
RUNS = 200
POOLED = {"FLOWYARD_DB_POOLER": "transaction", "FLOWYARD_POLL_INTERVAL_S": "0.1"}


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_twenty_worker_processes_through_pgbouncer_run_each_step_once(
    pg_url: str, http_server: RecordingServer, tmp_path: Path
) -> None:
    with pgbouncer(pg_url, server_connections=10) as pooled_url:
        settings = Settings(
            db_url=pooled_url, db_pooler="transaction", workers=0, load_plugins=False
        )
        container = await build(settings)  # migrates through the pooler
        try:
            record, version, _ = await container.service.save_workflow(
                chain("scale", http_server.url, ["/a", "/b"])
            )
            with worker_group(pooled_url, tmp_path, POOLED) as group:
                batch = [group.spawn(concurrency=4) for _ in range(WORKERS)]
                deadline = time.monotonic() + 120
                while not all(w.ready() for w in batch):
                    assert all(w.running() for w in batch), group.logs()
                    assert time.monotonic() < deadline, group.logs()
                    await asyncio.sleep(0.1)
                ready_s = time.monotonic() - deadline + 120
                created = await container.store.start_runs(
                    numbered_runs(record, version, RUNS), container.clock()
                )
                assert all(was_created for _, was_created in created)

                async def all_finished() -> bool:
                    return await ended_runs(pg_url) == RUNS

                drained = time.monotonic()
                await until(all_finished, 120, f"{RUNS} runs to finish", group, every_s=0.2)
                print(
                    f"\n[scale] {WORKERS} workers ready in {ready_s:.1f} s; {RUNS} runs "
                    f"({RUNS * 4} steps) drained in {time.monotonic() - drained:.1f} s"
                )
                assert all(w.running() for w in batch), group.logs()
                logs = group.logs()
        finally:
            await container.close()
    assert "Traceback" not in logs, logs

    # Every step ran once and every HTTP call (its idempotency key) reached the server once.
    per_worker = await steps_ran_once(
        pg_url, http_server.requests, runs_count=RUNS, steps_per_run=4
    )
    assert len(http_server.requests) == RUNS * 2
    # The work was spread: most of the twenty processes took steps.
    assert len(per_worker) >= WORKERS // 2, per_worker


@pytest.mark.postgres
async def test_the_api_side_works_through_pgbouncer_and_listens_on_the_direct_url(
    pg_url: str, tmp_path: Path
) -> None:
    """A service, a worker and a live-stream listener on one pooled URL: runs start and
    finish, prepared statements never collide, and LISTEN goes to ``db_listen_url`` (without
    it, streams poll)."""
    definition = {
        "name": "pooled",
        "start": "a",
        "nodes": [{"id": "a", "type": "set", "config": {"values": {"n": "{{ input.n }}"}}}],
    }
    with pgbouncer(pg_url, server_connections=2) as pooled_url:
        polling = await build(
            Settings(db_url=pooled_url, db_pooler="transaction", workers=0, load_plugins=False)
        )
        try:
            assert await polling.store.listen_for_events(lambda: None) is None
        finally:
            await polling.close()
        container = await build(
            Settings(
                db_url=pooled_url,
                db_pooler="transaction",
                db_listen_url=pg_url,
                workers=0,
                load_plugins=False,
            )
        )
        woken = asyncio.Event()
        listener = await container.store.listen_for_events(woken.set)
        assert listener is not None
        worker = container.new_worker()
        task = asyncio.create_task(worker.run())
        try:
            record, _, _ = await container.service.save_workflow(definition)
            started = [
                (await container.service.start_run(record.id, {"n": n}))[0] for n in range(30)
            ]

            async def done() -> bool:
                found = [await container.store.get_run(run.id) for run in started]
                return all(run.status is RunStatus.SUCCEEDED for run in found)

            await until(done, 30, "30 pooled runs")
            async with asyncio.timeout(10):
                await woken.wait()  # a NOTIFY reached the listener on the direct URL
        finally:
            worker.stop()
            await task
            await listener.close()
            await container.close()


def test_the_pooler_settings_are_for_postgresql(tmp_path: Path) -> None:
    from flowyard.domain.errors import InvalidInput
    from flowyard.store import open_store

    with pytest.raises(InvalidInput, match="for PostgreSQL"):
        open_store(f"sqlite:///{tmp_path}/x.db", pooler="transaction")
