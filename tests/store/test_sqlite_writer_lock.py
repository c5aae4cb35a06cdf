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

from flowyard.store import sqlite_driver
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


async def test_a_transaction_cancelled_halfway_lets_go(lite: SqliteStore, tmp_path: Path) -> None:
    """A task cancelled inside its write transaction (the pool then terminates the connection,
    bypassing its close) leaves the lock free, and the next writer goes in."""
    inside = asyncio.Event()

    async def stuck(conn: AsyncConnection) -> None:
        await _insert(conn)
        inside.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(lite._tx(stuck))
    async with asyncio.timeout(10):
        await inside.wait()
    assert not _is_free(_lock_path(tmp_path))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(10):
        await lite._tx(_insert)
    assert _is_free(_lock_path(tmp_path))


def test_a_writer_waits_a_bounded_time_then_goes_on_without_the_lock(tmp_path: Path) -> None:
    """A holder that never lets go (hung, or a descriptor leaked with the lock) delays the
    other writers by ``wait_s``, then they go on to SQLite's own lock."""
    path = tmp_path / "x-writer.lock"
    lock = sqlite_driver.WriterLock(str(path), wait_s=0.2)
    with _held_elsewhere(path, 1.0):
        started = time.monotonic()
        lock.acquire()
        waited = time.monotonic() - started
    assert not lock.held and lock.gave_up == 1
    assert 0.2 <= waited < 1.0
    lock.acquire()  # free again: taken at once
    assert lock.held
    lock.close()


async def test_a_connection_the_pool_invalidates_mid_transaction_lets_go(
    lite: SqliteStore, tmp_path: Path
) -> None:
    """A connection invalidated inside its transaction (what SQLAlchemy does after an error
    it cannot trust the connection past) is terminated, which bypasses its close: its lock
    goes with it, and the next writer goes in."""

    async def invalidated(conn: AsyncConnection) -> None:
        await _insert(conn)
        await conn.invalidate()

    with pytest.raises(Exception):  # noqa: B017 - whatever the closed transaction raises
        await lite._tx(invalidated)
    assert _is_free(_lock_path(tmp_path))
    async with asyncio.timeout(10):
        await lite._tx(_insert)
