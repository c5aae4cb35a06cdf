"""Run lifecycle: cancel, pause, resume and retry one run; retry ended runs in bulk (the
dead-letter queue). Every action is recorded in the run's events with its ``actor``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from flowyard.api.deps import ActorDep, AuditDep, ServiceDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.schemas import (
    BulkRetryRequest,
    BulkRetryResult,
    CancelRun,
    RetryRun,
    RunPublic,
    SkippedRun,
)
from flowyard.domain.statuses import RunStatus

router = APIRouter(tags=["runs"], route_class=StrictJSONRoute)


# Declared before the ``/runs/{run_id}/...`` routes: ``retry`` is not a run id.
@router.post(
    "/runs/retry",
    response_model=BulkRetryResult,
    summary="Retry ended runs in bulk (dead letters)",
    responses=documented(404, 422),
)
async def retry_runs(
    service: ServiceDep,
    actor: ActorDep,
    audit: AuditDep,
    body: Annotated[BulkRetryRequest | None, Body()] = None,
) -> BulkRetryResult:
    """Retry the newest runs (up to ``limit``) with a ``status`` (default ``failed``),
    optionally of one ``workflow`` and with an ``error_type`` (exact, or a prefix ending in
    ``*``: ``http.*``). Each restarts from its failed step; a run that cannot be retried is
    listed in ``skipped`` with the reason. 404 when the workflow does not exist."""
    body = body or BulkRetryRequest()
    result = await service.retry_failed(
        workflow=body.workflow,
        error_type=body.error_type,
        status=RunStatus(body.status),
        limit=body.limit,
        actor=actor,
        audit=audit,
    )
    return BulkRetryResult(
        matched=result.matched,
        retried=result.retried,
        skipped=[SkippedRun(**s) for s in result.skipped],
    )


@router.post(
    "/runs/{run_id}/cancel",
    response_model=RunPublic,
    summary="Cancel a run",
    responses=documented(404, 409, 422),
)
async def cancel_run(
    service: ServiceDep,
    actor: ActorDep,
    audit: AuditDep,
    run_id: str,
    body: Annotated[CancelRun | None, Body()] = None,
) -> RunPublic:
    """Cancel an unfinished run: no further step starts, and a step still running is stopped
    (its result is discarded). 409 when the run already ended; ``current_status`` says how."""
    reason = body.reason if body is not None else None
    return RunPublic.of(await service.cancel_run(run_id, actor=actor, reason=reason, audit=audit))


@router.post(
    "/runs/{run_id}/pause",
    response_model=RunPublic,
    summary="Pause a run",
    responses=documented(404, 409),
)
async def pause_run(
    service: ServiceDep, actor: ActorDep, audit: AuditDep, run_id: str
) -> RunPublic:
    """Pause a pending, running or waiting run: no new step starts (a step already running
    finishes) until it is resumed; retry backoffs and timers keep their deadlines.
    409 otherwise."""
    return RunPublic.of(await service.pause_run(run_id, actor=actor, audit=audit))


@router.post(
    "/runs/{run_id}/resume",
    response_model=RunPublic,
    summary="Resume a paused run",
    responses=documented(404, 409),
)
async def resume_run(
    service: ServiceDep, actor: ActorDep, audit: AuditDep, run_id: str
) -> RunPublic:
    """Resume a paused run: held steps run when due. 409 when the run is not paused."""
    return RunPublic.of(await service.resume_run(run_id, actor=actor, audit=audit))


@router.post(
    "/runs/{run_id}/retry",
    response_model=RunPublic,
    summary="Retry a run from its failed step",
    responses=documented(404, 409, 422),
)
async def retry_run(
    service: ServiceDep,
    actor: ActorDep,
    audit: AuditDep,
    run_id: str,
    body: Annotated[RetryRun | None, Body()] = None,
) -> RunPublic:
    """Run a failed, timed-out or cancelled run again from the step that stopped it, with
    the same idempotency keys; outputs of the steps that succeeded are kept. With
    ``use_latest_definition`` the run moves to the workflow's latest version first. 409 for
    a run in any other status, or when that version lacks a node the run must run again."""
    latest = body.use_latest_definition if body else False
    retried = await service.retry_run(
        run_id, actor=actor, use_latest_definition=latest, audit=audit
    )
    return RunPublic.of(retried)
