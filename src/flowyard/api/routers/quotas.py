"""/quotas and /credentials/{name}/quota: provider quotas shared by every worker (admin
writes, editor reads). A credential's quota is the quota keyed ``credential:<name>``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from flowyard.api.deps import AuditDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.domain.errors import NotFound
from flowyard.domain.quotas import MAX_CONCURRENCY, MAX_TOKENS, QuotaState
from flowyard.service.quotas import QuotaService

router = APIRouter(tags=["quotas"], route_class=StrictJSONRoute)

KEY_HELP = (
    "credential:<name> (steps sending that credential), node_type:<type>, or a campaign's "
    "limits: campaign:<id> and campaign:<id>:<digest of a concurrency key>."
)


class QuotaPut(BaseModel):
    """A quota's rate and burst and/or its concurrency limit (at least one of them)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"rate": "100 per 20s"},
                {"rate": "5/s", "burst": 2},
                {"concurrency": 10},
                {"rate": "100 per 20s", "concurrency": 25},
            ]
        },
    )
    rate: Annotated[str, Field(max_length=64)] | None = Field(
        None,
        description="At most this many steps start in any window of this length: "
        "'100 per 20s', '5/s', '300 per minute'. Omit for a concurrency limit alone.",
    )
    burst: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = Field(
        None,
        description="How many may start at once (default 1: evenly spaced). At most the "
        "rate's count; a larger burst lowers the steady rate so no window exceeds the rate.",
    )
    concurrency: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)] | None = Field(
        None,
        description="At most this many steps in flight at once, across every worker "
        "(a slot is held from the step's start until its result is recorded, or its lease "
        "lapses).",
    )
    enabled: bool = Field(True, description="False: kept, but not applied.")


_EXAMPLE: dict[str, Any] = {
    "key": "credential:salesforce",
    "rate": "100 per 20s",
    "tokens": 100,
    "per_s": 20.0,
    "burst": 1,
    "enabled": True,
    "refill_per_s": 5.0,
    "available": 0.4,
    "paused_until": None,
    "queue_until": "2026-12-01T09:00:12.200000Z",
    "concurrency": 25,
    "in_flight": 25,
    "hold_s": 1.8,
    "slot_queue_until": "2026-12-01T09:00:00.610000Z",
    "updated_at": "2026-12-01T09:00:00.250000Z",
    "created_at": "2026-12-01T08:00:00Z",
}


class QuotaPublic(BaseModel):
    """A quota and its shared bucket now."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    key: str = Field(description=KEY_HELP)
    rate: str | None = Field(description="Null: no rate (a concurrency limit alone).")
    tokens: int | None
    per_s: float | None
    burst: int
    enabled: bool
    refill_per_s: float = Field(description="Tokens added per second (0 without a rate).")
    available: float = Field(description="Tokens available now (0 while paused).")
    paused_until: datetime | None = Field(
        description="A provider's rate-limit answer paused the bucket until then."
    )
    queue_until: datetime | None = Field(
        description="When the steps deferred so far will all have had their slot (the "
        "backlog's end); null when none wait."
    )
    concurrency: int | None = Field(description="At most this many in flight; null: no limit.")
    in_flight: int = Field(description="Steps holding a slot now.")
    hold_s: float = Field(
        description="How long a step holds its slot (moving average): spaces the retries of "
        "steps that found none."
    )
    slot_queue_until: datetime | None = Field(
        description="When the steps that found no slot will all have come back; null when "
        "none wait."
    )
    updated_at: datetime
    created_at: datetime

    @classmethod
    def of(cls, state: QuotaState, now: datetime) -> QuotaPublic:
        """From the store's state."""
        q, b, slots = state.quota, state.bucket, state.slots
        paused = b.paused_until if b.paused_until is not None and b.paused_until > now else None
        return cls(
            key=q.key,
            rate=q.rate,
            tokens=q.tokens,
            per_s=q.per_s,
            burst=q.burst,
            enabled=q.enabled,
            refill_per_s=q.refill_per_s,
            available=round(state.available_at(now), 3),
            paused_until=paused,
            queue_until=b.queue_until
            if b.queue_until is not None and b.queue_until > now
            else None,
            concurrency=q.concurrency,
            in_flight=slots.in_flight,
            hold_s=round(slots.hold_s, 3),
            slot_queue_until=slots.queue_until
            if slots.queue_until is not None and slots.queue_until > now
            else None,
            updated_at=b.updated_at,
            created_at=state.created_at,
        )


