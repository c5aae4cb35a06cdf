"""/schedules: workflows started by a timetable (cron in a time zone, or a fixed interval).
Editors create, change and delete them; operators pause, resume and trigger them; viewers
read them with their next fire times. Workers fire the ticks, each exactly once."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from flowyard.api.deps import ActorDep, AuditDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.schemas import Page, paged
from flowyard.domain.schedules import (
    DEFAULT_MAX_CATCH_UP,
    DEFAULT_MISFIRE_GRACE_S,
    MAX_CATCH_UP,
    MAX_JITTER_S,
    MAX_MISFIRE_GRACE_S,
    CatchUp,
    Overlap,
    ScheduleFire,
)
from flowyard.service.schedules import ScheduleChange, ScheduleService, ScheduleView
from flowyard.triggers.schedules.ticks import MAX_CRON_CHARS, format_every

router = APIRouter(tags=["schedules"], route_class=StrictJSONRoute)

_CRON = (
    "5 fields (minute hour day month weekday), 6 with seconds first, or @hourly/@daily/..., "
    "on the wall clock of `timezone`. Give `cron` or `every`."
)
_EVERY = "A fixed interval ('30s', '5m', '1h', or seconds), from `start_at` (default: now)."

_CREATE_EXAMPLE: dict[str, Any] = {
    "name": "nightly-report",
    "workflow": "report",
    "cron": "0 2 * * *",
    "timezone": "Europe/Berlin",
    "input": {"region": "EU"},
    "catch_up": "one",
    "overlap": "skip",
    "jitter_s": 30,
}


class _Fields(BaseModel):
    """What a create sets and a change may replace."""

    model_config = ConfigDict(extra="forbid")

    cron: Annotated[str, Field(min_length=1, max_length=MAX_CRON_CHARS)] | None = Field(
        None, description=_CRON
    )
    every: Annotated[str, Field(max_length=32)] | int | None = Field(None, description=_EVERY)
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        "UTC", description="IANA time zone of the cron expression (Europe/Berlin)."
    )
    start_at: AwareDatetime | None = Field(
        None, description="The first tick of an interval (with its offset); default: now."
    )
    input: Any = Field(default_factory=dict, description="Each run's input.")
    catch_up: CatchUp = Field(
        CatchUp.SKIP,
        description="Ticks missed (no worker ran, or later than misfire_grace_s): skip them, "
        "one run for them all, or all of them (the latest max_catch_up).",
    )
    max_catch_up: Annotated[int, Field(ge=1, le=MAX_CATCH_UP)] = DEFAULT_MAX_CATCH_UP
    jitter_s: Annotated[float, Field(ge=0, le=MAX_JITTER_S)] = Field(
        0.0, description="Each tick fires after a delay in [0, jitter_s] (the same everywhere)."
    )
    overlap: Overlap = Field(
        Overlap.ALLOW,
        description="While the previous run is unfinished: allow, skip the tick, or "
        "cancel_previous.",
    )
    misfire_grace_s: Annotated[float, Field(ge=0, le=MAX_MISFIRE_GRACE_S)] = Field(
        DEFAULT_MISFIRE_GRACE_S, description="A tick later than this counts as missed."
    )
    enabled: bool = True


class ScheduleCreate(_Fields):
    """A new schedule."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_CREATE_EXAMPLE]})

    name: Annotated[str, Field(min_length=1, max_length=64)]
    workflow: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="Workflow id or name: its latest version runs at each tick."
    )


