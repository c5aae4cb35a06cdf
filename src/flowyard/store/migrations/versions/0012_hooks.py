"""Webhook triggers: hooks and the delivery ids they remember (dedupe windows).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowyard.store.schema import JSONType, UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the hooks and hook_deliveries tables."""
    op.create_table(
        "hooks",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("path", sa.String(100), nullable=True),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("config", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_hooks"),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name="fk_hooks_workflow_id_workflows"
        ),
        sa.UniqueConstraint("name", name="uq_hooks_name"),
        sa.UniqueConstraint("path", name="uq_hooks_path"),
    )
    op.create_table(
        "hook_deliveries",
        sa.Column("hook_id", sa.String(40), nullable=False),
        sa.Column("delivery_key", sa.String(64), nullable=False),
        sa.Column("first_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("hook_id", "delivery_key", name="pk_hook_deliveries"),
        sa.ForeignKeyConstraint(
            ["hook_id"],
            ["hooks.id"],
            name="fk_hook_deliveries_hook_id_hooks",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_hook_deliveries_expires", "hook_deliveries", ["hook_id", "expires_at"])


def downgrade() -> None:
    """Drop the hook tables."""
    op.drop_table("hook_deliveries")
    op.drop_table("hooks")
