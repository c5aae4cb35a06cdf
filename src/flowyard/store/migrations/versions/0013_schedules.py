"""Schedules: their timetables, the fired ticks (unique per schedule and tick), and the
schedule that started a run.

Revision ID: 0013
Revises: 0016
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowyard.store.schema import JSONType, UTCDateTime

revision = "0013"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create schedules and schedule_fires; add runs.schedule_id."""
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("cron", sa.String(200), nullable=True),
        sa.Column("every_s", sa.Integer, nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("anchor_at", UTCDateTime, nullable=False),
        sa.Column("input", JSONType, nullable=True),
        sa.Column("catch_up", sa.String(16), nullable=False),
        sa.Column("max_catch_up", sa.Integer, nullable=False),
        sa.Column("jitter_s", sa.Float, nullable=False),
        sa.Column("overlap", sa.String(16), nullable=False),
        sa.Column("misfire_grace_s", sa.Float, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("next_tick_at", UTCDateTime, nullable=True),
        sa.Column("next_fire_at", UTCDateTime, nullable=True),
        sa.Column("last_tick_at", UTCDateTime, nullable=True),
        sa.Column("last_run_id", sa.String(40), nullable=True),
        sa.Column("fired", sa.Integer, nullable=False, server_default="0"),
        sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
        sa.Column("missed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
        sa.UniqueConstraint("name", name="uq_schedules_name"),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name="fk_schedules_workflow_id_workflows"
        ),
    )
    op.create_index("ix_schedules_workflow_id", "schedules", ["workflow_id"])
    op.create_index(
        "ix_schedules_due",
        "schedules",
        ["next_fire_at"],
        postgresql_where=sa.text("enabled"),
        sqlite_where=sa.text("enabled"),
    )
    op.create_table(
        "schedule_fires",
        sa.Column("schedule_id", sa.String(40), nullable=False),
        sa.Column("tick_at", UTCDateTime, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(40), nullable=True),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("manual", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("fired_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("schedule_id", "tick_at", name="pk_schedule_fires"),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name="fk_schedule_fires_schedule_id_schedules",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_schedule_fires_fired_at", "schedule_fires", ["fired_at"])
    op.add_column("runs", sa.Column("schedule_id", sa.String(40), nullable=True))
    op.create_index("ix_runs_schedule_id_id", "runs", ["schedule_id", "id"])


def downgrade() -> None:
    """Back to 0016: schedules, their fired ticks and runs.schedule_id are dropped."""
    op.drop_index("ix_runs_schedule_id_id", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("schedule_id")
    op.drop_table("schedule_fires")
    op.drop_table("schedules")
