"""Provider quotas: one token bucket per quota key, shared by every worker.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowyard.store.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the quotas table."""
    op.create_table(
        "quotas",
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("per_s", sa.Float, nullable=False),
        sa.Column("burst", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("available", sa.Float, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("paused_until", UTCDateTime, nullable=True),
        sa.Column("queue_until", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_quotas"),
    )


def downgrade() -> None:
    """Drop the quotas table."""
    op.drop_table("quotas")
