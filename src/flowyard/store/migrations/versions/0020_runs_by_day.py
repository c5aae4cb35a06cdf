"""The workflows list's figures (issue 15): an index of runs by workflow and creation time,
so a workflow's runs of the last days are counted and its newest run found without reading
the rest of its runs.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-10
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ix_runs_workflow_created."""
    op.create_index("ix_runs_workflow_created", "runs", ["workflow_id", "created_at", "id"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_runs_workflow_created", table_name="runs")
