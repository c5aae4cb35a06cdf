"""Flow control: waiting steps (timers, signals, joins), signals, branches, child runs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowyard.store.schema import BigIntId, JSONType, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_OLD_CLAIMABLE = "status IN ('scheduled', 'retrying') AND NOT held"
_CLAIMABLE = "status IN ('retrying', 'scheduled', 'waiting') AND NOT held"


def _claimable_index(predicate: str) -> None:
    op.drop_index("ix_steps_claimable", table_name="steps")
    op.create_index(
        "ix_steps_claimable",
        "steps",
        ["available_at"],
        postgresql_where=sa.text(predicate),
        sqlite_where=sa.text(predicate),
    )


def upgrade() -> None:
    """Add the waiting columns of steps, the signals and branches tables."""
    op.add_column("steps", sa.Column("wait_until", UTCDateTime, nullable=True))
    op.add_column("steps", sa.Column("waiting_for", sa.String(200), nullable=True))
    op.add_column("steps", sa.Column("wait_data", JSONType, nullable=True))
    _claimable_index(_CLAIMABLE)
    op.create_index("ix_runs_parent_run_id", "runs", ["parent_run_id"])
    op.create_table(
        "signals",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("payload", JSONType, nullable=True),
        sa.Column("sent_by", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("consumed_at", UTCDateTime, nullable=True),
        sa.Column("step_id", BigIntId, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_signals"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_signals_run_id_runs"),
    )
    op.create_index("ix_signals_run_id_consumed_at", "signals", ["run_id", "consumed_at"])
    op.create_table(
        "branches",
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("parent_step_id", BigIntId, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("item", JSONType, nullable=True),
        sa.Column("start_node", sa.String(64), nullable=False),
        sa.Column("start_type", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("output", JSONType, nullable=True),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("child_run_id", sa.String(40), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("run_id", "key", name="pk_branches"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_branches_run_id_runs"),
    )
    op.create_index(
        "ix_branches_parent_step_id_status_idx", "branches", ["parent_step_id", "status", "idx"]
    )
    op.create_index("ix_branches_child_run_id", "branches", ["child_run_id"])


def downgrade() -> None:
    """Back to 0005."""
    op.drop_table("branches")
    op.drop_table("signals")
    op.drop_index("ix_runs_parent_run_id", table_name="runs")
    _claimable_index(_OLD_CLAIMABLE)
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("wait_data")
        batch.drop_column("waiting_for")
        batch.drop_column("wait_until")
