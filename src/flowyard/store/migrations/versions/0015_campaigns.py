"""Campaigns: the campaigns table, their run counters by status and the trigger that keeps
them (decision 0028), and partial indexes on a campaign's runs.

The trigger lives outside ``schema.metadata`` (SQLAlchemy does not model triggers), like the
notify trigger of 0003. It fires only for runs of a campaign (``WHEN``: the row is not
touched, no function is called, for any other run) and moves one count from the old status
to the new one in the same transaction, so every writer that changes a run's status (claim,
completion, lifecycle, deadlines, orphans, and any added later) keeps the counters true
without knowing about them. Deleting a run (retention) takes its count away.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowyard.store.schema import COUNT_STRIPES, UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION flowyard_campaign_count() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    s integer := pg_backend_pid() % {COUNT_STRIPES};
BEGIN
    -- The trigger's WHEN already checked that the status changed (an UPDATE).
    UPDATE campaign_counts SET n = n - 1
     WHERE campaign_id = OLD.campaign_id AND status = OLD.status AND stripe = s;
    IF TG_OP = 'UPDATE' THEN
        UPDATE campaign_counts SET n = n + 1
         WHERE campaign_id = NEW.campaign_id AND status = NEW.status AND stripe = s;
    END IF;
    RETURN NULL;
END;
$$
"""
_PG_TRIGGERS = [
    """
CREATE TRIGGER runs_campaign_count AFTER UPDATE OF status ON runs FOR EACH ROW
WHEN (NEW.campaign_id IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION flowyard_campaign_count()
""",
    """
CREATE TRIGGER runs_campaign_uncount AFTER DELETE ON runs FOR EACH ROW
WHEN (OLD.campaign_id IS NOT NULL)
EXECUTE FUNCTION flowyard_campaign_count()
""",
]
_SQLITE_TRIGGERS = [
    """
CREATE TRIGGER runs_campaign_count AFTER UPDATE OF status ON runs
WHEN NEW.campaign_id IS NOT NULL AND OLD.status <> NEW.status
BEGIN
    UPDATE campaign_counts SET n = n - 1
     WHERE campaign_id = NEW.campaign_id AND status = OLD.status AND stripe = 0;
    UPDATE campaign_counts SET n = n + 1
     WHERE campaign_id = NEW.campaign_id AND status = NEW.status AND stripe = 0;
END
""",
    """
CREATE TRIGGER runs_campaign_uncount AFTER DELETE ON runs
WHEN OLD.campaign_id IS NOT NULL
BEGIN
    UPDATE campaign_counts SET n = n - 1
     WHERE campaign_id = OLD.campaign_id AND status = OLD.status AND stripe = 0;
END
""",
]


def upgrade() -> None:
    """Create campaigns, campaign_counts, the counting triggers and the partial indexes."""
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("workflow_version", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("item_key", sa.String(500), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name="fk_campaigns_workflow_id_workflows"
        ),
        sa.UniqueConstraint("idempotency_key", name="uq_campaigns_idempotency_key"),
        sa.UniqueConstraint("workflow_id", "name", name="uq_campaigns_workflow_id_name"),
    )
    op.create_table(
        "campaign_counts",
        sa.Column("campaign_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stripe", sa.Integer, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "status", "stripe", name="pk_campaign_counts"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_campaign_counts_campaign_id_campaigns",
            ondelete="CASCADE",
        ),
    )
    # The full index on campaign_id held every run (NULLs included); these hold only
    # campaign runs.
    op.drop_index("ix_runs_campaign_id", table_name="runs")
    where = sa.text("campaign_id IS NOT NULL")
    op.create_index(
        "ix_runs_campaign",
        "runs",
        ["campaign_id", "id"],
        postgresql_where=where,
        sqlite_where=where,
    )
    finished = sa.text("campaign_id IS NOT NULL AND finished_at IS NOT NULL")
    op.create_index(
        "ix_runs_campaign_finished",
        "runs",
        ["campaign_id", "finished_at"],
        postgresql_where=finished,
        sqlite_where=finished,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for trigger in _PG_TRIGGERS:
            op.execute(trigger)
    else:
        for trigger in _SQLITE_TRIGGERS:
            op.execute(trigger)


def downgrade() -> None:
    """Drop the triggers, the tables and the partial indexes; restore the full index."""
    on = " ON runs" if op.get_bind().dialect.name == "postgresql" else ""
    op.execute(f"DROP TRIGGER IF EXISTS runs_campaign_count{on}")
    op.execute(f"DROP TRIGGER IF EXISTS runs_campaign_uncount{on}")
    if on:
        op.execute("DROP FUNCTION IF EXISTS flowyard_campaign_count()")
    op.drop_index("ix_runs_campaign_finished", table_name="runs")
    op.drop_index("ix_runs_campaign", table_name="runs")
    op.create_index("ix_runs_campaign_id", "runs", ["campaign_id"])
    op.drop_table("campaign_counts")
    op.drop_table("campaigns")
