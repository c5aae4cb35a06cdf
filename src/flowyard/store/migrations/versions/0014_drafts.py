"""Drafts: one shared draft per workflow, its undo history, and layouts on versions.

``drafts`` holds each workflow's draft document and its revision (the ETag editors send
back); ``draft_steps`` its undo/redo history as forward and inverse JSON Patches;
``workflow_versions.layout`` the canvas positions published with a version.

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from flowyard.store.schema import BigIntId, UTCDateTime

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Create the draft tables; versions get a nullable layout."""
    op.add_column("workflow_versions", sa.Column("layout", _JSON, nullable=True))
    op.create_table(
        "drafts",
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("base_version", sa.Integer, nullable=True),
        sa.Column("document", _JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name="fk_drafts_workflow_id_workflows"
        ),
        sa.PrimaryKeyConstraint("workflow_id", name="pk_drafts"),
    )
    op.create_table(
        "draft_steps",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("forward", _JSON, nullable=False),
        sa.Column("inverse", _JSON, nullable=False),
        sa.Column("summary", sa.String(500), nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("undone", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name="fk_draft_steps_workflow_id_workflows"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_draft_steps"),
        sa.UniqueConstraint("workflow_id", "seq", name="uq_draft_steps_workflow_id_seq"),
    )


def downgrade() -> None:
    """Back to 0012: drafts and their history are dropped."""
    op.drop_table("draft_steps")
    op.drop_table("drafts")
    with op.batch_alter_table("workflow_versions") as batch:
        batch.drop_column("layout")
