"""Event wake-ups: a statement-level trigger NOTIFYs ``flowyard_events`` on PostgreSQL.

The trigger only wakes listeners (an empty payload); streams read ``run_events`` by cursor.
It lives outside ``schema.metadata`` (SQLAlchemy does not model triggers), so the schema
comparison of the migration tests is unaffected. SQLite: nothing to do (streams poll).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CHANNEL = "flowyard_events"

_FUNCTION = f"""
CREATE OR REPLACE FUNCTION flowyard_notify_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END;
$$
"""
_TRIGGER = """
CREATE TRIGGER run_events_notify
AFTER INSERT ON run_events
FOR EACH STATEMENT EXECUTE FUNCTION flowyard_notify_events()
"""


def upgrade() -> None:
    """Create the notify function and trigger (PostgreSQL only)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    op.execute(_TRIGGER)


def downgrade() -> None:
    """Drop the trigger and its function (PostgreSQL only)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS run_events_notify ON run_events")
    op.execute("DROP FUNCTION IF EXISTS flowyard_notify_events()")
