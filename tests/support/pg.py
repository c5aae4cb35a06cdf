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
