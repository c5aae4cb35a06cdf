"""Campaigns: start many runs at once (a JSON array, or an NDJSON or CSV body streamed to a
temporary file), follow their progress, page their runs, and pause, resume, cancel or retry
them as a whole."""

from __future__ import annotations

import tempfile
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from flowyard.api.campaign_schemas import (
    CREATE_EXAMPLE,
    CampaignActionResult,
    CampaignCreate,
    CampaignPatch,
    CampaignPublic,
)
from flowyard.api.deps import ActorDep, AuditDep, ServiceDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.schemas import Page, RunPublic, paged
from flowyard.campaigns.items import ItemFormat
from flowyard.domain.auth import AuditEntry
from flowyard.domain.definition import MAX_CORRELATION_KEY
from flowyard.domain.errors import InvalidInput, Problem
from flowyard.domain.priorities import BULK, DEFAULT_WEIGHT, MAX_PRIORITY, MAX_WEIGHT, MIN_PRIORITY
from flowyard.domain.quotas import MAX_CONCURRENCY
from flowyard.domain.statuses import RunStatus
from flowyard.service import FlowyardService, LimitsSpec

router = APIRouter(prefix="/campaigns", tags=["campaigns"], route_class=StrictJSONRoute)

#: Bytes of a streamed body kept in memory before the temporary file goes to disk.
SPOOL_IN_MEMORY = 1024 * 1024

