"""Unique correlation keys in the SQL store: at most one unfinished run of a workflow holds
a key its version declared unique (decision 0024)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from flowyard.domain.errors import Conflict
from flowyard.store.rows import chunks
from flowyard.store.schema import UNFINISHED_STATUSES, runs


async def check_unique_keys(conn: AsyncConnection, run_rows: Sequence[Mapping[str, Any]]) -> None:
    """Refuse (Conflict, naming the run that holds it) a run whose unique correlation key an
    unfinished run of its workflow holds, whatever version that run is on; the partial
    unique index settles a race between two such starts (the loser's retry lands here)."""
    wanted: dict[tuple[str, str], int] = {}
    for index, row in enumerate(run_rows):
        if not row["correlation_unique"]:
            continue
        pair = (row["workflow_id"], row["correlation_key"])
        if pair in wanted:
            raise Conflict(
                f"correlation key {pair[1]!r} is given to two runs of one start (runs "
                f"{wanted[pair]} and {index}); the workflow allows one unfinished run per key",
                detail={"correlation_key": pair[1]},
            )
        wanted[pair] = index
    by_workflow: dict[str, list[str]] = {}
    for workflow_id, key in wanted:
        by_workflow.setdefault(workflow_id, []).append(key)
    for workflow_id, keys in by_workflow.items():
        for chunk in chunks(keys, 500):
            holder = (
                await conn.execute(
                    sa.select(runs.c.id, runs.c.correlation_key)
                    .where(
                        runs.c.workflow_id == workflow_id,
                        runs.c.correlation_key.in_(chunk),
                        runs.c.status.in_(UNFINISHED_STATUSES),
                    )
                    .order_by(runs.c.id)
                    .limit(1)
                )
            ).first()
            if holder is not None:
                raise Conflict(
                    f"run {holder.id} holds correlation key {holder.correlation_key!r} and "
                    "has not ended; the workflow allows one unfinished run per key",
                    detail={"run_id": holder.id, "correlation_key": holder.correlation_key},
                )
