"""PostgreSQL: for many workers on many machines (``FOR UPDATE SKIP LOCKED`` claiming)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from flowyard.store.sql import SqlStore

#: serialization_failure, deadlock_detected, lock_not_available, admin/crash shutdown,
#: cannot_connect_now: worth retrying the transaction.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03"})


#: Arbitrary, fixed advisory-lock key that serialises schema migrations.
MIGRATION_LOCK_KEY = 0x666C6F77  # "flow"


class PostgresStore(SqlStore):
    """The scaling store, on asyncpg."""

    dialect = "postgresql"

    @classmethod
    def open(cls, url: str, *, pool_size: int = 10) -> PostgresStore:
        """Create the engine for ``postgresql+asyncpg://...``."""
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
        )
        return cls(url, engine)

    async def _lock_migrations(self, conn: AsyncConnection) -> None:
        # Transaction-scoped advisory lock: released by the commit that ends the upgrade, so a
        # second process waits, then finds the schema current and does nothing.
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
        )

    def _insert_ignore(self, table: sa.Table) -> Any:
        return pg_insert(table).on_conflict_do_nothing()

    def _is_transient(self, exc: DBAPIError) -> bool:
        if exc.connection_invalidated or isinstance(exc, InterfaceError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if sqlstate in TRANSIENT_SQLSTATES:
            return True
        return isinstance(exc, OperationalError) and sqlstate is None
