"""/quotas: provider quotas shared by every worker (admin writes, editor reads)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from flowyard.api.deps import AuditDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.domain.quotas import MAX_TOKENS, QuotaState
from flowyard.service.quotas import QuotaService

router = APIRouter(tags=["quotas"], route_class=StrictJSONRoute)

KEY_HELP = "credential:<name> (steps sending that credential) or node_type:<type>."


class QuotaPut(BaseModel):
    """A quota's rate and burst."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"rate": "100 per 20s"}, {"rate": "5/s", "burst": 2}]},
    )
    rate: Annotated[str, Field(max_length=64)] = Field(
        description="At most this many steps start in any window of this length: "
        "'100 per 20s', '5/s', '300 per minute'."
    )
    burst: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = Field(
        None,
        description="How many may start at once (default 1: evenly spaced). At most the "
        "rate's count; a larger burst lowers the steady rate so no window exceeds the rate.",
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
    "updated_at": "2026-12-01T09:00:00.250000Z",
    "created_at": "2026-12-01T08:00:00Z",
}


class QuotaPublic(BaseModel):
    """A quota and its shared bucket now."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    key: str = Field(description=KEY_HELP)
    rate: str
    tokens: int
    per_s: float
    burst: int
    enabled: bool
    refill_per_s: float = Field(description="Tokens added per second.")
    available: float = Field(description="Tokens available now (0 while paused).")
    paused_until: datetime | None = Field(
        description="A provider's rate-limit answer paused the bucket until then."
    )
    queue_until: datetime | None = Field(
        description="When the steps deferred so far will all have had their slot (the "
        "backlog's end); null when none wait."
    )
    updated_at: datetime
    created_at: datetime

    @classmethod
    def of(cls, state: QuotaState, now: datetime) -> QuotaPublic:
        """From the store's state."""
        q, b = state.quota, state.bucket
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
            updated_at=b.updated_at,
            created_at=state.created_at,
        )


class QuotaList(BaseModel):
    """Every quota (an installation has a handful: one page)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [_EXAMPLE]}]})

    items: list[QuotaPublic]


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
    state = await svc.put(key, body.rate, burst=body.burst, enabled=body.enabled, audit=audit)
    return QuotaPublic.of(state, svc.clock())


@router.delete(
    "/quotas/{key}", status_code=status.HTTP_204_NO_CONTENT, responses=documented(404, 422)
)
async def delete_quota(request: Request, audit: AuditDep, key: str) -> Response:
    """Delete a quota (admin): its steps are no longer paced."""
    await _quotas(request).delete(key, audit=audit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
