"""Trust: the origins a credential may be sent to; failed logins shared by API processes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowyard.store.schema import JSONType, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``credentials.allowed_origins`` and the ``login_failures`` table."""
    # NULL on existing rows: an http-style credential without origins is refused at use
    # until an admin names its origins (docs/security.md).
    op.add_column("credentials", sa.Column("allowed_origins", JSONType, nullable=True))
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("first_at", UTCDateTime, nullable=False),
        sa.Column("last_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_login_failures"),
    )


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_table("login_failures")
    op.drop_column("credentials", "allowed_origins")
