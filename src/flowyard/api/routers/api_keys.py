"""API keys: ``/api-keys`` (admin; a key's secret is shown once)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from flowyard.api.auth_schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from flowyard.api.deps import AuditDep, ContainerDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.schemas import Page, paged
from flowyard.api.security import PrincipalDep
from flowyard.domain.auth import ApiKeyRecord, Role
from flowyard.domain.errors import InvalidInput, Problem

router = APIRouter(route_class=StrictJSONRoute)


# -- /api-keys -----------------------------------------------------------------------------


@router.post(
    "/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    tags=["api-keys"],
    summary="Create an API key",
    responses=documented(422, d422="`expires_at` without a time zone, or not in the future."),
)
async def create_api_key(
    container: ContainerDep, principal: PrincipalDep, audit: AuditDep, body: ApiKeyCreate
) -> ApiKeyCreated:
    """Create an API key (admin). The key is in this response only: store it now. A key
    past its `expires_at` is refused (401)."""
    created = await container.auth.create_api_key(
        body.name, body.role, user_id=principal.user_id, expires_at=body.expires_at, audit=audit
    )
    return ApiKeyCreated(**ApiKeyPublic.of(created.record).model_dump(), key=created.key)


def _key_cursor(key: ApiKeyRecord) -> str:
    """Opaque and URL-safe: the (created_at, id) of the page's last key."""
    raw = f"{key.created_at.isoformat()}~{key.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_key_cursor(cursor: str) -> tuple[datetime, str]:
    parsed: datetime | None = None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, sep, key_id = raw.partition("~")
        parsed = datetime.fromisoformat(at)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        sep = key_id = ""
    if not sep or not key_id or parsed is None:
        raise InvalidInput(
            "invalid cursor: pass back the `next_cursor` of the previous page",
            [Problem("", f"cursor {cursor!r} was not issued by this list", "invalid_cursor")],
        )
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)), key_id


@router.get(
    "/api-keys", response_model=Page[ApiKeyPublic], tags=["api-keys"], summary="List API keys"
)
async def list_api_keys(
    container: ContainerDep,
    role: Annotated[Role | None, Query(description="Only keys with this role")] = None,
    revoked: Annotated[bool | None, Query(description="Only revoked (or live) keys")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 100,
    cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor`")] = None,
) -> Page[ApiKeyPublic]:
    """API keys' metadata, newest first, a page at a time (admin)."""
    before = _parse_key_cursor(cursor) if cursor is not None else None
    rows = await container.auth.list_api_keys(
        limit=limit + 1, before=before, role=role, revoked=revoked
    )
    keys, next_cursor = paged(rows, limit, _key_cursor)
    return Page[ApiKeyPublic](items=[ApiKeyPublic.of(k) for k in keys], next_cursor=next_cursor)


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["api-keys"],
    summary="Revoke an API key",
    responses=documented(404),
)
async def revoke_api_key(container: ContainerDep, audit: AuditDep, key_id: str) -> Response:
    """Revoke an API key (admin)."""
    await container.auth.revoke_api_key(key_id, audit=audit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
