"""/event-triggers and /events: editors manage event triggers (a run of workflow X ended, or
a named event); ``POST /events/{name}`` posts an event to every trigger subscribed to it.
Every change is audited."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from flowyard.api.deps import ActorDep, AuditDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.routers.hooks import fields_given
from flowyard.api.schemas import Page, paged
from flowyard.bootstrap import Container
from flowyard.domain.triggers import (
    EVENT_ID_MAX,
    EVENT_NAME_PATTERN,
    INPUT_HELP,
    Debounce,
    EventTriggerRecord,
    On,
    Throttle,
)
from flowyard.service.triggers import EventPosted, TriggerService, parse_trigger

router = APIRouter(tags=["event triggers"], route_class=StrictJSONRoute)

_CONFIG_FIELDS = ("filter", "input", "debounce", "throttle")
_EXAMPLE: dict[str, Any] = {
    "name": "notify-on-failure",
    "workflow": "notify-ops",
    "on": {"run": {"workflow": "lead-routing", "statuses": ["failed"]}},
    "filter": "run.input.region == 'East Coast'",
    "input": {"failed_run": "{{ run.id }}", "error": "{{ run.error.type }}"},
}


class TriggerFields(BaseModel):
    """The configuration fields of an event trigger; in a change, those given replace the
    stored ones."""

    model_config = ConfigDict(extra="forbid")

    filter: Annotated[str, Field(max_length=2000)] | None = Field(
        None, description="A condition over `run` or `event`; false: no start."
    )
    input: Any = Field(None, description=INPUT_HELP)
    debounce: Debounce | None = None
    throttle: Throttle | None = None


class TriggerCreate(TriggerFields):
    """A new event trigger: ``on`` a run's end or a named event, start ``workflow``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    name: Annotated[str, Field(min_length=1, max_length=63)]
    workflow: Annotated[str, Field(min_length=1, max_length=200)]
    on: On
    enabled: bool = True


class TriggerPatch(TriggerFields):
    """Enable, disable or reconfigure (source and target stay: make a new trigger)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"enabled": False}]})

    enabled: bool | None = None


_PUBLIC_EXAMPLE: dict[str, Any] = {
    "id": "et_3qLx0Zr9VbT2mN8sYc4KfW",
    "name": "notify-on-failure",
    "workflow_id": "wf_01jh5k2v3m4n5p6q7r8s9t0vwx",
    "workflow": "notify-ops",
    "on": {
        "run": {
            "workflow": "lead-routing",
            "workflow_id": "wf_01jh5k2v3m4n5p6q7r8s9t0abc",
            "statuses": ["failed"],
        }
    },
    "enabled": True,
    "config": {
        "debounce": None,
        "throttle": None,
        "filter": "run.input.region == 'East Coast'",
        "input": {"failed_run": "{{ run.id }}"},
    },
    "created_at": "2026-12-01T09:00:00Z",
    "updated_at": "2026-12-01T09:00:00Z",
    "created_by": "user:admin",
}


class TriggerPublic(BaseModel):
    """An event trigger."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PUBLIC_EXAMPLE]})

    id: str
    name: str
    workflow_id: str
    workflow: str
    on: dict[str, Any]
    enabled: bool
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    created_by: str | None

    @classmethod
    def of(cls, t: EventTriggerRecord) -> TriggerPublic:
        """From the store's record."""
        on: dict[str, Any] = (
            {"event": t.event}
            if t.event is not None
            else {
                "run": {
                    "workflow": t.source_workflow_name,
                    "workflow_id": t.source_workflow_id,
                    "statuses": [s.value for s in t.config.statuses],
                }
            }
        )
        config = t.config.model_dump(mode="json", exclude={"statuses"})
        return cls(
            id=t.id,
            name=t.name,
            workflow_id=t.workflow_id,
            workflow=t.workflow_name,
            on=on,
            enabled=t.enabled,
            config=config,
            created_at=t.created_at,
            updated_at=t.updated_at,
            created_by=t.created_by,
        )


class EventBody(BaseModel):
    """A named event: its payload (a JSON value) and an optional id that de-duplicates."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"payload": {"order": "A-1001", "total": 250}, "event_id": "evt-77"}]
        },
    )

    payload: Any = None
    event_id: Annotated[str, Field(min_length=1, max_length=EVENT_ID_MAX)] | None = Field(
        None, description="A repeat with the same id starts nothing new (or `Idempotency-Key`)."
    )


class TriggerResult(BaseModel):
    """One subscribed trigger's answer."""

    trigger: str
    workflow: str
    outcome: str = Field(description="started, filtered, debounced, throttled or failed.")
    run_id: str | None = None
    created: bool | None = Field(None, description="False: a repeated event id's run.")
    fire_at: datetime | None = None
    retry_after_s: float | None = None
    error: str | None = None


