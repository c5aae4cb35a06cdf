"""SQLite's writers take turns on a lock file beside the database (store/sqlite_driver.py,
decision 0041): held from ``BEGIN IMMEDIATE`` to the transaction's end, on the write
connection only, and a writer that waits for it gets in as the holder lets go."""

from __future__ import annotations

import asyncio
import fcntl
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.store.sqlite import SqliteStore


@pytest.fixture
async def lite(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore.open(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")

    async def create(conn: AsyncConnection) -> None:
        await conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))

    await store._tx(create)
    yield store
    await store.close()


def _lock_path(tmp_path: Path) -> Path:
    return tmp_path / "w.db-writer.lock"


def _is_free(path: Path) -> bool:
    """Whether nobody holds the file's lock (tried from a descriptor of our own)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing lets go of a lock we took
    return True


async def _insert(conn: AsyncConnection) -> None:
    await conn.execute(sa.text("INSERT INTO t VALUES (1)"))


async def test_a_write_transaction_holds_the_lock_until_it_ends(
    lite: SqliteStore, tmp_path: Path
) -> None:
    path = _lock_path(tmp_path)
    seen: list[bool] = []

    async def inside(conn: AsyncConnection) -> None:
        await _insert(conn)
        seen.append(_is_free(path))

    await lite._tx(inside)
    assert seen == [False]
    assert _is_free(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_rolled_back_transaction_lets_go_and_reads_never_take_it(
    lite: SqliteStore, tmp_path: Path
) -> None:
    path = _lock_path(tmp_path)

    async def fails(conn: AsyncConnection) -> None:
        await _insert(conn)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await lite._tx(fails)
    assert _is_free(path)
    seen: list[bool] = []

    async def reads(conn: AsyncConnection) -> None:
        await conn.execute(sa.text("SELECT count(*) FROM t"))
        seen.append(_is_free(path))

    await lite._tx(reads, write=False)
    assert seen == [True]


@contextmanager
def _held_elsewhere(path: Path, seconds: float) -> Iterator[list[float]]:
    """Another writer (its own open file, as another process has) holds the lock for
    ``seconds``; yields [the time it let go] once it has."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    released: list[float] = []

    def let_go() -> None:
        time.sleep(seconds)
        released.append(time.monotonic())
        fcntl.flock(fd, fcntl.LOCK_UN)

    thread = threading.Thread(target=let_go)
    thread.start()
    try:
        yield released
    finally:
        thread.join()
        os.close(fd)


async def test_a_writer_waits_for_the_holder_and_gets_in_as_it_lets_go(
    lite: SqliteStore, tmp_path: Path
) -> None:
    got_in: list[float] = []

    async def inside(conn: AsyncConnection) -> None:
        got_in.append(time.monotonic())
        await _insert(conn)

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        with _held_elsewhere(_lock_path(tmp_path), 0.3) as released:
            async with asyncio.timeout(30):
                await lite._tx(inside)
    finally:
        ticker.cancel()
    # It went in after the holder let go, and the event loop stayed free meanwhile (the
    # wait is on the connection's thread).
    assert got_in[0] >= released[0]
    assert ticks >= 5
