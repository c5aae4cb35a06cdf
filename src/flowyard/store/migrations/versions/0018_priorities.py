"""Priorities and lanes in the claim: runs carry a priority and a lane that their steps
inherit, campaigns a priority and a weight, and the claim index orders by both first;
campaigns' limits per concurrency key: the template, and each run's quota key
(decision 0032).

Revision ID: 0018
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0013"
branch_labels = None
depends_on = None

_CLAIMABLE = "status IN ('retrying', 'scheduled', 'waiting') AND NOT held"
_UNFINISHED_STEPS = "('retrying', 'running', 'scheduled', 'waiting')"
_UNFINISHED_RUNS = "('paused', 'pending', 'running', 'waiting')"
#: domain.priorities.INTERACTIVE and BULK when this was written (a migration is frozen).
_INTERACTIVE, _BULK = 6, 3


def upgrade() -> None:
    """Add the columns; campaign runs that have not ended move to the bulk priority and their
    campaign's lane, with their unfinished steps; rebuild the claim index."""
    op.add_column(
        "runs",
        sa.Column("priority", sa.Integer, nullable=False, server_default=str(_INTERACTIVE)),
    )
    op.add_column("runs", sa.Column("lane", sa.String(40), nullable=False, server_default=""))
    op.add_column("runs", sa.Column("limit_key", sa.String(80), nullable=True))
    op.add_column("steps", sa.Column("lane", sa.String(40), nullable=False, server_default=""))
    op.add_column(
        "campaigns",
        sa.Column("priority", sa.Integer, nullable=False, server_default=str(_BULK)),
    )
    op.add_column("campaigns", sa.Column("weight", sa.Integer, nullable=False, server_default="1"))
    op.add_column("campaigns", sa.Column("concurrency_key", sa.String(500), nullable=True))
    op.execute(
        f"UPDATE runs SET priority = {_BULK}, lane = campaign_id"
        f" WHERE campaign_id IS NOT NULL AND status IN {_UNFINISHED_RUNS}"
    )
    op.execute(
        "UPDATE steps SET"
        " priority = (SELECT runs.priority FROM runs WHERE runs.id = steps.run_id),"
        " lane = (SELECT runs.lane FROM runs WHERE runs.id = steps.run_id)"
        f" WHERE status IN {_UNFINISHED_STEPS}"
    )
    op.drop_index("ix_steps_claimable", table_name="steps")
    op.create_index(
        "ix_steps_claimable",
        "steps",
        ["priority", "lane", "available_at"],
        postgresql_where=sa.text(_CLAIMABLE),
        sqlite_where=sa.text(_CLAIMABLE),
    )


def downgrade() -> None:
    """Back to 0013: the claim index by due time only; the columns are dropped."""
    op.drop_index("ix_steps_claimable", table_name="steps")
    op.create_index(
        "ix_steps_claimable",
        "steps",
        ["available_at"],
        postgresql_where=sa.text(_CLAIMABLE),
        sqlite_where=sa.text(_CLAIMABLE),
    )
    op.execute(f"UPDATE steps SET priority = 0 WHERE status IN {_UNFINISHED_STEPS}")
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("lane")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("concurrency_key")
        batch.drop_column("weight")
        batch.drop_column("priority")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("limit_key")
        batch.drop_column("lane")
        batch.drop_column("priority")