_BODIES = {
    "application/json": {
        "schema": CampaignCreate.model_json_schema(),
        "example": CREATE_EXAMPLE,
    },
    "application/x-ndjson": {
        "schema": {"type": "string", "description": "One item per line"},
        "example": '{"email": "ada@example.com"}\n{"email": "bob@example.com"}\n',
    },
    "text/csv": {
        "schema": {"type": "string", "description": "A header row, then one item a row"},
        "example": "email,first\r\nada@example.com,Ada\r\n",
    },
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CampaignPublic,
    summary="Start a campaign",
    openapi_extra={"requestBody": {"required": True, "content": _BODIES}},
    responses={
        200: {
            "description": "The same campaign and items were posted before: it is returned.",
            "model": CampaignPublic,
        },
        **documented(
            404,
            409,
            413,
            415,
            422,
            d409="A campaign of this name (or idempotency key) exists with other items, or "
            "the workflow is archived.",
            d422="An item is not acceptable (the problem names its index or line): nothing "
            "was started.",
        ),
    },
)
async def start_campaign(
    request: Request,
    response: Response,
    service: ServiceDep,
    actor: ActorDep,
    audit: AuditDep,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    item_key: Annotated[str | None, Query(max_length=500)] = None,
    priority: Annotated[int, Query(ge=MIN_PRIORITY, le=MAX_PRIORITY)] = BULK,
    weight: Annotated[int, Query(ge=1, le=MAX_WEIGHT)] = DEFAULT_WEIGHT,
    concurrency: Annotated[int | None, Query(ge=1, le=MAX_CONCURRENCY)] = None,
    rate: Annotated[str | None, Query(max_length=100)] = None,
    key_concurrency: Annotated[int | None, Query(ge=1, le=MAX_CONCURRENCY)] = None,
    key_rate: Annotated[str | None, Query(max_length=100)] = None,
    concurrency_key: Annotated[str | None, Query(max_length=500)] = None,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> CampaignPublic:
    """One run of the workflow's latest version per item, all started or none. A JSON body
    holds the items; an NDJSON or CSV body is the items, with the other fields in the query
    (the limits flat: `concurrency`, `rate`, `key_concurrency`, `key_rate`). 201 when
    created; 200 with the campaign when the same campaign (workflow and name, or
    `Idempotency-Key`) was posted with the same items. Its runs' steps are claimed at
    `priority` (default 3; runs started one at a time have 6), sharing the workers with the
    other campaigns of that priority by `weight`; `limits` cap its steps in flight and
    their rate, for the whole campaign and per `concurrency_key`."""
    fmt = ItemFormat.of_media_type(request.headers.get("content-type"))
    if fmt is None:
        raise _unsupported(request.headers.get("content-type"))
    if fmt == ItemFormat.JSON:
        try:
            body = CampaignCreate.model_validate(await request.json())
        except ValidationError as exc:
            raise InvalidInput(
                "the body is not a campaign",
                [Problem(_pointer(e["loc"]), e["msg"], e["type"]) for e in exc.errors()[:20]],
            ) from None
        campaign, created = await service.start_campaign(
            body.workflow,
            body.name,
            fmt,
            body.items,
            item_key=body.item_key,
            vars=body.vars,
            priority=body.priority,
            weight=body.weight,
            limits=LimitsSpec(**body.limits.model_dump()) if body.limits else None,
            concurrency_key=body.concurrency_key,
            idempotency_key=idempotency_key,
            actor=actor,
            audit=audit,
        )
    else:
        missing = [n for n, v in (("workflow", workflow), ("name", name)) if not v]
        if missing:
            raise InvalidInput(
                f"an {fmt.value.upper()} body needs {' and '.join(missing)} in the query",
                [Problem(f"/query/{m}", "required", "required") for m in missing],
            )
        assert workflow is not None and name is not None
        with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as spool:
            async for chunk in request.stream():  # the body limit counts these bytes
                spool.write(chunk)
            spool.seek(0)
            campaign, created = await service.start_campaign(
                workflow,
                name,
                fmt,
                spool,
                item_key=item_key,
                priority=priority,
                weight=weight,
                limits=LimitsSpec(concurrency, rate, key_concurrency, key_rate),
                concurrency_key=concurrency_key,
                idempotency_key=idempotency_key,
                actor=actor,
                audit=audit,
            )
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/api/v1/campaigns/{campaign.id}"
    return CampaignPublic.of(campaign, service.clock())


@router.get(
    "", response_model=Page[CampaignPublic], summary="List campaigns", responses=documented(404)
)
async def list_campaigns(
    service: ServiceDep,
    workflow: Annotated[
        str | None, Query(max_length=200, description="Workflow id or name")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[CampaignPublic]:
    """Campaigns newest first, with their progress."""
    rows = await service.list_campaigns(workflow=workflow, limit=limit + 1, before=cursor)
    items, next_cursor = paged(rows, limit, lambda c: c.id)
    now = service.clock()
    return Page[CampaignPublic](
        items=[CampaignPublic.of(c, now) for c in items], next_cursor=next_cursor
    )


@router.get(
    "/{campaign_id}",
    response_model=CampaignPublic,
    summary="A campaign's progress",
    responses=documented(404),
)
async def get_campaign(service: ServiceDep, campaign_id: str) -> CampaignPublic:
    """Counts of the campaign's runs by status (from counters: as cheap at 50,000 runs as at
    5), the rate over the last minute and the ETA at that rate."""
    return CampaignPublic.of(await service.get_campaign(campaign_id), service.clock())


@router.patch(
    "/{campaign_id}",
    response_model=CampaignPublic,
    summary="Change a running campaign's priority, weight or limits",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/merge-patch+json": {
                    "schema": {"$ref": "#/components/schemas/CampaignPatch"}
                }
            }
        }
    },
    responses=documented(
        404,
        409,
        422,
        d409="Every run of the campaign has ended, or it was cancelled.",
        d422="A value is out of range, a limit is not valid, or a field cannot be removed "
        "(the problem names it).",
    ),
)
async def update_campaign(
    service: ServiceDep, audit: AuditDep, campaign_id: str, body: CampaignPatch
) -> CampaignPublic:
    """A JSON merge patch (`application/merge-patch+json` or `application/json`) of the
    campaign's `priority`, `weight` and `limits` (a limit given null is removed). The
    campaign takes it at once (the weight at the next claim); its unfinished runs and their
    steps that are not running yet take the new priority by chunks of a few thousand, so
    no transaction holds many rows; steps enqueued later take it too. Sending the same
    change again finishes one that was interrupted."""
    sent = body.model_fields_set
    fixed = [f for f in ("priority", "weight") if f in sent and getattr(body, f) is None]
    if fixed:
        raise InvalidInput(
            "the campaign's priority and weight can be changed, not removed",
            [Problem(f"/{f}", "must be an integer, not null", "required") for f in fixed],
        )
    limits = None
    if "limits" in sent:
        if body.limits is None:
            raise InvalidInput(
                "limits cannot be null: give null to each limit to remove",
                [Problem("/limits", "an object of limits, not null", "type")],
            )
        limits = body.limits.model_dump(include=body.limits.model_fields_set)
    changed = await service.update_campaign(
        campaign_id, priority=body.priority, weight=body.weight, limits=limits, audit=audit
    )
    return CampaignPublic.of(changed.campaign, service.clock())


