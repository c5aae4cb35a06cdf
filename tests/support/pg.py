"""PostgreSQL for tests: a fresh database per test (empty, or copied from a migrated
template), dropped afterwards."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """Where tests create their databases (FLOWYARD_TEST_PG_URL)."""
    return os.environ.get("FLOWYARD_TEST_PG_URL", DEFAULT_ADMIN_URL)


def require_pg() -> bool:
    """True when PostgreSQL tests must run (CI sets FLOWYARD_REQUIRE_PG=1)."""
    return os.environ.get("FLOWYARD_REQUIRE_PG", "") not in ("", "0", "false")


async def _execute(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url(), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _reachable() -> str | None:
    """None if PostgreSQL answers, else why not."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[postgres]')"
    try:
        asyncio.run(_execute("SELECT 1"))
    except Exception as exc:
        return f"PostgreSQL not reachable at {admin_url()}: {exc}"
    return None


_status: dict[str, str | None] = {}


def skip_or_fail_without_pg() -> None:
    """Skip (or fail, when required) if PostgreSQL is not usable."""
    if "why" not in _status:
        _status["why"] = _reachable()
    why = _status["why"]
    if why is None:
        return
    if require_pg():
        pytest.fail(f"FLOWYARD_REQUIRE_PG is set but {why}")
    pytest.skip(f"{why} (set FLOWYARD_TEST_PG_URL; CI sets FLOWYARD_REQUIRE_PG=1)")


async def _create(name: str, template: str, strategy: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url(), timeout=5)
    try:
        # Older servers only copy files.
        how = f" STRATEGY {strategy}" if conn.get_server_version().major >= 15 else ""
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{how}')
    finally:
        await conn.close()


def create_database(
    template: str = "template1", prefix: str = "flowyard_t", *, strategy: str = "FILE_COPY"
) -> str:
    """Create a fresh database, a copy of ``template`` (by default an empty one; another
    template must have no open connections); returns its URL.

    ``strategy`` (PostgreSQL 15+): ``FILE_COPY`` copies the files after a checkpoint, ~0.07 s
    for a small database on an idle server but 0.3-0.9 s while other tests write (the
    checkpoint flushes the whole cluster, and makes their commits wait for it);
    ``WAL_LOG`` (the server's default) copies block by block through the WAL, ~0.25 s
    whatever else runs, and forces no checkpoint: the choice for copies made in the
    background (conftest's ``PgCopies``)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create(name, template, strategy))
    base = admin_url().rsplit("/", 1)[0]
    return f"{base}/{name}"


def database_name(url: str) -> str:
    """The database of a URL made by :func:`create_database`."""
    return url.rsplit("/", 1)[1]


def drop_database(url: str) -> None:
    """Drop a database made by :func:`create_database` (kicking out leftover sessions)."""
    name = database_name(url)
    asyncio.run(_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


#: What a database's schema is, as one hash: tables and columns, indexes, triggers, functions
#: and the migration it is at. A test that changed the schema (a downgrade, a dropped index)
#: leaves a database that is not reused.
_FINGERPRINT = """
WITH t AS (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)
SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (
  SELECT a.attrelid::regclass::text || '.' || a.attname || ':'
         || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull || ':'
         || coalesce(pg_get_expr(d.adbin, d.adrelid), '') AS x
    FROM pg_attribute a LEFT JOIN pg_attrdef d ON (d.adrelid, d.adnum) = (a.attrelid, a.attnum)
    WHERE a.attrelid IN (SELECT oid FROM t) AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL SELECT conname || ':' || pg_get_constraintdef(oid) FROM pg_constraint
    WHERE connamespace = 'public'::regnamespace
  UNION ALL SELECT tgname || ':' || tgrelid::regclass::text FROM pg_trigger
    WHERE NOT tgisinternal AND tgrelid IN (SELECT oid FROM t)
  UNION ALL SELECT proname || ':' || md5(prosrc) FROM pg_proc
    WHERE pronamespace = 'public'::regnamespace
  UNION ALL SELECT 'at:' || version_num FROM alembic_version
) AS schema
"""

_OTHER_SESSIONS = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)

#: A database that held more rows than this is dropped rather than emptied: its tables and
#: indexes would carry the dead rows into the next test.
RECYCLE_MAX_ROWS = 5_000


async def _fingerprint(url: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        value: str = await conn.fetchval(_FINGERPRINT)
        return value
    finally:
        await conn.close()


def schema_fingerprint(url: str) -> str:
    """The hash of the schema of the database at ``url`` (see :func:`recycle`)."""
    return asyncio.run(_fingerprint(url))


async def _empty(url: str, fingerprint: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (asyncpg.PostgresError, OSError, TimeoutError):
        return False
    try:
        if await conn.fetchval(_OTHER_SESSIONS) or await conn.fetchval(_FINGERPRINT) != fingerprint:
            return False
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        )
        sequences = await conn.fetch(
            "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
        )
        # One statement: every table's DELETE, the rows counted.
        deletes = ", ".join(
            f'd{i} AS (DELETE FROM "{r["tablename"]}" RETURNING 1)' for i, r in enumerate(tables)
        )
        counted = " + ".join(f"(SELECT count(*) FROM d{i})" for i in range(len(tables)))
        restart = ", ".join(f"setval('\"{r['sequencename']}\"', 1, false)" for r in sequences)
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '2s'")
            # Foreign keys are triggers: off for this transaction, so the order does not matter.
            await conn.execute("SET LOCAL session_replication_role = replica")
            if await conn.fetchval(f"WITH {deletes} SELECT {counted}") > RECYCLE_MAX_ROWS:
                raise _TooBig
            if restart:
                await conn.execute(f"SELECT {restart}")
        # Someone who connected meanwhile may write after the reset: not reused then.
        return not await conn.fetchval(_OTHER_SESSIONS)
    except (_TooBig, asyncpg.PostgresError, OSError, TimeoutError):
        return False
    finally:
        await conn.close()


class _TooBig(Exception):
    """More rows than :data:`RECYCLE_MAX_ROWS` (rolls the reset back)."""


def recycle(url: str, fingerprint: str) -> bool:
    """Empty the database at ``url`` for another test, as a fresh copy of the template would
    be (every table empty but the migration's version, sequences restarted), ~5-20 ms against
    0.1-0.4 s for a copy. False (the database untouched, or partly: drop it) when it cannot
    stand for a fresh copy: another session is still connected, its schema is not the
    template's ``fingerprint``, or it held more than :data:`RECYCLE_MAX_ROWS` rows. (The
    planner's statistics stay those the test before left: a test of them takes a fresh
    copy.)"""
    return asyncio.run(_empty(url, fingerprint))