class ScheduleUpdate(BaseModel):
    """Fields to change; those left out keep their value. A new timetable (cron, every,
    timezone, start_at) starts from the next tick after now."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"jitter_s": 60}]})

    name: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    workflow: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    cron: Annotated[str, Field(min_length=1, max_length=MAX_CRON_CHARS)] | None = None
    every: Annotated[str, Field(max_length=32)] | int | None = None
    timezone: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    start_at: AwareDatetime | None = None
    input: Any = None
    catch_up: CatchUp | None = None
    max_catch_up: Annotated[int, Field(ge=1, le=MAX_CATCH_UP)] | None = None
    jitter_s: Annotated[float, Field(ge=0, le=MAX_JITTER_S)] | None = None
    overlap: Overlap | None = None
    misfire_grace_s: Annotated[float, Field(ge=0, le=MAX_MISFIRE_GRACE_S)] | None = None
    enabled: bool | None = None


_EXAMPLE: dict[str, Any] = {
    "id": "sch_01jd4r0x7q0000000000000000",
    "name": "nightly-report",
    "workflow": "report",
    "workflow_id": "wf_01jd4qzz0000000000000000000",
    "cron": "0 2 * * *",
    "every": None,
    "timezone": "Europe/Berlin",
    "start_at": "2026-12-01T09:00:00Z",
    "input": {"region": "EU"},
    "catch_up": "one",
    "max_catch_up": 10,
    "jitter_s": 30.0,
    "overlap": "skip",
    "misfire_grace_s": 60.0,
    "enabled": True,
    "next_fire_times": ["2026-12-02T01:00:00Z", "2026-12-03T01:00:00Z"],
    "next_due_at": "2026-12-02T01:00:17.204000Z",
    "last_tick_at": None,
    "last_run_id": None,
    "fired": 0,
    "skipped": 0,
    "missed": 0,
    "created_at": "2026-12-01T09:00:00Z",
    "updated_at": "2026-12-01T09:00:00Z",
    "created_by": "alice",
}


class SchedulePublic(BaseModel):
    """A schedule, its next fire times and what it fired so far."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: str
    name: str
    workflow: str = Field(description="The workflow's name.")
    workflow_id: str
    cron: str | None
    every: str | None
    timezone: str
    start_at: datetime = Field(description="The anchor of an interval (unused by cron).")
    input: Any
    catch_up: CatchUp
    max_catch_up: int
    jitter_s: float
    overlap: Overlap
    misfire_grace_s: float
    enabled: bool
    next_fire_times: list[datetime] = Field(
        description="The next 5 ticks (before jitter); empty while paused."
    )
    next_due_at: datetime | None = Field(description="When the next tick fires (with jitter).")
    last_tick_at: datetime | None
    last_run_id: str | None
    fired: int = Field(description="Ticks that started a run.")
    skipped: int = Field(description="Ticks recorded without a run (overlap; not startable).")
    missed: int = Field(description="Ticks passed over by the catch-up policy.")
    created_at: datetime
    updated_at: datetime
    created_by: str | None

    @classmethod
    def of(cls, view: ScheduleView) -> SchedulePublic:
        """From the service's view."""
        r, s = view.record, view.record.spec
        return cls(
            id=r.id,
            name=s.name,
            workflow=view.workflow_name,
            workflow_id=s.workflow_id,
            cron=s.cron,
            every=format_every(s.every_s) if s.every_s is not None else None,
            timezone=s.timezone,
            start_at=s.anchor_at,
            input=s.input,
            catch_up=s.catch_up,
            max_catch_up=s.max_catch_up,
            jitter_s=s.jitter_s,
            overlap=s.overlap,
            misfire_grace_s=s.misfire_grace_s,
            enabled=s.enabled,
            next_fire_times=view.upcoming,
            next_due_at=r.next_fire_at if s.enabled else None,
            last_tick_at=r.last_tick_at,
            last_run_id=r.last_run_id,
            fired=r.fired,
            skipped=r.skipped,
            missed=r.missed,
            created_at=r.created_at,
            updated_at=r.updated_at,
            created_by=r.created_by,
        )


class FirePublic(BaseModel):
    """A recorded tick."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tick_at": "2026-12-02T01:00:00Z",
                    "outcome": "fired",
                    "run_id": "run_01jd4r0x7q0000000000000000",
                    "reason": None,
                    "manual": False,
                    "fired_at": "2026-12-02T01:00:17.210000Z",
                }
            ]
        }
    )

    tick_at: datetime
    outcome: str = Field(description="fired (a run started) or skipped (see reason).")
    run_id: str | None
    reason: str | None
    manual: bool = Field(description="Fired by POST .../trigger, outside the timetable.")
    fired_at: datetime

    @classmethod
    def of(cls, fire: ScheduleFire) -> FirePublic:
        """From the store's record."""
        return cls(
            tick_at=fire.tick_at,
            outcome=fire.outcome.value,
            run_id=fire.run_id,
            reason=fire.reason,
            manual=fire.manual,
            fired_at=fire.fired_at,
        )


def _schedules(request: Request) -> ScheduleService:
    service: ScheduleService = request.app.state.container.schedules
    return service


