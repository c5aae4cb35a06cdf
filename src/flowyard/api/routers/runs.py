"""/runs and /workflows/{id}/runs: start runs and read their state and history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from flowyard.api.deps import ActorDep, AuditDep, ContainerDep, ServiceDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.schemas import (
    MAX_ID,
    EventPublic,
    Page,
    RunDetailPublic,
    RunPublic,
    StartRun,
    StepPublic,
    paged,
)
from flowyard.domain.definition import MAX_CORRELATION_KEY
from flowyard.domain.errors import InvalidInput, Problem
from flowyard.domain.statuses import RunStatus, StepStatus

router = APIRouter(tags=["runs"], route_class=StrictJSONRoute)


@router.post(
    "/workflows/{workflow_ref}/runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunPublic,
    summary="Start a run",
    responses={
        200: {
            "description": "A run with this idempotency key exists; it is returned.",
            "model": RunPublic,
        },
        **documented(
            404,
            409,
            422,
            d409="The workflow is archived, or an unfinished run holds the correlation key "
            "the workflow makes unique (`run_id` names it).",
            d422="The input does not match the workflow's input_schema, or the correlation "
            "key is invalid or could not be computed.",
        ),
    },
)
async def start_run(
    service: ServiceDep,
    actor: ActorDep,
    audit: AuditDep,
    workflow_ref: str,
    body: StartRun,
    response: Response,
) -> RunPublic:
    """Start a run (202). With a used ``idempotency_key`` the existing run is returned (200)."""
    run, created = await service.start_run(
        workflow_ref,
        body.input,
        vars=body.vars,
        idempotency_key=body.idempotency_key,
        version=body.version,
        actor=actor,
        correlation_key=body.correlation_key,
        audit=audit,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/api/v1/runs/{run.id}"
    return RunPublic.of(run)


@router.get(
    "/runs",
    response_model=Page[RunPublic],
    summary="List runs",
    responses=documented(
        404, d404="The `workflow`, `schedule` or `campaign` filter names nothing."
    ),
)
async def list_runs(
    service: ServiceDep,
    container: ContainerDep,
    status_: Annotated[RunStatus | None, Query(alias="status")] = None,
    workflow: Annotated[
        str | None, Query(max_length=200, description="Workflow id or name")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 50,
    cursor: Annotated[str | None, Query(max_length=64, description="`next_cursor`")] = None,
    error_type: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            description="Error type that ended the run: exact (`http.400`) or prefix (`http.*`)",
        ),
    ] = None,
    correlation_key: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_CORRELATION_KEY,
            description="Only runs with this correlation key",
        ),
    ] = None,
    parent_run_id: Annotated[
        str | None,
        Query(min_length=1, max_length=64, description="Only the child runs of this run"),
    ] = None,
    schedule: Annotated[
        str | None,
        Query(max_length=200, description="Schedule id or name: the runs its ticks started"),
    ] = None,
    campaign: Annotated[
        str | None,
        Query(min_length=1, max_length=64, description="Only the runs of this campaign (id)"),
    ] = None,
) -> Page[RunPublic]:
    """Runs, newest first, filtered by status, workflow, error type, correlation key, parent
    run, schedule and campaign, a page at a time (`next_cursor` is null on the last page)."""
    schedule_id = (await container.schedules.record(schedule)).id if schedule else None
    rows = await service.list_runs(
        status=status_,
        workflow=workflow,
        limit=limit + 1,
        before=cursor,
        error_type=error_type,
        correlation_key=correlation_key,
        parent_run_id=parent_run_id,
        schedule_id=schedule_id,
        campaign_id=campaign,
    )
    runs, next_cursor = paged(rows, limit, lambda r: r.id)
    return Page[RunPublic](items=[RunPublic.of(r) for r in runs], next_cursor=next_cursor)


@router.get(
    "/runs/{run_id}", response_model=RunDetailPublic, summary="Get a run", responses=documented(404)
)
async def get_run(service: ServiceDep, run_id: str) -> RunDetailPublic:
    """A run with its steps and (first 1,000) events; page through more with
    `GET /runs/{id}/steps` and `GET /runs/{id}/events`."""
    detail = await service.get_run(run_id)
    base = RunPublic.of(detail.run).model_dump()
    return RunDetailPublic(
        **base,
        steps=[StepPublic.of(s) for s in detail.steps],
        events=[EventPublic.of(e) for e in detail.events],
    )


@router.get(
    "/runs/{run_id}/steps",
    response_model=Page[StepPublic],
    summary="List a run's steps",
    responses=documented(404),
)
async def list_steps(
    service: ServiceDep,
    run_id: str,
    status_: Annotated[
        StepStatus | None, Query(alias="status", description="Only steps in this status")
    ] = None,
    node_id: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Only steps of this node")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 500,
    cursor: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="`next_cursor` (a step id)")
    ] = None,
) -> Page[StepPublic]:
    """Per-node state of a run, in creation order, a page at a time."""
    rows = await service.list_steps(
        run_id, limit=limit + 1, after=cursor, status=status_, node_id=node_id
    )
    steps, next_cursor = paged(rows, limit, lambda s: s.id)
    return Page[StepPublic](items=[StepPublic.of(s) for s in steps], next_cursor=next_cursor)


@router.get(
    "/runs/{run_id}/events",
    response_model=Page[EventPublic],
    summary="List a run's events",
    responses=documented(404),
)
async def list_events(
    service: ServiceDep,
    run_id: str,
    cursor: Annotated[
        int | None,
        Query(ge=0, le=MAX_ID, description="`next_cursor`: events after this event id"),
    ] = None,
    after: Annotated[
        int | None,
        Query(ge=0, le=MAX_ID, deprecated=True, description="The same as `cursor` (older name)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000, description="Page size")] = 1000,
) -> Page[EventPublic]:
    """History of a run in commit order, after an event-id cursor, a page at a time. The
    ids are the same cursors the streams resume from (`?after=`)."""
    if cursor is not None and after is not None and cursor != after:
        raise InvalidInput(
            "give the event cursor once: `cursor` and `after` differ",
            [Problem("", "`cursor` and `after` differ", "conflicting_cursor")],
        )
    start = cursor if cursor is not None else after or 0
    rows = await service.list_events(run_id, after=start, limit=limit + 1)
    events, next_cursor = paged(rows, limit, lambda e: e.id)
    return Page[EventPublic](items=[EventPublic.of(e) for e in events], next_cursor=next_cursor)
