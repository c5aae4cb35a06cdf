"""Builders for the store contract suite: definitions, runs, transitions, a fixed clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from flowyard.domain.commands import NextStep, Transition
from flowyard.domain.errors import ErrorInfo
from flowyard.domain.ids import RunId
from flowyard.domain.records import NewRun, RunRecord, StepRecord, WorkflowRecord
from flowyard.domain.statuses import StepStatus
from flowyard.store import StepCompletion, Store, normalize_url

#: Every test uses explicit, aware-UTC instants derived from this one (no sleeping).
T0 = datetime(2031, 3, 4, 12, 0, 0, tzinfo=UTC)
LEASE_S = 30.0


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def definition(name: str, *nodes: str, **extra: Any) -> dict[str, Any]:
    """A plain definition dict (the store stores definitions, it does not validate them)."""
    ids = nodes or ("start",)
    body: list[dict[str, Any]] = [
        {"id": node, "type": "noop", **({"next": ids[i + 1]} if i + 1 < len(ids) else {})}
        for i, node in enumerate(ids)
    ]
    return {"name": name, "start": ids[0], "nodes": body, **extra}


async def make_workflow(store: Store, name: str = "lead-routing") -> WorkflowRecord:
    """A workflow with version 1."""
    record, _ = await store.create_workflow(name, None, definition(name), "tester")
    return record


def new_run(
    workflow: WorkflowRecord,
    *,
    key: str | None = None,
    input: Any = None,
    node: str = "start",
    actor: str | None = None,
) -> NewRun:
    """A run of the workflow's latest version starting at ``node``."""
    return NewRun(
        workflow_id=workflow.id,
        workflow_version=workflow.latest_version,
        start_node=node,
        start_node_type="noop",
        input={"n": 1} if input is None else input,
        idempotency_key=key,
        actor=actor,
    )


async def start(
    store: Store, workflow: WorkflowRecord, count: int = 1, *, now: datetime = T0
) -> list[RunRecord]:
    """Start ``count`` runs (no idempotency keys)."""
    started = await store.start_runs([new_run(workflow) for _ in range(count)], now)
    assert all(created for _, created in started)
    return [run for run, _ in started]


async def claim(
    store: Store,
    *,
    now: datetime = T0,
    limit: int = 100,
    worker: str = "w1",
    lease_s: float = LEASE_S,
) -> list[StepRecord]:
    """Claim due steps."""
    return await store.claim_steps(worker, limit=limit, now=now, lease_s=lease_s)


async def claim_one(store: Store, *, now: datetime = T0, worker: str = "w1") -> StepRecord:
    """Claim exactly one due step."""
    [step] = await claim(store, now=now, limit=1, worker=worker)
    return step


def step_to(
    node: str, *, at_: datetime = T0, iteration: int = 0, node_type: str = "noop"
) -> NextStep:
    """A next step to schedule."""
    return NextStep(node, node_type, iteration, at_)


def succeeded(
    output: Any = None,
    *,
    next_steps: Sequence[NextStep] = (),
    path_ended: bool = False,
    run_output: Any = None,
    extra_events: tuple[tuple[str, dict[str, Any]], ...] = (),
) -> Transition:
    """A successful step completion."""
    return Transition(
        StepStatus.SUCCEEDED,
        output=output,
        next_steps=tuple(next_steps),
        path_ended=path_ended,
        run_output=run_output,
        event=("step.succeeded", {"output": output}),
        extra_events=extra_events,
    )


BOOM = ErrorInfo("http.500", "server said no", transient=True, details={"status": 500})


def failed_run(error: ErrorInfo = BOOM) -> Transition:
    """A failed step that fails its run."""
    return Transition(
        StepStatus.FAILED, error=error, fail_run=error, event=("step.failed", error.as_dict())
    )


def retrying(retry_at: datetime, error: ErrorInfo = BOOM) -> Transition:
    """A failed attempt to retry at ``retry_at``."""
    return Transition(
        StepStatus.RETRYING,
        error=error,
        retry_at=retry_at,
        event=("step.retrying", {"retry_at": retry_at.isoformat()}),
    )


async def steps_by_node(store: Store, run_id: RunId) -> dict[tuple[str, int], StepRecord]:
    """Steps of a run keyed by (node, iteration)."""
    return {(s.node_id, s.iteration): s for s in await store.list_steps(run_id)}


async def event_types(store: Store, run_id: RunId) -> list[str]:
    """Event types of a run in order."""
    return [e.type for e in await store.list_events(run_id)]


@asynccontextmanager
async def raw_connection(db_url: str) -> AsyncIterator[AsyncConnection]:
    """A plain connection to the test database, outside the store (for setup the port does
    not offer, such as archiving, and for inspecting the schema)."""
    engine = create_async_engine(normalize_url(db_url))
    try:
        async with engine.begin() as conn:
            yield conn
    finally:
        await engine.dispose()


async def archive(db_url: str, name: str) -> None:
    """Archive a workflow directly (the port has no archive operation yet)."""
    from flowyard.store.schema import workflows

    async with raw_connection(db_url) as conn:
        await conn.execute(
            workflows.update().where(workflows.c.name == name).values(archived=sa.true())
        )


async def complete(
    store: Store, step: StepRecord, transition: Transition, now: datetime = T0
) -> bool:
    """Complete one claimed step; whether it was applied."""
    [applied] = (await store.complete_steps([StepCompletion(step, transition)], now)).applied
    return applied


async def one_run(store: Store, now: datetime = T0) -> RunRecord:
    """A new workflow with one started run."""
    [run] = await start(store, await make_workflow(store), now=now)
    return run
