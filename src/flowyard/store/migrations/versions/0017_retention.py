"""Retention (decision 0031): the partial index pruning reads, a campaign's pruned count,
the leases table (one periodic pruner at a time), and deleting a campaign run no longer
takes its count away (the counters are the campaign's history; ``pruned`` says how many of
its runs are gone).

Revision ID: 0017
Revises: 0018
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowyard.store.schema import RETENTION_SQL, UTCDateTime

revision = "0017"
down_revision = "0018"
branch_labels = None
depends_on = None

# As migration 0015 created them (downgrade puts them back).
_PG_UNCOUNT = """
CREATE TRIGGER runs_campaign_uncount AFTER DELETE ON runs FOR EACH ROW
WHEN (OLD.campaign_id IS NOT NULL)
EXECUTE FUNCTION flowyard_campaign_count()
"""
_SQLITE_UNCOUNT = """
CREATE TRIGGER runs_campaign_uncount AFTER DELETE ON runs
WHEN OLD.campaign_id IS NOT NULL
BEGIN
    UPDATE campaign_counts SET n = n - 1
     WHERE campaign_id = OLD.campaign_id AND status = OLD.status AND stripe = 0;
END
"""


def upgrade() -> None:
    """Add ix_runs_retention, campaigns.pruned and leases; drop the uncounting trigger."""
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute(f"DROP TRIGGER IF EXISTS runs_campaign_uncount{' ON runs' if postgres else ''}")
    where = sa.text(RETENTION_SQL)
    op.create_index(
        "ix_runs_retention",
        "runs",
        ["workflow_id", "finished_at", "id"],
        postgresql_where=where,
        sqlite_where=where,
    )
    op.add_column("campaigns", sa.Column("pruned", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(100), nullable=True),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    """Back to 0013: the index, the column and the table go; the trigger comes back."""
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_table("leases")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("pruned")
    op.drop_index("ix_runs_retention", table_name="runs")
    op.execute(_PG_UNCOUNT if postgres else _SQLITE_UNCOUNT)
