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
turns on it, and a waiter is woken the moment the writer before it commits; without it a
writer that found the database locked slept in SQLite's busy handler, up to 100 ms at a time.
"""

from __future__ import annotations

import collections
import fcntl
import os
import sqlite3
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
    """An exclusive ``flock`` of one file, held by one write transaction at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self.held = False

    def acquire(self) -> None:
        """Wait (blocking this thread, never the event loop's) until no other writer holds
        it."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.held and self._fd is not None:
            self.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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

    def close(self) -> None:
        try:
            super().close()
        finally:
            lock = _WRITER_LOCKS.pop(self._connection, None)
            if lock is not None:
                lock.close()

    def _end_write(self) -> None:
        lock = _WRITER_LOCKS.get(self._connection)
        if lock is not None:
            lock.release()


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
            _WRITER_LOCKS[connection._connection] = WriterLock(lock_path)
        return connection  # type: ignore[return-value]


def dbapi() -> OneHopDBAPI:
    """The ``module=`` to give ``create_async_engine`` for a ``sqlite+aiosqlite`` URL."""
    return OneHopDBAPI()


__all__: Sequence[str] = ("OneHopCursor", "dbapi")
