"""Lifecycle: held steps (pause), run error types (dead letters), run deadlines.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_OLD_CLAIMABLE = "status IN ('scheduled', 'retrying')"
_CLAIMABLE = "status IN ('scheduled', 'retrying') AND NOT held"
_HAS_DEADLINE = "deadline_at IS NOT NULL"


def upgrade() -> None:
    """Add steps.held, runs.error_type and the indexes that serve them."""
    op.add_column("steps", sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()))
    op.drop_index("ix_steps_claimable", table_name="steps")
    op.create_index(
        "ix_steps_claimable",
        "steps",
        ["available_at"],
        postgresql_where=sa.text(_CLAIMABLE),
        sqlite_where=sa.text(_CLAIMABLE),
    )
    op.add_column("runs", sa.Column("error_type", sa.String(128), nullable=True))
    op.create_index("ix_runs_status_error_type", "runs", ["status", "error_type"])
    op.create_index(
        "ix_runs_deadline",
        "runs",
        ["deadline_at"],
        postgresql_where=sa.text(_HAS_DEADLINE),
        sqlite_where=sa.text(_HAS_DEADLINE),
    )


def downgrade() -> None:
    """Back to 0001."""
    op.drop_index("ix_runs_deadline", table_name="runs")
    op.drop_index("ix_runs_status_error_type", table_name="runs")
    op.drop_column("runs", "error_type")
    op.drop_index("ix_steps_claimable", table_name="steps")
    op.create_index(
        "ix_steps_claimable",
        "steps",
        ["available_at"],
        postgresql_where=sa.text(_OLD_CLAIMABLE),
        sqlite_where=sa.text(_OLD_CLAIMABLE),
    )
    op.drop_column("steps", "held")
