"""Plumbing of the SQL store: engines, transactions with retries, migrations, health."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import QueuePool

from flowyard.domain.auth import AuditEntry
from flowyard.domain.clock import utc_now
from flowyard.domain.errors import StoreUnavailable
from flowyard.domain.fairness import FairShare
from flowyard.domain.urgency import is_urgent
from flowyard.settings import display_url
from flowyard.store import migrate as migrations
from flowyard.store.audit import audit_row
from flowyard.store.rows import (
    T,
    log,
)
from flowyard.store.schema import audit_log
from flowyard.store.write_gate import WriteGate


class SqlBase(ABC):
    """Engines and transactions. Subclasses provide engines, dialect inserts and error
    classification; the operation mixins build on ``_tx``."""

    dialect = "sql"
    #: Attempts for a transaction that hit a transient database error (lock, deadlock).
    tx_attempts = 8
    #: One writer at a time (SQLite): this process's write transactions take turns at a
    #: gate that serves a waiting API request first (decision 0041).
    serial_writes = False

    def __init__(self, url: str, write_engine: AsyncEngine, read_engine: AsyncEngine | None = None):
        self.url = url
        self._write = write_engine
        self._read = read_engine or write_engine
        #: Per engine: [seconds transactions waited for a connection of a full pool,
        #: transactions]. Only waits that began with every connection out are counted: the
        #: time to enter a transaction also holds the event loop's own lag.
        self._waits: dict[str, list[float]] = {"write": [0.0, 0], "read": [0.0, 0]}
        #: This process's fair shares between the lanes of a priority: the claim asks it
        #: (pure math in the domain, like the quota buckets; decision 0032).
        self._fair = FairShare()
        self._gate = WriteGate() if self.serial_writes else None

    # -- plumbing --------------------------------------------------------------------------

    @abstractmethod
    def _insert_ignore(self, table: sa.Table) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING for this dialect."""

    @abstractmethod
    async def _refresh_statistics(self, conn: AsyncConnection, tables: Sequence[str]) -> None:
        """Update the planner's statistics of ``tables`` after a bulk insert."""

    @abstractmethod
    async def _after_bulk_start(self, conn: AsyncConnection, started: int) -> None:
        """A transaction just inserted ``started`` runs with their first steps: refresh the
        planner's statistics if that made them stale (PostgreSQL; decision 0040)."""

    def _is_transient(self, exc: DBAPIError) -> bool:
        """Errors worth retrying the whole transaction for (locks, deadlocks, restarts)."""
        return isinstance(exc, OperationalError)

    async def _tx(
        self,
        fn: Callable[[AsyncConnection], Awaitable[T]],
        *,
        write: bool = True,
        audit: AuditEntry | None = None,
    ) -> T:
        """Run ``fn`` in a transaction, retrying transient failures with jittered backoff.

        With ``audit`` (not yet written) the transaction also inserts that entry after
        ``fn``, so the change and its audit row commit together (see
        :mod:`flowyard.store.audit`)."""
        engine = self._write if write else self._read
        waits = self._waits["write" if write or self._read.pool is self._write.pool else "read"]
        entry = audit if write and audit is not None and not audit.written else None
        delay = 0.01
        gate = self._gate if write else None
        for attempt in range(1, self.tx_attempts + 1):
            try:
                full = _full(engine) or (gate is not None and gate.busy)
                asked = time.perf_counter()
                async with (
                    gate.turn(is_urgent()) if gate is not None else _NO_TURN,
                    engine.begin() as conn,
                ):
                    if full:
                        waits[0] += time.perf_counter() - asked
                    waits[1] += 1
                    result = await fn(conn)
                    if entry is not None:
                        await conn.execute(audit_log.insert().values(**audit_row(entry, utc_now())))
                if entry is not None:
                    entry.written = True  # committed with the change
                return result
            except DBAPIError as exc:
                if isinstance(exc, IntegrityError) or not self._is_transient(exc):
                    raise
                if attempt == self.tx_attempts:
                    raise StoreUnavailable(f"database unavailable: {exc.orig}") from exc
                log.debug("transient database error (attempt %d): %s", attempt, exc.orig)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
            except (OSError, PoolTimeout) as exc:  # no connection (yet): try again
                if attempt == self.tx_attempts:
                    raise StoreUnavailable(f"database unavailable: {exc}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    async def _workflow_changed(  # noqa: B027 - SQLite has nothing to do: not abstract
        self, conn: AsyncConnection, workflow_id: str
    ) -> None:
        """Inside a transaction that changes a workflow's row: tell the other processes once
        it commits (their read caches, decision 0030). SQLite cannot; PostgreSQL NOTIFYs."""

    async def _draft_changed(self, conn: AsyncConnection, payload: str) -> None:  # noqa: B027
        """Inside a transaction that changes a draft: its notice for other processes, where
        the dialect writes it there (``records_draft_notices``)."""

    @abstractmethod
    async def _lock_migrations(self, conn: AsyncConnection) -> None:
        """Take a database-wide lock before migrating, so workers starting together on a fresh
        database migrate one after the other (each dialect knows its lock)."""

    def _open_hint(self, exc: BaseException) -> str:
        """What to do when opening the database failed with ``exc`` (dialects know more)."""
        return "check --db, FLOWYARD_DB or FLOWYARD_DB_URL"

    def _cannot_open(self, exc: BaseException) -> StoreUnavailable:
        """One clear line for a database that cannot be opened: which one, why, what to do."""
        if isinstance(exc, DBAPIError):
            reason = str(exc.orig).strip()
        elif isinstance(exc, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror
        else:
            reason = str(exc) or type(exc).__name__
        where = display_url(self.url)
        return StoreUnavailable(
            f"cannot open the database {where}: {reason}; {self._open_hint(exc)}"
        )

    async def migrate(self) -> None:
        """Upgrade the schema to head (Alembic), one process at a time. A database that cannot
        be opened, or whose schema is newer than this code, is a StoreUnavailable that says
        why."""
        try:
            async with self._write.connect() as conn:
                await self._lock_migrations(conn)
                await conn.run_sync(migrations.upgrade)
                await conn.commit()
        except (DBAPIError, OSError, PoolTimeout) as exc:
            raise self._cannot_open(exc) from exc

    async def schema_is_current(self) -> bool:
        """True when the database is at the newest migration."""
        async with self._read.connect() as conn:
            return await conn.run_sync(migrations.is_current)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless a trivial query succeeds."""
        try:
            async with self._read.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (DBAPIError, OSError) as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    def pool_usage(self) -> list[tuple[str, int, int, float, int]]:
        """(engine, connections in use, pool size, seconds transactions waited for a
        connection, transactions) of each sized connection pool, read in memory (for
        metrics). An in-memory SQLite database has no sized pool."""
        usage = []
        engines = {"write": self._write, "read": self._read}
        for name, engine in engines.items():
            if name == "read" and engine.pool is self._write.pool:
                continue
            pool = engine.pool
            if isinstance(pool, QueuePool):
                wait_s, checkouts = self._waits[name]
                usage.append((name, pool.checkedout(), pool.size(), wait_s, int(checkouts)))
        return usage

    async def close(self) -> None:
        """Dispose of the engines."""
        await self._write.dispose()
        if self._read.pool is not self._write.pool:
            await self._read.dispose()


_NO_TURN: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()


def _full(engine: AsyncEngine) -> bool:
    """Whether every connection the pool may open is checked out (a transaction must wait)."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return False
    capacity = pool.size() + max(int(getattr(pool, "_max_overflow", 0)), 0)
    return bool(pool.checkedout() >= capacity)