class EventAccepted(BaseModel):
    """What a posted event started, and which triggers let it pass."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "event": "order.placed",
                    "event_id": "evt-77",
                    "run_ids": ["run_01JH5K2V3M4N5P6Q7R8S9T0VWX"],
                    "triggers": [
                        {
                            "trigger": "ship-order",
                            "workflow": "shipping",
                            "outcome": "started",
                            "run_id": "run_01JH5K2V3M4N5P6Q7R8S9T0VWX",
                            "created": True,
                        },
                        {"trigger": "big-orders", "workflow": "vip", "outcome": "filtered"},
                    ],
                }
            ]
        }
    )

    event: str
    event_id: str | None
    run_ids: list[str] = Field(description="The runs started (or found, for a repeat).")
    triggers: list[TriggerResult]

    @classmethod
    def of(cls, posted: EventPosted) -> EventAccepted:
        """From the service's answer."""
        results = []
        for o in posted.outcomes:
            gated = o.gated
            run = gated.run if gated is not None else None
            results.append(
                TriggerResult(
                    trigger=o.trigger.name,
                    workflow=o.trigger.workflow_name,
                    outcome=o.outcome,
                    run_id=run.id if run is not None else None,
                    created=gated.created if run is not None and gated is not None else None,
                    fire_at=gated.fire_at if gated is not None else None,
                    retry_after_s=gated.retry_after_s if gated is not None else None,
                    error=o.error,
                )
            )
        return cls(
            event=posted.name,
            event_id=posted.event_id,
            run_ids=[r.run_id for r in results if r.run_id is not None],
            triggers=results,
        )


def _triggers(request: Request) -> TriggerService:
    container: Container = request.app.state.container
    return container.triggers


@router.post(
    "/event-triggers",
    status_code=status.HTTP_201_CREATED,
    response_model=TriggerPublic,
    summary="Create an event trigger",
    responses=documented(404, 409, 422),
)
async def create_trigger(
    request: Request, actor: ActorDep, audit: AuditDep, body: TriggerCreate
) -> TriggerPublic:
    """Start ``workflow``'s latest version when a run of another workflow ends, or when
    the named event is posted (editor)."""
    on, config = parse_trigger(
        {"on": body.on.model_dump(mode="json"), **fields_given(body, _CONFIG_FIELDS)}
    )
    trigger = await _triggers(request).create(
        name=body.name,
        workflow=body.workflow,
        on=on,
        config=config,
        enabled=body.enabled,
        actor=actor,
        audit=audit,
    )
    return TriggerPublic.of(trigger)


@router.get("/event-triggers", response_model=Page[TriggerPublic], summary="List event triggers")
async def list_triggers(
    request: Request,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    event: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64, description="`next_cursor`")] = None,
) -> Page[TriggerPublic]:
    """Event triggers by name: of one target workflow, or listening to one event (editor)."""
    rows = await _triggers(request).list(
        workflow=workflow, event=event, limit=limit + 1, after=cursor
    )
    items, next_cursor = paged(rows, limit, lambda t: t.name)
    return Page[TriggerPublic](items=[TriggerPublic.of(t) for t in items], next_cursor=next_cursor)


@router.get(
    "/event-triggers/{trigger_ref}",
    response_model=TriggerPublic,
    summary="Get an event trigger",
    responses=documented(404),
)
async def get_trigger(request: Request, trigger_ref: str) -> TriggerPublic:
    """An event trigger by id or name (editor)."""
    return TriggerPublic.of(await _triggers(request).get(trigger_ref))


@router.patch(
    "/event-triggers/{trigger_ref}",
    response_model=TriggerPublic,
    summary="Change an event trigger",
    responses=documented(404, 422),
)
async def update_trigger(
    request: Request, audit: AuditDep, trigger_ref: str, body: TriggerPatch
) -> TriggerPublic:
    """Enable, disable or reconfigure an event trigger (editor)."""
    svc = _triggers(request)
    config = None
    if any(name in body.model_fields_set for name in _CONFIG_FIELDS):
        current = (await svc.get(trigger_ref)).config.model_dump(mode="json")
        current.pop("statuses", None)
        _, config = parse_trigger(
            {"on": {"event": "x"}, **fields_given(body, _CONFIG_FIELDS, current)}
        )
    trigger = await svc.update(trigger_ref, enabled=body.enabled, config=config, audit=audit)
    return TriggerPublic.of(trigger)


@router.delete(
    "/event-triggers/{trigger_ref}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an event trigger",
    responses=documented(404),
)
async def delete_trigger(request: Request, audit: AuditDep, trigger_ref: str) -> Response:
    """Delete an event trigger and its pending debounced starts (editor)."""
    await _triggers(request).delete(trigger_ref, audit=audit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/events/{name}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventAccepted,
    summary="Post a named event",
    responses=documented(404, 422),
)
async def post_event(
    request: Request,
    audit: AuditDep,
    name: Annotated[str, Path(pattern=EVENT_NAME_PATTERN)],
    body: EventBody,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=EVENT_ID_MAX, alias="Idempotency-Key")
    ] = None,
) -> EventAccepted:
    """Start every workflow subscribed to ``name`` (editor): 202 with each trigger's
    outcome, the runs started, and which triggers filtered, debounced or throttled it. An
    event nobody listens to is accepted and starts nothing."""
    event_id = body.event_id or idempotency_key
    posted = await _triggers(request).post_event(name, body.payload, event_id=event_id, audit=audit)
    return EventAccepted.of(posted)
