"""The workflow read cache (decisions 0030, 0037): two API processes on one database (two
containers, each with its app), SQLite and PostgreSQL. A reads (and keeps what it read), B
publishes or archives, A's next reads answer the new state; a process reads its own writes
at once; on PostgreSQL a lost listener stops the cache until it is back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from drafts.test_api import lead_routing, ok
from flowyard.api.app import create_app
from flowyard.bootstrap import Container, build
from flowyard.store import normalize_url
from support.api import admin_client
from support.harness import eventually

API = "/api/v1"
WF = f"{API}/workflows/lead-routing"


def hits(container: Container, part: str = "workflow") -> float:
    value = container.metrics.registry.get_sample_value(
        "flowyard_read_cache_total", {"part": part, "outcome": "hit"}
    )
    return value or 0.0


@contextlib.asynccontextmanager
async def second_process(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of another API process on the same database."""
    other = await build(container.settings)
    try:
        async with admin_client(other, app=create_app(other.settings, container=other)) as c:
            yield c
    finally:
        await other.close()


async def publish_a_change(client: httpx.AsyncClient) -> None:
    tag = ok(await client.post(f"{WF}/draft"))[0]
    patch = [{"op": "add", "path": "/definition/description", "value": "v2"}]
    tag = ok(await client.patch(f"{WF}/draft", headers={"If-Match": tag}, json=patch))[0]
    published = await client.post(f"{WF}/draft/publish", headers={"If-Match": tag})
    assert published.status_code == 201, published.text


async def test_a_publish_in_another_process_is_read_at_once_after(container: Container) -> None:
    async with admin_client(container) as a, second_process(container) as b:
        assert (await a.post(f"{API}/workflows", json=lead_routing())).status_code == 201
        for _ in range(3):
            read = await a.get(WF)
            assert (read.headers["ETag"], read.json()["version"]["version"]) == ('"1"', 1)
        # Kept: the listener (PostgreSQL) or the change feed's tail (SQLite) hears every change.
        assert hits(container) >= 2
        assert hits(container, "version") >= 2

        await publish_a_change(b)

        async def new_version() -> bool:
            body = (await a.get(WF)).json()
            return bool(body["version"]["version"] == 2)

        await eventually(new_version, "A to read the version B published")
        body = (await a.get(WF)).json()
        assert body["version"]["definition"]["description"] == "v2"
        assert (await a.get(f"{API}/workflows/lead-routing/versions/1")).json()["version"] == 1

        archived = await b.delete(WF, headers={"If-Match": '"2"'})
        assert archived.status_code == 200, archived.text

        async def archived_in_a() -> bool:
            return bool((await a.get(WF)).headers["ETag"] == '"2-archived"')

        await eventually(archived_in_a, "A to read the workflow archived")
        refused = await a.post(f"{WF}/runs", json={"input": {"region": "East"}})
        assert refused.status_code == 409, refused.text


async def test_a_process_reads_its_own_writes_at_once(container: Container) -> None:
    async with admin_client(container) as a:
        assert (await a.post(f"{API}/workflows", json=lead_routing())).status_code == 201
        assert (await a.get(WF)).headers["ETag"] == '"1"'
        assert (await a.get(WF)).headers["ETag"] == '"1"'
        await publish_a_change(a)
        assert (await a.get(WF)).headers["ETag"] == '"2"'  # no wait: forgotten locally
        saved = await a.put(WF, json={**lead_routing(), "description": "v3"})
        assert saved.status_code == 200, saved.text
        assert (await a.get(WF)).json()["version"]["version"] == 3
        assert (await a.delete(WF)).status_code == 200
        assert (await a.get(WF)).headers["ETag"] == '"3-archived"'
        started = await a.post(f"{WF}/runs", json={"input": {"region": "East"}})
        assert started.status_code == 409, started.text


@pytest.mark.postgres
async def test_a_lost_listener_stops_the_cache_until_it_is_back(pg_url: str) -> None:
    from flowyard.settings import Settings

    await _migrate(pg_url)
    container = await build(Settings(db_url=pg_url, workers=0, load_plugins=False))
    engine = create_async_engine(normalize_url(pg_url))
    hub = container.service.changes
    hub.check_s = 0.05
    try:
        async with admin_client(container) as a, second_process(container) as b:
            assert (await a.post(f"{API}/workflows", json=lead_routing())).status_code == 201
            await a.get(WF)
            assert hub.live
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                        " AND pid <> pg_backend_pid()"
                    )
                )
            await eventually(lambda: not hub.live, "the listener to be seen lost")
            before = hits(container)
            await publish_a_change(b)
            # Whatever the listener missed, A does not serve what it kept before.
            read = await a.get(WF)
            if not hub.live:
                assert read.headers["ETag"] == '"2"'
                assert hits(container) == before
            await eventually(lambda: hub.live, "the listener to be back")
            assert (await a.get(WF)).headers["ETag"] == '"2"'
            await a.get(WF)
            assert hits(container) > before
    finally:
        await engine.dispose()
        await container.close()


async def _migrate(url: str) -> None:
    from flowyard.store import open_store

    store = open_store(url)
    try:
        await store.migrate()
    finally:
        await store.close()
