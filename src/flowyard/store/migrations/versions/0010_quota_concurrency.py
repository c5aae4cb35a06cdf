"""Provider quotas: concurrency limits (slots held by running steps); a rate is optional.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowyard.store.schema import BigIntId, UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Make the rate optional, add the concurrency columns and the ``quota_slots`` table."""
    with op.batch_alter_table("quotas") as batch:
        batch.alter_column("tokens", existing_type=sa.Integer, nullable=True)
        batch.alter_column("per_s", existing_type=sa.Float, nullable=True)
        batch.add_column(sa.Column("concurrency", sa.Integer, nullable=True))
        batch.add_column(sa.Column("hold_s", sa.Float, nullable=False, server_default="1.0"))
        batch.add_column(sa.Column("slot_queue_until", UTCDateTime, nullable=True))
    op.create_table(
        "quota_slots",
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("step_id", BigIntId, nullable=False),
        sa.Column("claims", sa.Integer, nullable=False),
        sa.Column("acquired_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("key", "step_id", name="pk_quota_slots"),
        sa.ForeignKeyConstraint(
            ["key"], ["quotas.key"], name="fk_quota_slots_key_quotas", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    """Drop what upgrade added; quotas without a rate go with it (the old schema needs one)."""
    op.drop_table("quota_slots")
    op.execute(sa.text("DELETE FROM quotas WHERE tokens IS NULL OR per_s IS NULL"))
    with op.batch_alter_table("quotas") as batch:
        batch.drop_column("slot_queue_until")
        batch.drop_column("hold_s")
        batch.drop_column("concurrency")
        batch.alter_column("per_s", existing_type=sa.Float, nullable=False)
        batch.alter_column("tokens", existing_type=sa.Integer, nullable=False)