@router.post(
    "/schedules",
    status_code=status.HTTP_201_CREATED,
    response_model=SchedulePublic,
    responses=documented(
        404,
        409,
        422,
        d404="No such workflow.",
        d409="The name is taken, or the workflow is archived.",
        d422="A field is invalid, or the input does not fit the workflow.",
    ),
)
async def create_schedule(
    request: Request, actor: ActorDep, audit: AuditDep, body: ScheduleCreate, response: Response
) -> SchedulePublic:
    """Create a schedule (editor); workers fire it from its next tick on."""
    change = ScheduleChange.of(body.model_dump(exclude_unset=True))
    change.name, change.workflow = body.name, body.workflow
    view = await _schedules(request).create(change, actor=actor, audit=audit)
    response.headers["Location"] = f"/api/v1/schedules/{view.record.id}"
    return SchedulePublic.of(view)


@router.get("/schedules", response_model=Page[SchedulePublic], responses=documented(404))
async def list_schedules(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size")] = 50,
    cursor: Annotated[str | None, Query(max_length=64, description="`next_cursor`")] = None,
    workflow: Annotated[
        str | None, Query(max_length=200, description="Only this workflow's (id or name)")
    ] = None,
) -> Page[SchedulePublic]:
    """Schedules by name, each with its next 5 fire times (viewer)."""
    rows = await _schedules(request).list_schedules(
        limit=limit + 1, after=cursor, workflow=workflow
    )
    page, next_cursor = paged(rows, limit, lambda v: v.record.spec.name)
    return Page[SchedulePublic](items=[SchedulePublic.of(v) for v in page], next_cursor=next_cursor)


@router.get("/schedules/{schedule_ref}", response_model=SchedulePublic, responses=documented(404))
async def get_schedule(request: Request, schedule_ref: str) -> SchedulePublic:
    """A schedule by id or name, with its next 5 fire times (viewer)."""
    return SchedulePublic.of(await _schedules(request).get(schedule_ref))


@router.patch(
    "/schedules/{schedule_ref}",
    response_model=SchedulePublic,
    responses=documented(404, 409, 422),
)
async def update_schedule(
    request: Request, audit: AuditDep, schedule_ref: str, body: ScheduleUpdate
) -> SchedulePublic:
    """Change a schedule (editor): only the fields sent (null keeps a field, but for
    `input`)."""
    sent = body.model_dump(exclude_unset=True)
    change = ScheduleChange.of({k: v for k, v in sent.items() if v is not None or k == "input"})
    return SchedulePublic.of(await _schedules(request).update(schedule_ref, change, audit=audit))


@router.delete(
    "/schedules/{schedule_ref}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=documented(404),
)
async def delete_schedule(request: Request, audit: AuditDep, schedule_ref: str) -> Response:
    """Delete a schedule and its fired ticks (editor); the runs it started stay."""
    await _schedules(request).delete(schedule_ref, audit=audit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/schedules/{schedule_ref}/pause", response_model=SchedulePublic, responses=documented(404)
)
async def pause_schedule(request: Request, audit: AuditDep, schedule_ref: str) -> SchedulePublic:
    """Stop firing (operator); ticks while paused are never fired."""
    return SchedulePublic.of(await _schedules(request).pause(schedule_ref, audit=audit))


@router.post(
    "/schedules/{schedule_ref}/resume", response_model=SchedulePublic, responses=documented(404)
)
async def resume_schedule(request: Request, audit: AuditDep, schedule_ref: str) -> SchedulePublic:
    """Fire again from the next tick after now (operator)."""
    return SchedulePublic.of(await _schedules(request).resume(schedule_ref, audit=audit))


@router.post(
    "/schedules/{schedule_ref}/trigger",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=FirePublic,
    responses=documented(404, 409),
)
async def trigger_schedule(request: Request, audit: AuditDep, schedule_ref: str) -> FirePublic:
    """Fire once now, outside the timetable, paused or not (operator). The overlap policy
    applies: the answer's outcome is `skipped` (with the reason) when it kept the run from
    starting."""
    return FirePublic.of(await _schedules(request).trigger(schedule_ref, audit=audit))


@router.get(
    "/schedules/{schedule_ref}/fires",
    response_model=Page[FirePublic],
    responses=documented(404),
)
async def list_fires(
    request: Request,
    schedule_ref: str,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 50,
    cursor: Annotated[AwareDatetime | None, Query(description="`next_cursor`")] = None,
) -> Page[FirePublic]:
    """The schedule's recorded ticks, newest first (viewer); kept for
    FLOWYARD_SCHEDULE_FIRES_KEEP_S."""
    rows = await _schedules(request).fires(schedule_ref, limit=limit + 1, before=cursor)
    page, next_cursor = paged(rows, limit, lambda f: f.tick_at.isoformat())
    return Page[FirePublic](items=[FirePublic.of(f) for f in page], next_cursor=next_cursor)
