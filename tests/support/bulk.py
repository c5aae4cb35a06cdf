"""Many runs at once for the multi-process tests: ``n``-numbered runs of a workflow that
starts at a trigger named ``start``, and how many runs of a database have ended."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import NewRun, VersionRecord, WorkflowRecord
from flowyard.domain.statuses import RunStatus
from flowyard.store.factory import normalize_url
from flowyard.store.schema import runs


def numbered_runs(record: WorkflowRecord, version: VersionRecord, count: int) -> list[NewRun]:
    """``count`` runs of ``version`` with input ``{"n": n}``, starting at its trigger."""
    return [
        NewRun(
            workflow_id=WorkflowId(record.id),
            workflow_version=version.version,
            start_node="start",
            start_node_type="trigger",
            input={"n": n},
        )
        for n in range(count)
    ]


async def ended_runs(db_url: str) -> int:
    """Runs of the database in a final status, through a short-lived engine."""
    engine = create_async_engine(normalize_url(db_url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            query = sa.select(sa.func.count()).where(
                runs.c.status.in_([s.value for s in RunStatus if s.is_terminal])
            )
            return int(await conn.scalar(query) or 0)
    finally:
        await engine.dispose()
