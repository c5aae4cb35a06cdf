"""The audit log: ``/audit`` (admin)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from flowyard.api.auth_schemas import AuditPublic
from flowyard.api.deps import ContainerDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.schemas import MAX_ID, Page, paged

router = APIRouter(route_class=StrictJSONRoute)


# -- /audit --------------------------------------------------------------------------------


@router.get(
    "/audit", response_model=Page[AuditPublic], tags=["audit"], summary="Read the audit log"
)
async def list_audit(
    container: ContainerDep,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    target: Annotated[
        str | None, Query(max_length=240, description="Target id, or `type:id`")
    ] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 100,
    cursor: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="`next_cursor` (an entry id)")
    ] = None,
) -> Page[AuditPublic]:
    """The audit log, newest first, a page at a time (admin)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    rows = await container.admin.list_audit(
        actor=actor, action=action, target=target, since=since, before=cursor, limit=limit + 1
    )
    items, next_cursor = paged(rows, limit, lambda a: a.id)
    return Page[AuditPublic](items=[AuditPublic.of(a) for a in items], next_cursor=next_cursor)
