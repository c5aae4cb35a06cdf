"""The store contract for changes between processes (decisions 0030, 0037): a store hears the
workflow rows and draft changes of another store on the same database (another process):
PostgreSQL through LISTEN/NOTIFY, a SQLite file through the change feed's tail.

Every test runs on SQLite and on PostgreSQL through the ``store`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from contract.helpers import make_workflow
from flowyard.store import Store, normalize_url, open_store
from flowyard.store.changes import FEED_KEEP, TRIM_EVERY
from flowyard.store.schema import change_feed
from support.harness import eventually


@pytest.fixture
async def other(db_url: str) -> AsyncIterator[Store]:
    """Another process's store on the same database."""
    s = open_store(db_url)
    try:
        yield s
    finally:
        await s.close()


async def test_a_store_hears_another_stores_changes(store: Store, other: Store) -> None:
    workflows: list[str] = []
    drafts: list[str] = []
    listener = await store.listen_for_changes(workflows.append, drafts.append)
    assert listener is not None
    try:
        record = await make_workflow(other, "theirs")
        sent = await other.announce_draft('{"draft": 1}')
        await eventually(lambda: record.id in workflows, "the other store's new workflow")
        await eventually(lambda: drafts == ['{"draft": 1}'], "the other store's draft change")
        assert listener.is_alive()
        mine = await make_workflow(store, "mine")
        own = await store.announce_draft('{"draft": 2}')
        assert sent is own  # True: every process hears it; False: deliver it in-process
        if store.dialect == "sqlite":
            # Its own changes are not read back: the process made them and knows.
            await make_workflow(other, "later")
            await eventually(lambda: len(workflows) == 2, "the later workflow")
            assert mine.id not in workflows and drafts == ['{"draft": 1}']
        else:
            await eventually(lambda: mine.id in workflows, "its own workflow")
    finally:
        await listener.close()
    assert not listener.is_alive()


async def test_an_in_memory_database_shares_nothing(tmp_path: object) -> None:
    memory = open_store("sqlite:///:memory:")
    try:
        await memory.migrate()
        assert memory.shares_changes is False
        assert await memory.listen_for_changes(print, print) is None
        await make_workflow(memory)
        assert await memory.announce_draft("{}") is False
    finally:
        await memory.close()


async def test_writers_trim_the_feed(store: Store, other: Store, db_url: str) -> None:
    if store.dialect != "sqlite":
        pytest.skip("PostgreSQL NOTIFYs: the feed stays empty")
    engine = create_async_engine(normalize_url(db_url))
    rows = sa.select(change_feed.c.seq).order_by(change_feed.c.seq)
    try:
        async with engine.begin() as conn:
            old = {"kind": "draft", "payload": "{}", "origin": "gone"}
            await conn.execute(change_feed.insert().values(seq=5, **old))
            await conn.execute(change_feed.insert().values(seq=FEED_KEEP + TRIM_EVERY - 1, **old))
        await other.announce_draft("{}")  # seq FEED_KEEP + TRIM_EVERY: a multiple, it trims
        async with engine.connect() as conn:
            kept = list((await conn.execute(rows)).scalars())
        assert kept == [FEED_KEEP + TRIM_EVERY - 1, FEED_KEEP + TRIM_EVERY]
    finally:
        await engine.dispose()


async def test_a_tail_that_missed_trimmed_rows_stops(store: Store, db_url: str) -> None:
    if store.dialect != "sqlite":
        pytest.skip("PostgreSQL NOTIFYs: the feed stays empty")
    listener = await store.listen_for_changes(print, print)
    assert listener is not None
    engine = create_async_engine(normalize_url(db_url))
    try:
        async with engine.begin() as conn:
            newest = await conn.scalar(sa.select(sa.func.max(change_feed.c.seq))) or 0
            # The rows before this one were trimmed before the tail read them: it must not
            # skip them silently (the hub then forgets everything and starts again).
            await conn.execute(
                change_feed.insert().values(
                    seq=newest + 5, kind="workflow", payload="wf", origin="other"
                )
            )
        await eventually(lambda: not listener.is_alive(), "the tail to stop at the gap")
    finally:
        await listener.close()
        await engine.dispose()
