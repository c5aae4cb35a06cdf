"""Security resources: ``/auth`` (tokens), ``/users``, ``/api-keys`` and ``/audit``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from flowyard.api.deps import ContainerDep
from flowyard.api.problems import documented
from flowyard.api.schemas import Page
from flowyard.api.security import PrincipalDep, unauthorized
from flowyard.domain.auth import ApiKeyRecord, AuditRecord, Role, UserRecord
from flowyard.security import AuthError, TokenPair
from flowyard.store.audit import pending_audit

router = APIRouter()

Username = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")]


class TokenResponse(BaseModel):
    """An OAuth2 bearer token pair."""

    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int

    @classmethod
    def of(cls, pair: TokenPair) -> TokenResponse:
        """From the service's pair."""
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            expires_in=pair.expires_in,
        )


class RefreshRequest(BaseModel):
    """A refresh token to rotate or revoke."""

    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=1, max_length=4096)


class UserCreate(BaseModel):
    """A new user."""

    model_config = ConfigDict(extra="forbid")
    username: Username
    password: str = Field(min_length=8, max_length=1024)
    role: Role = Role.VIEWER


class UserUpdate(BaseModel):
    """Changes to a user."""

    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(None, min_length=8, max_length=1024)


class UserPublic(BaseModel):
    """A user (never its password hash)."""

    id: str
    username: str
    role: Role
    disabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, u: UserRecord) -> UserPublic:
        """From a record."""
        return cls(
            id=u.id,
            username=u.username,
            role=u.role,
            disabled=u.disabled,
            created_at=u.created_at,
            updated_at=u.updated_at,
        )


class ApiKeyCreate(BaseModel):
    """A new API key."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Role = Role.VIEWER
    expires_at: datetime | None = None


class ApiKeyPublic(BaseModel):
    """An API key's metadata (never its secret or hash)."""

    id: str
    prefix: str
    name: str
    role: Role
    user_id: str | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, k: ApiKeyRecord) -> ApiKeyPublic:
        """From a record."""
        return cls(
            id=k.id,
            prefix=k.prefix,
            name=k.name,
            role=k.role,
            user_id=k.user_id,
            expires_at=k.expires_at,
            last_used_at=k.last_used_at,
            revoked_at=k.revoked_at,
            created_at=k.created_at,
        )


class ApiKeyCreated(ApiKeyPublic):
    """A created key: ``key`` is shown this once and cannot be read again."""

    key: str


class AuditPublic(BaseModel):
    """One audit entry."""

    id: int
    at: datetime
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    source_ip: str | None
    outcome: str
    detail: dict[str, Any] | None

    @classmethod
    def of(cls, a: AuditRecord) -> AuditPublic:
        """From a record."""
        return cls(
            id=a.id,
            at=a.at,
            actor=a.actor,
            action=a.action,
            target_type=a.target_type,
            target_id=a.target_id,
            source_ip=a.source_ip,
            outcome=a.outcome,
            detail=a.detail,
        )


def _note_actor(actor: str) -> None:
    entry = pending_audit()
    if entry is not None:
        entry.actor = actor


# -- /auth ---------------------------------------------------------------------------------


@router.post("/auth/token", response_model=TokenResponse, tags=["auth"])
async def token(
    container: ContainerDep,
    username: Annotated[str, Form(max_length=128)],
    password: Annotated[str, Form(max_length=1024)],
) -> TokenResponse:
    """OAuth2 password flow: a short-lived access token and a refresh token (401 otherwise)."""
    _note_actor(f"user:{username}")
    try:
        return TokenResponse.of(await container.auth.login(username, password))
    except AuthError as exc:
        raise unauthorized(str(exc)) from None


@router.post("/auth/refresh", response_model=TokenResponse, tags=["auth"])
async def refresh(container: ContainerDep, body: RefreshRequest) -> TokenResponse:
    """Rotate a refresh token: the old one is used up. Presenting a used one again revokes
    its whole family (every token descended from the same login): 401."""
    try:
        return TokenResponse.of(await container.auth.refresh(body.refresh_token))
    except AuthError as exc:
        raise unauthorized(str(exc)) from None


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"])
async def logout(container: ContainerDep, _: PrincipalDep, body: RefreshRequest) -> Response:
    """Revoke the refresh token's family."""
    try:
        await container.auth.logout(body.refresh_token)
    except AuthError as exc:
        raise unauthorized(str(exc)) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- /users --------------------------------------------------------------------------------


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPublic,
    tags=["users"],
    responses=documented(409, 422),
)
async def create_user(container: ContainerDep, body: UserCreate) -> UserPublic:
    """Create a user (admin)."""
    return UserPublic.of(await container.auth.create_user(body.username, body.password, body.role))


@router.get("/users", response_model=list[UserPublic], tags=["users"])
async def list_users(container: ContainerDep) -> list[UserPublic]:
    """Every user (admin)."""
    return [UserPublic.of(u) for u in await container.store.list_users()]


@router.patch(
    "/users/{user_id}", response_model=UserPublic, tags=["users"], responses=documented(404, 422)
)
async def update_user(container: ContainerDep, user_id: str, body: UserUpdate) -> UserPublic:
    """Change a user's role, disabled flag or password (admin). Disabling or a new password
    revokes the user's refresh tokens."""
    user = await container.auth.update_user(
        user_id, role=body.role, disabled=body.disabled, password=body.password
    )
    return UserPublic.of(user)


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["users"],
    responses=documented(404),
)
async def delete_user(container: ContainerDep, user_id: str) -> Response:
    """Delete a user (admin)."""
    await container.auth.delete_user(user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- /api-keys -----------------------------------------------------------------------------


@router.post(
    "/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    tags=["api-keys"],
    responses=documented(422),
)
async def create_api_key(
    container: ContainerDep, principal: PrincipalDep, body: ApiKeyCreate
) -> ApiKeyCreated:
    """Create an API key (admin). The key is in this response only: store it now."""
    created = await container.auth.create_api_key(
        body.name, body.role, user_id=principal.user_id, expires_at=body.expires_at
    )
    return ApiKeyCreated(**ApiKeyPublic.of(created.record).model_dump(), key=created.key)


@router.get("/api-keys", response_model=list[ApiKeyPublic], tags=["api-keys"])
async def list_api_keys(container: ContainerDep) -> list[ApiKeyPublic]:
    """API keys' metadata (admin)."""
    return [ApiKeyPublic.of(k) for k in await container.store.list_api_keys()]


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["api-keys"],
    responses=documented(404),
)
async def revoke_api_key(container: ContainerDep, key_id: str) -> Response:
    """Revoke an API key (admin)."""
    await container.store.revoke_api_key(key_id, container.clock())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- /audit --------------------------------------------------------------------------------


@router.get("/audit", response_model=Page[AuditPublic], tags=["audit"])
async def list_audit(
    container: ContainerDep,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    target: Annotated[
        str | None, Query(max_length=240, description="Target id, or `type:id`")
    ] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[int | None, Query(ge=1, description="Entry id cursor")] = None,
) -> Page[AuditPublic]:
    """The audit log, newest first (admin)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    items = await container.store.list_audit(
        actor=actor, action=action, target=target, since=since, before=cursor, limit=limit
    )
    next_cursor = str(items[-1].id) if len(items) == limit else None
    return Page[AuditPublic](items=[AuditPublic.of(a) for a in items], next_cursor=next_cursor)
