"""SQLite: the embedded default. WAL, ``BEGIN IMMEDIATE`` for writers, a busy timeout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from flowyard.store.sql import SqlStore

BUSY_TIMEOUT_MS = 30_000


def _configure(engine: AsyncEngine, *, begin: str, memory: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions get in the way).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # NORMAL is durable across application crashes in WAL mode; only an OS crash or power
        # loss can drop the last transactions.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(begin)


class SqliteStore(SqlStore):
    """The embedded store. Writers serialise on ``BEGIN IMMEDIATE`` (no lock upgrades, so no
    SQLITE_BUSY deadlocks); readers use deferred transactions and never block writers in WAL."""

    dialect = "sqlite"

    @classmethod
    def open(cls, url: str) -> SqliteStore:
        """Create the engines for ``sqlite+aiosqlite:///path`` (or ``:memory:``)."""
        sa_url = sa.make_url(url)
        database = sa_url.database or ""
        memory = database in ("", ":memory:")
        if memory:
            # One shared connection, or every pooled connection would see its own empty DB.
            engine = create_async_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
            _configure(engine, begin="BEGIN IMMEDIATE", memory=True)
            return cls(url, engine)
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": BUSY_TIMEOUT_MS / 1000}
        write = create_async_engine(
            url, connect_args=connect_args, pool_size=1, max_overflow=0, pool_timeout=60
        )
        read = create_async_engine(url, connect_args=connect_args, pool_size=5, max_overflow=5)
        _configure(write, begin="BEGIN IMMEDIATE", memory=False)
        _configure(read, begin="BEGIN", memory=False)
        return cls(url, write, read)

    def _insert_ignore(self, table: sa.Table) -> Any:
        return sqlite_insert(table).on_conflict_do_nothing()

    def _is_transient(self, exc: DBAPIError) -> bool:
        message = str(exc.orig).lower()
        return isinstance(exc, OperationalError) and ("locked" in message or "busy" in message)
