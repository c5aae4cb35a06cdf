"""SQLAlchemy's aiosqlite adapter, with one thread hop per statement.

aiosqlite runs every sqlite3 call on its connection's thread and hands each result back to
the event loop. SQLAlchemy's adapter makes one such call per cursor operation: open a
cursor, execute, fetch the rows, close the cursor: three or four hops for one statement,
and one more to roll back a connection that goes back to the pool. Each hop wakes a thread
and passes the GIL twice; under load a hop costs a few hundred microseconds, and a
state-machine action made 40 of them (decision 0020).

Here a statement is one call on the connection's thread (execute, fetch every row, close),
and the cursor object the dialect sees only holds the result. Everything else (the
connection, transactions, server-side cursors, errors) is SQLAlchemy's adapter unchanged.
It uses aiosqlite's ``Connection._execute`` (run a function on the connection's thread),
the same private entry point SQLAlchemy's adapter uses to set the isolation level; the
store's contract suite runs on it.

A write connection may also hold a :class:`WriterLock` (decision 0041): an exclusive
``flock`` on a file beside the database, taken on the connection's thread before ``BEGIN
IMMEDIATE`` and given back when the transaction ends. Processes that write one database take
turns on it, and a waiter gets in within a millisecond of the writer before it committing;
without it a writer that found the database locked slept in SQLite's busy handler, up to
100 ms at a time.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT

_log = logging.getLogger("flowyard.store.sqlite")
_Result = tuple[Any, list[Any] | None, int, int | None]


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Result:
    """On the connection's thread: the whole statement, rows included."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class WriterLock:
    """An exclusive ``flock`` of one file, held by one write transaction at a time.

    Taken without blocking, retried every ``POLL_S`` at most (a waiter gets in within a
    millisecond of the holder's commit), for at most ``wait_s``: a writer that waited that
    long goes on without it, to SQLite's own lock and busy timeout, so a holder that hangs
    (or a descriptor leaked with the lock) never stops the other writers for good. The lock
    orders writers; SQLite's lock still guards the database."""

    POLL_S = 0.001

    def __init__(self, path: str, wait_s: float = 30.0) -> None:
        self.path = path
        self.wait_s = wait_s
        self._fd: int | None = None
        self.held = False
        #: Transactions that went on without the lock after ``wait_s``.
        self.gave_up = 0

    def acquire(self) -> None:
        """Wait (on this thread, never the event loop's) until no other writer holds it, or
        ``wait_s`` has passed."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fd = self._fd
        deadline = time.monotonic() + self.wait_s
        delay = 0.0001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if self._fd != fd:
                    return  # the connection was closed meanwhile
                if time.monotonic() >= deadline:
                    self.gave_up += 1
                    _log.warning(
                        "waited %.0f s for the writers' lock %s; going on to SQLite's own lock",
                        self.wait_s,
                        self.path,
                    )
                    return
                time.sleep(delay)
                delay = min(delay * 2, self.POLL_S)
                continue
            self.held = True
            return

    def release(self) -> None:
        if self.held and self._fd is not None:
            self.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Let go and close the descriptor (closing it would let go of the lock anyway)."""
        self.held = False
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


#: The writer lock of each write connection (keyed by its aiosqlite thread object).
_WRITER_LOCKS: weakref.WeakKeyDictionary[Any, WriterLock] = weakref.WeakKeyDictionary()
_BEGIN_WRITE = "BEGIN IMMEDIATE"


def _begin_locked(conn: sqlite3.Connection, lock: WriterLock, operation: str) -> _Result:
    """On the connection's thread: the writer lock, then ``BEGIN IMMEDIATE``."""
    lock.acquire()
    try:
        return _run(conn, operation, None, False)
    except BaseException:
        lock.release()
        raise


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement runs in one call on the connection's thread."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        """Nothing to close: the statement's cursor closed on its thread."""

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._run(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._run(operation, seq_of_parameters, many=True)

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        lock = _WRITER_LOCKS.get(connection) if operation == _BEGIN_WRITE else None
        async with self._adapt_connection._execute_mutex:
            if lock is not None:
                result: _Result = await connection._execute(  # type: ignore[no-untyped-call]
                    _begin_locked, connection._conn, lock, operation
                )
            else:
                result = await connection._execute(  # type: ignore[no-untyped-call]
                    _run, connection._conn, operation, parameters, many
                )
        self._description, rows, self._rowcount, self._lastrowid = result
        self._rows = collections.deque(rows or ())

    def setinputsizes(self, *inputsizes: Any) -> None:
        """sqlite3 ignores input sizes."""


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._end_write()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._end_write()

    # Every way a connection ends lets go of its lock: a close, and the pool's terminate of
    # a connection it invalidated (a transaction cancelled halfway), which bypasses close().
    def close(self) -> None:
        try:
            super().close()
        finally:
            self._drop_lock()

    async def _terminate_graceful_close(self) -> None:
        try:
            await super()._terminate_graceful_close()
        finally:
            self._drop_lock()

    def _terminate_force_close(self) -> None:
        try:
            super()._terminate_force_close()
        finally:
            self._drop_lock()

    def _end_write(self) -> None:
        lock = _WRITER_LOCKS.get(self._connection)
        if lock is not None:
            lock.release()

    def _drop_lock(self) -> None:
        lock = _WRITER_LOCKS.pop(self._connection, None)
        if lock is not None:
            lock.close()


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DBAPI shim whose connections make :class:`OneHopCursor` cursors."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        """``writer_lock=<path>``: write transactions take turns on that file's lock."""
        lock_path = kw.pop("writer_lock", None)
        connection = super().connect(*arg, **kw)
        connection.__class__ = OneHopConnection
        if lock_path is not None:
            lock = WriterLock(lock_path)
            _WRITER_LOCKS[connection._connection] = lock
            # A connection dropped without being closed closes its descriptor when collected.
            weakref.finalize(connection._connection, lock.close)
        return connection  # type: ignore[return-value]


def dbapi() -> OneHopDBAPI:
    """The ``module=`` to give ``create_async_engine`` for a ``sqlite+aiosqlite`` URL."""
    return OneHopDBAPI()


__all__: Sequence[str] = ("OneHopCursor", "dbapi")
