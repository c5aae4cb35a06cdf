"""Initial schema: workflows, versions, runs, steps (the queue), run events.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowyard.store.schema import BigIntId, JSONType, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_CLAIMABLE = "status IN ('scheduled', 'retrying')"
_LEASED = "status = 'running'"


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workflows"),
        sa.UniqueConstraint("name", name="uq_workflows_name"),
    )
    op.create_table(
        "workflow_versions",
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("definition", JSONType, nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name="fk_workflow_versions_workflow_id_workflows"
        ),
        sa.PrimaryKeyConstraint("workflow_id", "version", name="pk_workflow_versions"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("workflow_version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", JSONType, nullable=True),
        sa.Column("vars", JSONType, nullable=True),
        sa.Column("output", JSONType, nullable=True),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("campaign_id", sa.String(40), nullable=True),
        sa.Column("parent_run_id", sa.String(40), nullable=True),
        sa.Column("deadline_at", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name="fk_runs_workflow_id_workflows"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.UniqueConstraint(
            "workflow_id", "idempotency_key", name="uq_runs_workflow_id_idempotency_key"
        ),
    )
    op.create_index("ix_runs_status_id", "runs", ["status", "id"])
    op.create_index("ix_runs_workflow_id_id", "runs", ["workflow_id", "id"])
    op.create_index("ix_runs_campaign_id", "runs", ["campaign_id"])
    op.create_table(
        "steps",
        sa.Column("id", BigIntId, nullable=False, autoincrement=True),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("node_type", sa.String(128), nullable=False),
        sa.Column("branch", sa.String(200), nullable=False, server_default=""),
        sa.Column("iteration", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("available_at", UTCDateTime, nullable=False),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime, nullable=True),
        sa.Column("claims", sa.Integer, nullable=False, server_default="0"),
        sa.Column("recoveries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("output", JSONType, nullable=True),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_steps_run_id_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_steps"),
        sa.UniqueConstraint(
            "run_id",
            "branch",
            "node_id",
            "iteration",
            name="uq_steps_run_id_branch_node_id_iteration",
        ),
    )
    op.create_index(
        "ix_steps_claimable",
        "steps",
        ["available_at"],
        postgresql_where=sa.text(_CLAIMABLE),
        sqlite_where=sa.text(_CLAIMABLE),
    )
    op.create_index(
        "ix_steps_leased",
        "steps",
        ["lease_expires_at"],
        postgresql_where=sa.text(_LEASED),
        sqlite_where=sa.text(_LEASED),
    )
    op.create_table(
        "run_events",
        sa.Column("id", BigIntId, nullable=False, autoincrement=True),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("step_id", BigIntId, nullable=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", JSONType, nullable=True),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_run_events_run_id_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_run_events"),
    )
    op.create_index("ix_run_events_run_id_id", "run_events", ["run_id", "id"])


def downgrade() -> None:
    """Drop everything."""
    for table in ("run_events", "steps", "runs", "workflow_versions", "workflows"):
        op.drop_table(table)