class QuotaList(BaseModel):
    """Every quota (an installation has a handful: one page)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [_EXAMPLE]}]})

    items: list[QuotaPublic]


def _settings(body: QuotaPut) -> dict[str, Any]:
    return {"burst": body.burst, "concurrency": body.concurrency, "enabled": body.enabled}


def _quotas(request: Request) -> QuotaService:
    service: QuotaService = request.app.state.container.quotas
    return service


@router.get("/quotas", response_model=QuotaList)
async def list_quotas(request: Request) -> QuotaList:
    """Every quota with its bucket now (editor)."""
    svc = _quotas(request)
    now = svc.clock()
    return QuotaList(items=[QuotaPublic.of(s, now) for s in await svc.list()])


@router.get("/quotas/{key}", response_model=QuotaPublic, responses=documented(404, 422))
async def get_quota(request: Request, key: str) -> QuotaPublic:
    """A quota with its bucket now: tokens available, a provider's pause (editor)."""
    svc = _quotas(request)
    return QuotaPublic.of(await svc.get(key), svc.clock())


@router.put("/quotas/{key}", response_model=QuotaPublic, responses=documented(422))
async def put_quota(request: Request, audit: AuditDep, key: str, body: QuotaPut) -> QuotaPublic:
    """Create or change the quota of ``key`` (admin). Workers apply it within 2 s."""
    svc = _quotas(request)
    state = await svc.put(key, body.rate, **_settings(body), audit=audit)
    return QuotaPublic.of(state, svc.clock())


@router.delete(
    "/quotas/{key}", status_code=status.HTTP_204_NO_CONTENT, responses=documented(404, 422)
)
async def delete_quota(request: Request, audit: AuditDep, key: str) -> Response:
    """Delete a quota (admin): its steps are no longer paced."""
    await _quotas(request).delete(key, audit=audit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- on the credential ----------------------------------------------------------------------


@router.get(
    "/credentials/{name}/quota",
    response_model=QuotaPublic,
    responses=documented(404, d404="No such credential, or it has no quota."),
)
async def get_credential_quota(request: Request, name: str) -> QuotaPublic:
    """The quota of a credential (the one keyed ``credential:<name>``) with its bucket and
    slots now (editor)."""
    svc = _quotas(request)
    state = await svc.find_for_credential(name)
    if state is None:
        raise NotFound(f"credential {name!r} has no quota")
    return QuotaPublic.of(state, svc.clock())


@router.put("/credentials/{name}/quota", response_model=QuotaPublic, responses=documented(404, 422))
async def put_credential_quota(
    request: Request, audit: AuditDep, name: str, body: QuotaPut
) -> QuotaPublic:
    """Create or change the quota of a credential (admin): the same quota as
    ``PUT /quotas/credential:<name>``. Workers apply it within 2 s."""
    svc = _quotas(request)
    state = await svc.put_for_credential(name, body.rate, **_settings(body), audit=audit)
    return QuotaPublic.of(state, svc.clock())


@router.delete(
    "/credentials/{name}/quota",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=documented(404, d404="No such credential, or it has no quota."),
)
async def delete_credential_quota(request: Request, audit: AuditDep, name: str) -> Response:
    """Delete the quota of a credential (admin): its steps are no longer paced."""
    await _quotas(request).delete_for_credential(name, audit=audit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
