"""Alembic, driven programmatically with our package's migration scripts."""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from flowyard.domain.errors import StoreUnavailable

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config pointing at our scripts (and at ``connection`` if given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    """The migration scripts shipped with this code (read once per process)."""
    return ScriptDirectory.from_config(alembic_config())


def upgrade(connection: sa.Connection) -> None:
    """Upgrade the database behind ``connection`` to head; one already at head is left
    alone without running Alembic. A database at a revision this code does not know
    (migrated by a newer flowyard) is refused, untouched."""
    current = MigrationContext.configure(connection).get_current_revision()
    if current is not None and current == head_revision():
        return
    if current is not None:
        try:
            known = _scripts().get_revision(current)
        except CommandError:
            known = None
        if known is None:
            raise StoreUnavailable(
                f"the database schema is at revision {current!r}, which this version of "
                f"flowyard (newest revision {head_revision()!r}) does not know: a newer "
                "flowyard migrated it. Upgrade flowyard (downgrades are not supported)."
            )
    command.upgrade(alembic_config(connection), "head")


def head_revision() -> str | None:
    """The newest revision shipped with this version of flowyard."""
    return _scripts().get_current_head()


def is_current(connection: sa.Connection) -> bool:
    """True when the database is at head."""
    current = MigrationContext.configure(connection).get_current_revision()
    return current is not None and current == head_revision()