@router.get(
    "/{campaign_id}/runs",
    response_model=Page[RunPublic],
    summary="A campaign's runs",
    responses=documented(404),
)
async def list_campaign_runs(
    service: ServiceDep,
    campaign_id: str,
    status_: Annotated[RunStatus | None, Query(alias="status")] = None,
    correlation_key: Annotated[
        str | None, Query(min_length=1, max_length=MAX_CORRELATION_KEY)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[RunPublic]:
    """The campaign's runs in the order they were started, filtered by status or key."""
    rows = await service.list_campaign_runs(
        campaign_id,
        status=status_,
        correlation_key=correlation_key,
        after=cursor,
        limit=limit + 1,
    )
    runs, next_cursor = paged(rows, limit, lambda r: r.id)
    return Page[RunPublic](items=[RunPublic.of(r) for r in runs], next_cursor=next_cursor)


async def _act(
    service: FlowyardService,
    campaign_id: str,
    action: str,
    actor: str,
    audit: AuditEntry | None,
) -> CampaignActionResult:
    done = await service.campaign_action(campaign_id, action, actor=actor, audit=audit)
    return CampaignActionResult(
        campaign=CampaignPublic.of(done.campaign, service.clock()),
        moved=done.moved,
        skipped=done.skipped,
    )


@router.post(
    "/{campaign_id}/pause",
    response_model=CampaignActionResult,
    summary="Pause every unfinished run",
    responses=documented(404, 409),
)
async def pause_campaign(
    service: ServiceDep, actor: ActorDep, audit: AuditDep, campaign_id: str
) -> CampaignActionResult:
    """Pause the campaign's pending, running and waiting runs, page by page."""
    return await _act(service, campaign_id, "pause", actor, audit)


@router.post(
    "/{campaign_id}/resume",
    response_model=CampaignActionResult,
    summary="Resume every paused run",
    responses=documented(404, 409),
)
async def resume_campaign(
    service: ServiceDep, actor: ActorDep, audit: AuditDep, campaign_id: str
) -> CampaignActionResult:
    """Resume the campaign's paused runs."""
    return await _act(service, campaign_id, "resume", actor, audit)


@router.post(
    "/{campaign_id}/cancel",
    response_model=CampaignActionResult,
    summary="Cancel every unfinished run",
    responses=documented(404, 409),
)
async def cancel_campaign(
    service: ServiceDep, actor: ActorDep, audit: AuditDep, campaign_id: str
) -> CampaignActionResult:
    """Cancel the campaign's unfinished runs; the campaign stays cancelled."""
    return await _act(service, campaign_id, "cancel", actor, audit)


@router.post(
    "/{campaign_id}/retry-failed",
    response_model=CampaignActionResult,
    summary="Retry every failed run",
    responses=documented(404, 409),
)
async def retry_failed(
    service: ServiceDep, actor: ActorDep, audit: AuditDep, campaign_id: str
) -> CampaignActionResult:
    """Retry the campaign's failed and timed-out runs from their failed steps."""
    return await _act(service, campaign_id, "retry-failed", actor, audit)


def _unsupported(content_type: str | None) -> Exception:
    return HTTPException(
        415,
        f"Content-Type {content_type!r} is not accepted: send application/json, "
        "application/x-ndjson or text/csv",
    )


def _pointer(loc: tuple[int | str, ...]) -> str:
    return "".join(f"/{part}" for part in loc)
