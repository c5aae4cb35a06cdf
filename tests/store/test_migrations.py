"""Migrations on both backends: they build exactly ``schema.metadata`` and are idempotent."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from flowyard.store import Store, normalize_url, open_store
from flowyard.store.migrate import alembic_config, head_revision
from flowyard.store.schema import metadata

#: Partial indexes of the queue and the statuses their predicates name.
PARTIAL_INDEXES = {
    "ix_steps_claimable": ("scheduled", "retrying", "waiting"),
    "ix_steps_leased": ("running",),
}


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """Migrations start from nothing: an empty database, not the suite's migrated copy."""
    return empty_db_url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A plain engine on the test database, beside the store."""
    eng = create_async_engine(normalize_url(db_url))
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
async def bare_store(db_url: str) -> AsyncIterator[Store]:
    """A store on an empty (unmigrated) database."""
    s = open_store(db_url)
    try:
        yield s
    finally:
        await s.close()


def _diffs(connection: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return [
        diff
        for diff in compare_metadata(context, metadata)
        if not _sqlite_empty_string_default(connection, diff)
    ]


def _sqlite_empty_string_default(connection: sa.Connection, diff: Any) -> bool:
    """Alembic's SQLite comparison reports ``server_default=""`` as differing from the
    reflected ``DEFAULT ''`` although both are the empty string: a spurious diff. Only that
    exact case is skipped (and the reflected default is asserted on its own below)."""
    if connection.dialect.name != "sqlite" or not isinstance(diff, list) or len(diff) != 1:
        return False
    kind, _schema, table, column, _existing, reflected, wanted = diff[0]
    return (
        kind == "modify_default"
        and (table, column) in {("steps", "branch"), ("steps", "lane"), ("runs", "lane")}
        and str(reflected.arg).strip("()") == "''"  # alembic parenthesises the SQLite default
        and wanted.arg == ""
    )


def _plain(value: Any) -> Any:
    """Reflection results with SQL text (partial index predicates) turned into strings."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, sa.sql.ClauseElement):
        return str(value)
    return value


def _snapshot(connection: sa.Connection) -> dict[str, Any]:
    inspector = sa.inspect(connection)
    return _plain(
        {
            table: {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                    for c in inspector.get_columns(table)
                ],
                "pk": inspector.get_pk_constraint(table),
                "indexes": sorted(inspector.get_indexes(table), key=lambda i: str(i["name"])),
                "unique": sorted(
                    inspector.get_unique_constraints(table), key=lambda u: str(u["name"])
                ),
                "fks": sorted(inspector.get_foreign_keys(table), key=lambda f: str(f["name"])),
            }
            for table in sorted(inspector.get_table_names())
        }
    )


def _revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def test_migrated_schema_matches_the_metadata(bare_store: Store, engine: AsyncEngine) -> None:
    await bare_store.migrate()

    async with engine.connect() as conn:
        diffs = await conn.run_sync(_diffs)
        tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))

    assert diffs == []
    assert tables == {*metadata.tables, "alembic_version"}
    async with engine.connect() as conn:
        snapshot = await conn.run_sync(_snapshot)
    branch = next(c for c in snapshot["steps"]["columns"] if c[0] == "branch")
    assert str(branch[3]).startswith("''")  # the default the SQLite comparison cannot judge
    # compare_metadata does not judge partial-index predicates: check them here.
    dialect = engine.dialect.name
    indexes = {i["name"]: i for i in snapshot["steps"]["indexes"]}
    for name, statuses in PARTIAL_INDEXES.items():
        where = indexes[name]["dialect_options"].get(f"{dialect}_where") or ""
        assert "status" in where, name
        assert sorted(re.findall(r"'(\w+)'", where)) == sorted(statuses), (name, where)
    assert await bare_store.schema_is_current()


async def test_migrate_twice_is_a_no_op(bare_store: Store, engine: AsyncEngine) -> None:
    await bare_store.migrate()
    workflow, _ = await bare_store.create_workflow("kept", None, {"name": "kept"}, None)
    async with engine.connect() as conn:
        before = await conn.run_sync(_snapshot)
        revision = await conn.run_sync(_revision)

    await bare_store.migrate()

    async with engine.connect() as conn:
        assert await conn.run_sync(_snapshot) == before
        assert await conn.run_sync(_revision) == revision == head_revision()
        rows = (await conn.execute(sa.text("SELECT count(*) FROM alembic_version"))).scalar_one()
    assert rows == 1
    assert await bare_store.get_workflow("kept") == workflow
    assert await bare_store.schema_is_current()


async def test_unmigrated_database_is_not_current(bare_store: Store) -> None:
    assert head_revision() is not None
    assert not await bare_store.schema_is_current()


async def test_database_left_at_no_revision_is_not_current(
    bare_store: Store, engine: AsyncEngine
) -> None:
    await bare_store.migrate()
    assert await bare_store.schema_is_current()

    def downgrade(connection: sa.Connection) -> None:
        command.downgrade(alembic_config(connection), "base")

    async with engine.connect() as conn:
        await conn.run_sync(downgrade)
        await conn.commit()
        assert await conn.run_sync(_revision) is None
        remaining = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    assert remaining <= {"alembic_version"}
    assert not await bare_store.schema_is_current()

    # And it comes back: upgrading from base rebuilds the schema.
    await bare_store.migrate()
    assert await bare_store.schema_is_current()


async def test_concurrent_migrations_of_a_fresh_database_all_succeed(db_url: str) -> None:
    # Workers started together on an empty database each migrate at start; without a lock
    # two of them race to CREATE TABLE alembic_version and one crashes.
    import asyncio

    stores = [open_store(db_url) for _ in range(6)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
        assert all([await s.schema_is_current() for s in stores])
    finally:
        for s in stores:
            await s.close()
