"""The change feed (decision 0037): changes that processes on one SQLite file tell each
other (a workflow row changed, a draft changed), read by the API processes every ~200 ms.
PostgreSQL has the table too (one schema) and leaves it empty: it NOTIFYs.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add change_feed."""
    op.create_table(
        "change_feed",
        sa.Column("seq", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("origin", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_change_feed"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    """Drop change_feed."""
    op.drop_table("change_feed")
