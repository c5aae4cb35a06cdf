"""A campaign keeps its limits (``campaigns.limits``): shown by ``GET /campaigns/{id}``,
changed by ``PATCH``, and restored as quota rows by retry-failed after the pruner deleted the
rows of the ended campaign. Existing campaigns take them from their quota rows.

Revision ID: 0019
Revises: 0017
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowyard.store.schema import JSONType

revision = "0019"
down_revision = "0017"
branch_labels = None
depends_on = None

_campaigns = sa.table("campaigns", sa.column("id", sa.String), sa.column("limits", JSONType))
_quotas = sa.table(
    "quotas",
    sa.column("key", sa.String),
    sa.column("tokens", sa.Integer),
    sa.column("per_s", sa.Float),
    sa.column("concurrency", sa.Integer),
)


def _rate(row: sa.Row[object] | None) -> str | None:
    """domain.quotas.rate_text when this was written (a migration is frozen)."""
    if row is None or row.tokens is None or row.per_s is None:
        return None
    return f"{row.tokens} per {row.per_s:g}s"


def upgrade() -> None:
    """Add the column; fill it from each campaign's quota rows (the whole campaign's, and the
    first of its rows per concurrency key: they were made alike)."""
    op.add_column("campaigns", sa.Column("limits", JSONType, nullable=True))
    bind = op.get_bind()
    for (campaign_id,) in list(bind.execute(sa.select(_campaigns.c.id))):
        key = f"campaign:{campaign_id}"
        whole = bind.execute(sa.select(_quotas).where(_quotas.c.key == key)).first()
        per_key = bind.execute(
            sa.select(_quotas)
            .where(_quotas.c.key > key + ":", _quotas.c.key < key + ";")
            .order_by(_quotas.c.key)
            .limit(1)
        ).first()
        limits = {
            "concurrency": whole.concurrency if whole is not None else None,
            "rate": _rate(whole),
            "key_concurrency": per_key.concurrency if per_key is not None else None,
            "key_rate": _rate(per_key),
        }
        if any(v is not None for v in limits.values()):
            bind.execute(
                _campaigns.update().where(_campaigns.c.id == campaign_id).values(limits=limits)
            )


def downgrade() -> None:
    """Back to 0017: the quota rows stay the only record of the limits."""
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("limits")
