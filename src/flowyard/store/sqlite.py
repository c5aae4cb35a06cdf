"""SQLite: the embedded default. WAL, ``BEGIN IMMEDIATE`` for writers, a busy timeout."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from flowyard.domain.errors import StoreUnavailable
from flowyard.domain.jsonvalue import loads_stored
from flowyard.store import sqlite_driver
from flowyard.store.sql import SqlStore

BUSY_TIMEOUT_MS = 30_000


def _enable_wal(cursor: Any) -> None:
    # WAL is persistent, so this only matters on a new file. Changing the journal mode does
    # not go through the busy handler: when several processes open a fresh database at once
    # the switch can fail with "database is locked" at once, so retry it briefly.
    for attempt in range(100):
        try:
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # the driver adapter wraps sqlite3.OperationalError
            if "locked" not in str(exc).lower() or attempt == 99:
                raise
            time.sleep(0.02)


def _configure(engine: AsyncEngine, *, begin: str, memory: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions get in the way).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # The busy timeout first, so that everything after it waits for locks.
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if not memory:
            _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        # NORMAL is durable across application crashes in WAL mode; only an OS crash or power
        # loss can drop the last transactions.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(begin)


def _create_private(path: Path) -> None:
    """Create the database file owner-only (0600) before SQLite opens it, and its directory
    0700 when it does not exist. SQLite gives its -wal and -shm files the mode of the
    database file, so they are owner-only too. An existing file keeps its mode."""
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.parent.is_dir():  # the database exists (or another process just made it)
            return
        raise _cannot_create(path, "a file is in the way of its directory") from None
    except OSError as exc:
        raise _cannot_create(path, exc.strerror or str(exc)) from exc
    os.close(fd)  # an empty file is an empty SQLite database


def _cannot_create(path: Path, reason: str) -> StoreUnavailable:
    return StoreUnavailable(
        f"cannot create the database {path}: {reason}; choose a writable location with --db "
        "or FLOWYARD_DB"
    )


class SqliteStore(SqlStore):
    """The embedded store. Writers serialise on ``BEGIN IMMEDIATE`` (no lock upgrades, so no
    SQLITE_BUSY deadlocks); readers use deferred transactions and never block writers in WAL."""

    dialect = "sqlite"
    serial_writes = True

    @classmethod
    def open(cls, url: str) -> SqliteStore:
        """Create the engines for ``sqlite+aiosqlite:///path`` (or ``:memory:``)."""
        sa_url = sa.make_url(url)
        database = sa_url.database or ""
        memory = database in ("", ":memory:")
        if memory:
            # One shared connection, or every pooled connection would see its own empty DB.
            engine = create_async_engine(
                url,
                module=sqlite_driver.dbapi(),
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
                json_deserializer=loads_stored,
                # What a statement binds may be huge or secret (a step's output, a credential):
                # never in an error message or a log.
                hide_parameters=True,
            )
            _configure(engine, begin="BEGIN IMMEDIATE", memory=True)
            return cls(url, engine)
        path = Path(database).expanduser()
        _create_private(path)
        connect_args = {"timeout": BUSY_TIMEOUT_MS / 1000}
        # Rows an older version wrote may hold what the API cannot serve: read them repaired.
        write = create_async_engine(
            url,
            module=sqlite_driver.dbapi(),
            # Every transaction ends in its commit or rollback (engine.begin()): resetting a
            # returned connection would be one more round trip to its thread.
            pool_reset_on_return=None,
            # Writers of every process take turns on a lock file beside the database, woken
            # as the writer before them commits (decision 0041), not by the busy handler.
            connect_args={**connect_args, "writer_lock": f"{path}-writer.lock"},
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            json_deserializer=loads_stored,
            # What a statement binds may be huge or secret (a step's output, a credential):
            # never in an error message or a log.
            hide_parameters=True,
        )
        read = create_async_engine(
            url,
            module=sqlite_driver.dbapi(),
            pool_reset_on_return=None,
            connect_args=connect_args,
            pool_size=5,
            max_overflow=5,
            json_deserializer=loads_stored,
            # What a statement binds may be huge or secret (a step's output, a credential):
            # never in an error message or a log.
            hide_parameters=True,
        )
        _configure(write, begin="BEGIN IMMEDIATE", memory=False)
        _configure(read, begin="BEGIN", memory=False)
        return cls(url, write, read)

    async def _lock_migrations(self, conn: AsyncConnection) -> None:
        # Opening the transaction issues BEGIN IMMEDIATE: the database's write lock, held until
        # the upgrade commits. Alembic keeps its context in a module global, so it must never
        # run twice at once, in one process or several.
        await conn.execute(sa.text("SELECT 1"))

    async def _refresh_statistics(self, conn: AsyncConnection, tables: Sequence[str]) -> None:
        """Nothing to do: SQLite's planner uses the indexes without statistics."""

    async def _after_bulk_start(self, conn: AsyncConnection, started: int) -> None:
        """Nothing to do, as above."""

    def _insert_ignore(self, table: sa.Table) -> Any:
        return sqlite_insert(table).on_conflict_do_nothing()

    def _is_transient(self, exc: DBAPIError) -> bool:
        message = str(exc.orig).lower()
        return isinstance(exc, OperationalError) and ("locked" in message or "busy" in message)

    def _open_hint(self, exc: BaseException) -> str:
        if "unable to open" in str(exc).lower() or isinstance(exc, PermissionError):
            return "check that its directory exists and is writable, or choose another --db"
        return super()._open_hint(exc)
