"""The one-hop aiosqlite cursor (store/sqlite_driver.py) behaves like a DBAPI cursor: rows,
row counts, last row ids, executemany, errors, server-side cursors, and one thread hop per
statement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite.core
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from flowyard.store import sqlite_driver

META = sa.MetaData()
ITEMS = sa.Table(
    "items",
    META,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, unique=True, nullable=False),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'd.db'}",
        module=sqlite_driver.dbapi(),
        pool_reset_on_return=None,
    )
    async with engine.begin() as conn:
        await conn.run_sync(META.create_all)
    yield engine
    await engine.dispose()


async def test_rows_counts_and_ids(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        first = await conn.execute(ITEMS.insert().values(name="a"))
        assert first.inserted_primary_key == (1,)
        many = await conn.execute(ITEMS.insert(), [{"name": "b"}, {"name": "c"}])
        assert many.rowcount == 2
        updated = await conn.execute(
            ITEMS.update().where(ITEMS.c.id > 1).values(name="x" + ITEMS.c.name)
        )
        assert updated.rowcount == 2
        rows = (await conn.execute(sa.select(ITEMS.c.name).order_by(ITEMS.c.id))).all()
        assert [r.name for r in rows] == ["a", "xb", "xc"]
        one = (await conn.execute(sa.select(ITEMS.c.id).where(ITEMS.c.name == "a"))).scalar_one()
        assert one == 1
        returned = await conn.execute(
            ITEMS.update().where(ITEMS.c.id == 1).values(name="z").returning(ITEMS.c.id)
        )
        assert returned.scalars().all() == [1]
        assert (await conn.execute(sa.select(ITEMS).where(ITEMS.c.id == 99))).first() is None


async def test_errors_are_sqlalchemys_and_roll_back(engine: AsyncEngine) -> None:
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(ITEMS.insert().values(name="a"))
            await conn.execute(ITEMS.insert().values(name="a"))
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(ITEMS))).scalar() == 0


async def test_server_side_cursors_still_stream(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(ITEMS.insert(), [{"name": f"n{i}"} for i in range(50)])
    async with engine.connect() as conn:
        result = await conn.stream(sa.select(ITEMS.c.id).order_by(ITEMS.c.id))
        assert [row.id async for row in result] == list(range(1, 51))


async def test_a_statement_is_one_call_on_the_connection_thread(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = aiosqlite.core.Connection._execute

    async def counting(self: aiosqlite.Connection, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(getattr(fn, "__name__", "?"))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counting)
    async with engine.begin() as conn:
        await conn.execute(ITEMS.insert().values(name="a"))
        (await conn.execute(sa.select(ITEMS))).all()
    # BEGIN (pysqlite's own), the insert, the select, the commit; no cursor or reset hops.
    assert calls.count("_run") == 2
    assert "cursor" not in calls and "close" not in calls and "rollback" not in calls
