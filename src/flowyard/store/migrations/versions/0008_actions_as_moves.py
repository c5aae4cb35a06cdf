"""State-machine actions are recorded moves: the ``@action`` signals of a run.

Runs moved before this version have their moves only in the outputs of their state steps:
each becomes a taken ``@action`` signal (so their state and history survive), and a state
step waiting for an action now waits for that signal.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from flowyard.store.schema import BigIntId, JSONType, UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ACTION_SIGNAL = "@action"  # flowyard.domain.state_machine.ACTION_SIGNAL when written
BATCH = 1000

_steps = sa.table(
    "steps",
    sa.column("id", BigIntId),
    sa.column("run_id", sa.String),
    sa.column("node_id", sa.String),
    sa.column("node_type", sa.String),
    sa.column("status", sa.String),
    sa.column("output", JSONType),
    sa.column("finished_at", UTCDateTime),
    sa.column("waiting_for", sa.String),
)
_signals = sa.table(
    "signals",
    sa.column("run_id", sa.String),
    sa.column("name", sa.String),
    sa.column("payload", JSONType),
    sa.column("sent_by", sa.String),
    sa.column("created_at", UTCDateTime),
    sa.column("consumed_at", UTCDateTime),
    sa.column("step_id", BigIntId),
)


def upgrade() -> None:
    """Copy each move out of its state step's output into a taken ``@action`` signal."""
    conn = op.get_bind()
    after = 0
    while True:
        rows = conn.execute(
            sa.select(_steps.c.id, _steps.c.run_id, _steps.c.output, _steps.c.finished_at)
            .where(
                _steps.c.node_type == "state",
                _steps.c.status == "succeeded",
                _steps.c.id > after,
            )
            .order_by(_steps.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        after = rows[-1].id
        moves = [m for m in map(_move, rows) if m is not None]
        if moves:
            conn.execute(_signals.insert(), moves)
    conn.execute(
        _steps.update()
        .where(_steps.c.waiting_for == "action")
        .values(waiting_for=f"signal:{ACTION_SIGNAL}")
    )


def _move(row: Any) -> dict[str, Any] | None:
    out = row.output
    if not isinstance(out, dict) or "action" not in out:
        return None  # a final state's step: no move
    return {
        "run_id": row.run_id,
        "name": ACTION_SIGNAL,
        "payload": {
            "from": out.get("state"),
            "to": out.get("to_state"),
            "action": out.get("action"),
            "by": out.get("by"),
            "at": out.get("at"),
            "payload": out.get("payload"),
        },
        "sent_by": out.get("by"),
        "created_at": row.finished_at,
        "consumed_at": row.finished_at,
        "step_id": row.id,
    }


def downgrade() -> None:
    """Back to waiting for actions; the copied moves are dropped (the steps keep theirs)."""
    conn = op.get_bind()
    conn.execute(
        _steps.update()
        .where(_steps.c.waiting_for == f"signal:{ACTION_SIGNAL}")
        .values(waiting_for="action")
    )
    conn.execute(_signals.delete().where(_signals.c.name == ACTION_SIGNAL))
