"""Many runs at once for the multi-process tests: ``n``-numbered runs of a workflow that
starts at a trigger named ``start``, how many runs of a database have ended, and the check
that every step of them ran exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import NewRun, VersionRecord, WorkflowRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store.factory import normalize_url
from flowyard.store.schema import run_events, runs, steps
from support.http import Recorded


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


async def steps_ran_once(
    db_url: str, requests: Sequence[Recorded], *, runs_count: int, steps_per_run: int
) -> Counter[int]:
    """Check that every run succeeded, every step ran in one attempt, and every HTTP call
    (``requests``, one per http step, each with its ``Idempotency-Key``) reached the server
    once; returns the steps each worker process started (by pid)."""
    engine = create_async_engine(normalize_url(db_url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            statuses = Counter((await conn.execute(sa.select(runs.c.status))).scalars())
            step_rows = list(await conn.execute(sa.select(steps.c.status, steps.c.attempt)))
            started = list(
                (
                    await conn.execute(
                        sa.select(run_events.c.data).where(run_events.c.type == "step.started")
                    )
                ).scalars()
            )
    finally:
        await engine.dispose()
    assert statuses == {RunStatus.SUCCEEDED.value: runs_count}
    assert len(step_rows) == runs_count * steps_per_run
    assert {row.status for row in step_rows} == {StepStatus.SUCCEEDED.value}
    assert max(row.attempt for row in step_rows) == 1, "a step was attempted twice"
    keys = Counter(r.headers.get("Idempotency-Key") for r in requests)
    assert None not in keys
    repeated = {k: n for k, n in keys.items() if n != 1}
    assert not repeated, f"steps executed more than once: {list(repeated.items())[:5]}"
    assert len(started) == runs_count * steps_per_run
    return Counter(worker_pid(str(data["worker"])) for data in started)


def worker_pid(worker_id: str) -> int:
    """Worker ids look like ``<host>:<pid>-<suffix>``."""
    return int(worker_id.rsplit(":", 1)[1].split("-", 1)[0])
