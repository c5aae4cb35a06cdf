"""A PostgreSQL server that drops every connection (a restart, a failover, an idle timeout of a
proxy) loses nothing and surfaces no error: the store retries a transaction whose pooled
connection turned out dead on a fresh one, so the pool need not test each connection before
lending it (no ``pool_pre_ping``: one round trip less per transaction)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from flowyard.api import create_app
from flowyard.bootstrap import Container, build
from flowyard.domain.statuses import RunStatus
from flowyard.settings import Settings
from support.api import admin_client
from support.pg import admin_url, database_name

pytestmark = pytest.mark.postgres

API = "/api/v1"
FLOW: dict[str, Any] = {
    "name": "restarts",
    "start": "t",
    "nodes": [
        {"id": "t", "type": "trigger", "next": "s"},
        {"id": "s", "type": "set", "config": {"values": {"v": "{{ input.n }}"}}, "next": "z"},
        {"id": "z", "type": "end", "config": {"output": {"v": "{{ steps.s.output.v }}"}}},
    ],
}


@pytest.fixture
def migrated_pg(pg_template: Any) -> Iterator[str]:
    url: str = pg_template.take()
    try:
        yield url
    finally:
        pg_template.drop(url)


@pytest.fixture
async def container(migrated_pg: str) -> AsyncIterator[Container]:
    settings = Settings(
        db_url=migrated_pg, poll_interval_s=0.05, workers=0, load_plugins=False, db_pool_size=4
    )
    c = await build(settings)
    try:
        yield c
    finally:
        await c.close()


async def drop_every_connection(url: str) -> int:
    """What a server restart does to its clients: every session of the database ends."""
    conn = await asyncpg.connect(admin_url(), timeout=5)
    try:
        ended: int = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database_name(url),
        )
    finally:
        await conn.close()
    return ended


async def test_reads_writes_and_runs_go_on_after_every_connection_dropped(
    container: Container, migrated_pg: str
) -> None:
    service = container.service
    record, _, _ = await service.save_workflow(FLOW)
    # Fill the pool: several connections checked out at once, then returned to it.
    await asyncio.gather(*(service.get_workflow(record.id) for _ in range(4)))
    before, _ = await service.start_run(record.id, {"n": 0})

    assert await drop_every_connection(migrated_pg) >= 1

    # Reads, then writes, each on a pooled connection that is now dead.
    assert (await service.get_workflow(record.id)).id == record.id
    assert (await service.get_run(before.id)).run.id == before.id
    started = [(await service.start_run(record.id, {"n": n}))[0] for n in range(1, 4)]

    # A worker claims, executes and settles every run, the one started before included.
    worker = container.new_worker()
    ids = [before.id, *(run.id for run in started)]

    async def all_done() -> bool:
        runs = [await container.store.get_run(run_id) for run_id in ids]
        return all(run.status.is_terminal for run in runs)

    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(30):
            while not await all_done():
                await asyncio.sleep(0.05)
            # Again while the worker holds connections of its own.
            assert await drop_every_connection(migrated_pg) >= 1
            late, _ = await service.start_run(record.id, {"n": 9})
            ids.append(late.id)
            while not await all_done():
                await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await task

    for n, run_id in zip([0, 1, 2, 3, 9], ids, strict=True):
        run = await container.store.get_run(run_id)
        assert run.status == RunStatus.SUCCEEDED, (run_id, run.error)
        assert run.output == {"v": n}


async def test_the_api_answers_after_every_connection_dropped(
    container: Container, migrated_pg: str
) -> None:
    app = create_app(container.settings, container=container)
    async with admin_client(container, app=app) as client:
        created = await client.post(f"{API}/workflows", json=FLOW)
        assert created.status_code in (200, 201), created.text
        workflow_id = created.json()["workflow"]["id"]
        assert (await client.get(f"{API}/workflows")).status_code == 200

        assert await drop_every_connection(migrated_pg) >= 1

        # Authentication (the user's key), the read and the write each meet a dead connection.
        listed = await client.get(f"{API}/workflows")
        assert listed.status_code == 200, listed.text
        started = await client.post(f"{API}/workflows/{workflow_id}/runs", json={"input": {"n": 1}})
        assert started.status_code in (201, 202), started.text


async def test_the_pool_does_not_ping_and_reads_do_not_begin(container: Container) -> None:
    """The round trips this file makes unnecessary stay gone: no ping per checkout, and
    no BEGIN/COMMIT around reads (one pool for both)."""
    write, read = container.store._write, container.store._read
    assert write.pool._pre_ping is False
    assert read.get_execution_options()["isolation_level"] == "AUTOCOMMIT"
    assert read.pool is write.pool
