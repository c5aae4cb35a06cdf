"""Event triggers (run ends, named events), the dispatcher's cursor, debounced starts and
throttle windows.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowyard.store.schema import BigIntId, JSONType, UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create event_triggers, trigger_cursors, trigger_debounces and trigger_throttles."""
    op.create_table(
        "event_triggers",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("source_workflow_id", sa.String(40), nullable=True),
        sa.Column("event", sa.String(100), nullable=True),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("config", JSONType, nullable=False),
        sa.Column("since_event_id", BigIntId, nullable=False, server_default="0"),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_event_triggers"),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name="fk_event_triggers_workflow_id_workflows"
        ),
        sa.UniqueConstraint("name", name="uq_event_triggers_name"),
    )
    op.create_index(
        "ix_event_triggers_kind", "event_triggers", ["kind", "enabled", "source_workflow_id"]
    )
    op.create_index("ix_event_triggers_event", "event_triggers", ["event"])
    op.create_table(
        "trigger_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("position", BigIntId, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_trigger_cursors"),
    )
    op.create_table(
        "trigger_debounces",
        sa.Column("id", BigIntId, nullable=False, autoincrement=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("input", JSONType, nullable=True),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("fire_at", UTCDateTime, nullable=False),
        sa.Column("burst", sa.Integer, nullable=False, server_default="1"),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("claimed_until", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trigger_debounces"),
        sa.UniqueConstraint("source", "key", name="uq_trigger_debounces_source_key"),
    )
    op.create_index("ix_trigger_debounces_fire_at", "trigger_debounces", ["fire_at"])
    op.create_table(
        "trigger_throttles",
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("window_start", UTCDateTime, nullable=False),
        sa.Column("used", sa.Integer, nullable=False),
        sa.Column("dropped", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("source", "key", name="pk_trigger_throttles"),
    )


def downgrade() -> None:
    """Drop the event trigger tables."""
    op.drop_table("trigger_throttles")
    op.drop_table("trigger_debounces")
    op.drop_table("trigger_cursors")
    op.drop_table("event_triggers")
