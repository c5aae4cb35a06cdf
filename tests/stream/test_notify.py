"""Migration 0003: the NOTIFY trigger on PostgreSQL, and the shared listener it wakes."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from flowyard.store import normalize_url, open_store
from flowyard.store.migrate import alembic_config
from flowyard.store.notify import listen_for_events

TRIGGERS = "SELECT count(*) FROM pg_trigger WHERE tgname = 'run_events_notify'"


@pytest.mark.postgres
async def test_inserting_events_notifies_listeners_until_downgraded(pg_url: str) -> None:
    store = open_store(pg_url)
    engine = create_async_engine(normalize_url(pg_url))
    woken = asyncio.Event()
    listener = await listen_for_events(normalize_url(pg_url), woken.set)
    assert listener is not None
    try:
        await store.migrate()
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text(TRIGGERS))).scalar_one() == 1
        await store.create_workflow("w", None, {"name": "w"}, None)
        assert not woken.is_set()  # only run_events inserts notify

        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO runs (id, workflow_id, workflow_version, status, created_at,"
                    " updated_at) SELECT 'r1', id, 1, 'pending', now(), now() FROM workflows"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO run_events (run_id, type, created_at) VALUES"
                    " ('r1', 'x', now()), ('r1', 'y', now())"
                )
            )
        await asyncio.wait_for(woken.wait(), 5)
        assert await store.event_horizon() == 2

        def downgrade(connection: sa.Connection) -> None:
            command.downgrade(alembic_config(connection), "0002")

        async with engine.connect() as conn:
            await conn.run_sync(downgrade)
            await conn.commit()
            assert (await conn.execute(sa.text(TRIGGERS))).scalar_one() == 0
    finally:
        await listener.close()
        await engine.dispose()
        await store.close()


@pytest.mark.postgres
async def test_the_horizon_waits_for_an_open_transaction_holding_a_lower_id(pg_url: str) -> None:
    store = open_store(pg_url)
    await store.migrate()
    engine = create_async_engine(normalize_url(pg_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO workflows (id, name, latest_version, archived, created_at,"
                    " updated_at) VALUES ('w', 'w', 1, false, now(), now());"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO runs (id, workflow_id, workflow_version, status, created_at,"
                    " updated_at) VALUES ('r1', 'w', 1, 'pending', now(), now())"
                )
            )
        insert = sa.text(
            "INSERT INTO run_events (run_id, type, created_at) VALUES ('r1', 'e', now())"
        )
        async with engine.connect() as early, engine.connect() as late:
            await early.execute(insert)  # id 1, not committed
            await late.execute(insert)  # id 2
            await late.commit()
            store.horizon_wait_s = 0.2  # type: ignore[attr-defined]
            assert await store.event_horizon() is None  # id 1 may still commit
            await early.commit()
        assert await store.event_horizon() == 2
    finally:
        await engine.dispose()
        await store.close()
