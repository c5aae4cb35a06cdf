"""Drafts keep their JSON as written on PostgreSQL: ``json``, not ``jsonb``.

``jsonb`` stores an object's keys in its own order (shortest first), so a draft read back
was not the bytes its last edit answered, and an undo could not give back the bytes of the
step before (issue 14's acceptance: byte-identical at every step). ``json`` keeps the text
as written; nothing queries inside these columns. SQLite's JSON is text already.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_COLUMNS = (("drafts", "document"), ("draft_steps", "forward"), ("draft_steps", "inverse"))


def upgrade() -> None:
    """jsonb -> json on PostgreSQL (existing rows keep jsonb's key order)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _COLUMNS:
        op.alter_column(
            table,
            column,
            type_=postgresql.JSON(),
            existing_type=postgresql.JSONB(),
            existing_nullable=False,
            postgresql_using=f"{column}::json",
        )


def downgrade() -> None:
    """json -> jsonb on PostgreSQL."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _COLUMNS:
        op.alter_column(
            table,
            column,
            type_=postgresql.JSONB(),
            existing_type=postgresql.JSON(),
            existing_nullable=False,
            postgresql_using=f"{column}::jsonb",
        )
