"""/runs and /workflows/{id}/runs: start runs and read their state and history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from flowyard.api.deps import ActorDep, ServiceDep
from flowyard.api.problems import documented
from flowyard.api.schemas import (
    EventPublic,
    Page,
    RunDetailPublic,
    RunPublic,
    StartRun,
    StepPublic,
)
from flowyard.domain.ids import RunId
from flowyard.domain.statuses import RunStatus

router = APIRouter(tags=["runs"])


@router.post(
    "/workflows/{workflow_ref}/runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunPublic,
    responses={
        200: {
            "description": "A run with this idempotency key exists; it is returned.",
            "model": RunPublic,
        }
    },
)
async def start_run(
    service: ServiceDep, actor: ActorDep, workflow_ref: str, body: StartRun, response: Response
) -> RunPublic:
    """Start a run (202). With a used ``idempotency_key`` the existing run is returned (200)."""
    run, created = await service.start_run(
        workflow_ref,
        body.input,
        vars=body.vars,
        idempotency_key=body.idempotency_key,
        version=body.version,
        actor=actor,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/api/v1/runs/{run.id}"
    return RunPublic.of(run)


@router.get("/runs", response_model=Page[RunPublic], responses=documented(404, 422))
async def list_runs(
    service: ServiceDep,
    status_: Annotated[RunStatus | None, Query(alias="status")] = None,
    workflow: Annotated[
        str | None, Query(max_length=200, description="Workflow id or name")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    error_type: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            description="Error type that ended the run: exact (`http.400`) or prefix (`http.*`)",
        ),
    ] = None,
) -> Page[RunPublic]:
    """Runs, newest first, filtered by status, workflow and error type."""
    runs = await service.list_runs(
        status=status_, workflow=workflow, limit=limit, before=cursor, error_type=error_type
    )
    next_cursor = runs[-1].id if len(runs) == limit else None
    return Page[RunPublic](items=[RunPublic.of(r) for r in runs], next_cursor=next_cursor)


@router.get("/runs/{run_id}", response_model=RunDetailPublic)
async def get_run(service: ServiceDep, run_id: str) -> RunDetailPublic:
    """A run with its steps and events."""
    detail = await service.get_run(run_id)
    base = RunPublic.of(detail.run).model_dump()
    return RunDetailPublic(
        **base,
        steps=[StepPublic.of(s) for s in detail.steps],
        events=[EventPublic.of(e) for e in detail.events],
    )


@router.get("/runs/{run_id}/steps", response_model=list[StepPublic])
async def list_steps(service: ServiceDep, run_id: str) -> list[StepPublic]:
    """Per-node state of a run."""
    run = await service.store.get_run(run_id)
    return [StepPublic.of(s) for s in await service.store.list_steps(run.id)]


@router.get("/runs/{run_id}/events", response_model=Page[EventPublic])
async def list_events(
    service: ServiceDep,
    run_id: str,
    after: Annotated[int, Query(ge=0, description="Event id cursor")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> Page[EventPublic]:
    """History of a run in commit order, after an event-id cursor."""
    run = await service.store.get_run(run_id)
    events = await service.store.list_events(RunId(run.id), after=after, limit=limit)
    next_cursor = str(events[-1].id) if len(events) == limit else None
    return Page[EventPublic](items=[EventPublic.of(e) for e in events], next_cursor=next_cursor)
