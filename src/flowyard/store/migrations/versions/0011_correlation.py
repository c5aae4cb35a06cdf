"""Correlation keys and parent steps of runs.

``runs.correlation_key`` is the business key replies address a run by; runs whose workflow
declared it unique (``correlation_unique``) hold it alone while unfinished (a partial unique
index). ``runs.parent_step_id`` names a child run's sub-workflow step; child runs started
before this version get it from their ``branches`` row.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowyard.store.schema import BigIntId

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Frozen here (schema.OPEN_CORRELATION_SQL when written): a later status must not change
# what this revision created.
_OPEN_CORRELATION = "correlation_unique AND status IN ('paused', 'pending', 'running', 'waiting')"

_runs = sa.table("runs", sa.column("id", sa.String), sa.column("parent_step_id", BigIntId))
_branches = sa.table(
    "branches",
    sa.column("child_run_id", sa.String),
    sa.column("parent_step_id", BigIntId),
    sa.column("kind", sa.String),
)


def upgrade() -> None:
    """Add the columns and indexes; link existing child runs to their parent steps."""
    op.add_column("runs", sa.Column("correlation_key", sa.String(200), nullable=True))
    op.add_column(
        "runs",
        sa.Column("correlation_unique", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.add_column("runs", sa.Column("parent_step_id", BigIntId, nullable=True))
    # Partial: runs without a key (a campaign's bulk start) do not maintain it.
    op.create_index(
        "ix_runs_correlation_key",
        "runs",
        ["correlation_key", "id"],
        postgresql_where=sa.text("correlation_key IS NOT NULL"),
        sqlite_where=sa.text("correlation_key IS NOT NULL"),
    )
    op.create_index(
        "uq_runs_open_correlation",
        "runs",
        ["workflow_id", "correlation_key"],
        unique=True,
        postgresql_where=sa.text(_OPEN_CORRELATION),
        sqlite_where=sa.text(_OPEN_CORRELATION),
    )
    parent_step = (
        sa.select(_branches.c.parent_step_id)
        .where(_branches.c.child_run_id == _runs.c.id, _branches.c.kind == "child")
        .limit(1)
        .scalar_subquery()
    )
    children = sa.select(_branches.c.child_run_id).where(_branches.c.kind == "child")
    op.get_bind().execute(
        _runs.update().where(_runs.c.id.in_(children)).values(parent_step_id=parent_step)
    )


def downgrade() -> None:
    """Back to 0010."""
    op.drop_index("uq_runs_open_correlation", table_name="runs")
    op.drop_index("ix_runs_correlation_key", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("parent_step_id")
        batch.drop_column("correlation_unique")
        batch.drop_column("correlation_key")
