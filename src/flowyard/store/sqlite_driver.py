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
"""

from __future__ import annotations

import collections
import sqlite3
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
        async with self._adapt_connection._execute_mutex:
            result: _Result = await connection._execute(  # type: ignore[no-untyped-call]
                _run, connection._conn, operation, parameters, many
            )
        self._description, rows, self._rowcount, self._lastrowid = result
        self._rows = collections.deque(rows or ())

    def setinputsizes(self, *inputsizes: Any) -> None:
        """sqlite3 ignores input sizes."""


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DBAPI shim whose connections make :class:`OneHopCursor` cursors."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        connection = super().connect(*arg, **kw)
        connection.__class__ = OneHopConnection
        return connection  # type: ignore[return-value]


def dbapi() -> OneHopDBAPI:
    """The ``module=`` to give ``create_async_engine`` for a ``sqlite+aiosqlite`` URL."""
    return OneHopDBAPI()


__all__: Sequence[str] = ("OneHopCursor", "dbapi")
