"""Security resources: ``/auth`` (tokens), ``/users``, ``/api-keys`` and ``/audit``."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    Form,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from flowyard.api.deps import ContainerDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.ratelimit import RateLimits, Verdict, get_rate_limits, too_many_requests
from flowyard.api.schemas import AT, LATER, MAX_ID, Page, paged
from flowyard.api.security import PrincipalDep, unauthorized
from flowyard.domain.auth import (
    USERNAME_MAX_LENGTH,
    USERNAME_PATTERN,
    USERNAME_RULE,
    ApiKeyRecord,
    AuditRecord,
    Role,
    UserRecord,
)
from flowyard.domain.errors import InvalidInput, Problem
from flowyard.security import AuthError, LoginThrottled, TokenPair
from flowyard.store.audit import pending_audit

router = APIRouter(route_class=StrictJSONRoute)

#: The domain's username rule (``check_username``), as a schema: the CLI applies the same.
Username = Annotated[
    str,
    Field(
        min_length=1,
        max_length=USERNAME_MAX_LENGTH,
        pattern=USERNAME_PATTERN,
        description=USERNAME_RULE[0].upper() + USERNAME_RULE[1:] + ".",
    ),
]
USER_ID = "usr_4f1c2a9d8e7b4c3a9f0e1d2c3b4a5968"
KEY_ID = "key_8a7b6c5d4e3f4a1b9c8d7e6f5a4b3c2d"
ACCESS_TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiJ9.c2ln"
REFRESH_TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXAiOiJyZWZyZXNoIn0.c2ln"


class TokenResponse(BaseModel):
    """An OAuth2 bearer token pair."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": ACCESS_TOKEN,
                    "refresh_token": REFRESH_TOKEN,
                    "token_type": "bearer",
                    "expires_in": 900,
                }
            ]
        }
    )

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


PASSWORD_RULE = (
    "At least 8 characters and a zxcvbn strength of at least `password_min_score` (3 of 4 by "
    "default), the username counting as a known word; a weak one is refused (422) with "
    "zxcvbn's feedback."
)


class PasswordChange(BaseModel):
    """The caller's current password and the new one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "current_password": "correct horse battery staple",
                    "new_password": "a quiet lighthouse keeps nine ledgers",
                }
            ]
        },
    )
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024, description=PASSWORD_RULE)


class RefreshRequest(BaseModel):
    """A refresh token to rotate or revoke."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"refresh_token": REFRESH_TOKEN}]},
    )
    refresh_token: str = Field(min_length=1, max_length=4096)


class UserCreate(BaseModel):
    """A new user."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"username": "ada", "password": "correct horse battery staple", "role": "editor"}
            ]
        },
    )
    username: Username
    password: str = Field(min_length=8, max_length=1024, description=PASSWORD_RULE)
    role: Role = Role.VIEWER


class UserUpdate(BaseModel):
    """Changes to a user. Demoting, disabling or deleting the last enabled admin is refused
    (409)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"role": "operator"},
                {"disabled": True},
                {"password": "a new long passphrase"},
            ]
        },
    )
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(None, min_length=8, max_length=1024, description=PASSWORD_RULE)


class UserPublic(BaseModel):
    """A user (never its password hash)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": USER_ID,
                    "username": "ada",
                    "role": "editor",
                    "disabled": False,
                    "created_at": AT,
                    "updated_at": LATER,
                }
            ]
        }
    )

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

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "ci-deploy", "role": "editor", "expires_at": "2026-01-15T00:00:00Z"}
            ]
        },
    )
    name: str = Field(min_length=1, max_length=200)
    role: Role = Role.VIEWER
    expires_at: AwareDatetime | None = Field(
        None, description="When the key stops working: in the future, with a time zone."
    )


API_KEY_EXAMPLE: dict[str, Any] = {
    "id": KEY_ID,
    "prefix": "3f9a0c1d2e4b",
    "name": "ci-deploy",
    "role": "editor",
    "user_id": USER_ID,
    "expires_at": "2026-01-15T00:00:00Z",
    "last_used_at": None,
    "revoked_at": None,
    "created_at": AT,
}


class ApiKeyPublic(BaseModel):
    """An API key's metadata (never its secret or hash)."""

    model_config = ConfigDict(json_schema_extra={"examples": [API_KEY_EXAMPLE]})

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

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **API_KEY_EXAMPLE,
                    "key": "fy_3f9a0c1d2e4b_Zr8n0cW3yQmV7tKx1pLs9dHf2uJ6aB4eGi5oN0qRw8E",
                }
            ]
        }
    )

    key: str


class AuditPublic(BaseModel):
    """One audit entry."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 981,
                    "at": AT,
                    "actor": "user:admin",
                    "action": "workflow.update",
                    "target_type": "workflow",
                    "target_id": "wf_01jh5k2v3m4n5p6q7r8s9t0vwx",
                    "source_ip": "10.0.4.17",
                    "outcome": "success",
                    "detail": None,
                }
            ]
        }
    )

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


TOKEN_FORM_EXAMPLE = {
    "requestBody": {
        "content": {
            "application/x-www-form-urlencoded": {
                "example": {"username": "admin", "password": "correct horse battery staple"}
            }
        }
    }
}


def _throttled(exc: LoginThrottled) -> Response:
    # Retry-After only: the RateLimit-* headers describe the API's request limits.
    verdict = Verdict(False, 0, 0, float(exc.retry_after))
    return too_many_requests(verdict, str(exc), limit_headers=False)


def _note_failure(exc: AuthError) -> None:
    """Why a login failed, for the audit log only (the answer is the same every time)."""
    entry = pending_audit()
    if entry is not None and exc.reason is not None:
        entry.detail = {**(entry.detail or {}), "reason": exc.reason}


@router.post(
    "/auth/token",
    response_model=TokenResponse,
    tags=["auth"],
    summary="Log in (OAuth2 password flow)",
    responses=documented(
        401,
        429,
        d401="Wrong username or password, or a disabled user (one answer for all three).",
    ),
    openapi_extra=TOKEN_FORM_EXAMPLE,
)
async def token(
    container: ContainerDep,
    request: Request,
    limits: Annotated[RateLimits, Depends(get_rate_limits)],
    username: Annotated[str, Form(max_length=128)],
    password: Annotated[str, Form(max_length=1024)],
) -> TokenResponse | Response:
    """OAuth2 password flow: a short-lived access token and a refresh token (401 otherwise).

    Failed logins are throttled with a capped backoff, per (username, client address) after
    ``login_free_failures`` and per client address after ``login_free_failures_per_ip``: an
    attempt that comes too soon gets 429 with ``Retry-After`` (never more than
    ``login_backoff_max_s``) before the password is checked. A successful login forgets the
    (username, address) failures. An unknown user, a wrong password and a disabled user get
    the same 401."""
    _note_actor(f"user:{username}")
    client = limits.client_ip(request.scope)
    try:
        pair = await container.auth.login(username, password, client=client)
    except LoginThrottled as exc:
        return _throttled(exc)
    except AuthError as exc:
        _note_failure(exc)
        raise unauthorized(str(exc)) from None
    return TokenResponse.of(pair)


@router.post(
    "/auth/refresh",
    response_model=TokenResponse,
    tags=["auth"],
    summary="Rotate a refresh token",
    responses=documented(401, d401="The refresh token is invalid, expired, revoked or reused."),
)
async def refresh(container: ContainerDep, body: RefreshRequest) -> TokenResponse:
    """Rotate a refresh token: the old one is used up. Presenting a used one again revokes
    its whole family (every token descended from the same login): 401."""
    try:
        return TokenResponse.of(await container.auth.refresh(body.refresh_token))
    except AuthError as exc:
        raise unauthorized(str(exc)) from None


@router.post(
    "/auth/logout", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"], summary="Log out"
)
async def logout(container: ContainerDep, _: PrincipalDep, body: RefreshRequest) -> Response:
    """End the session of the refresh token: its family of refresh tokens, and every access
    token issued with them, stop working (401) at once."""
    try:
        await container.auth.logout(body.refresh_token)
    except AuthError as exc:
        raise unauthorized(str(exc)) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/auth/password",
    response_model=TokenResponse,
    tags=["auth"],
    summary="Change your own password",
    responses=documented(
        422,
        429,
        d422="The new password is too weak (zxcvbn's feedback), or the current one is wrong "
        "(`/current_password`).",
    ),
)
async def change_password(
    container: ContainerDep,
    request: Request,
    principal: PrincipalDep,
    limits: Annotated[RateLimits, Depends(get_rate_limits)],
    body: PasswordChange,
) -> TokenResponse | Response:
    """Any logged-in user changes its own password with the current one. Wrong current
    passwords are throttled like logins (429, shared with them). Every session of the user
    ends (its refresh and access tokens, this request's included); the answer is a new
    token pair. API keys have no password (403)."""
    if principal.kind != "user" or principal.user_id is None:
        raise HTTPException(403, "only a user logged in with a password can change it")
    entry = pending_audit()
    if entry is not None:
        entry.target_id = principal.user_id
    client = limits.client_ip(request.scope)
    try:
        pair = await container.auth.change_password(
            principal.user_id, body.current_password, body.new_password, client=client
        )
    except LoginThrottled as exc:
        return _throttled(exc)
    except AuthError as exc:
        raise unauthorized(str(exc)) from None
    return TokenResponse.of(pair)


# -- /users --------------------------------------------------------------------------------


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPublic,
    tags=["users"],
    summary="Create a user",
    responses=documented(409, 422, d409="The username is taken."),
)
async def create_user(container: ContainerDep, body: UserCreate) -> UserPublic:
    """Create a user (admin)."""
    return UserPublic.of(await container.auth.create_user(body.username, body.password, body.role))


@router.get("/users", response_model=Page[UserPublic], tags=["users"], summary="List users")
async def list_users(
    container: ContainerDep,
    role: Annotated[Role | None, Query(description="Only users with this role")] = None,
    disabled: Annotated[bool | None, Query(description="Only disabled (or enabled) users")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=128, description="`next_cursor` (a username)")
    ] = None,
) -> Page[UserPublic]:
    """Users by name, a page at a time (admin)."""
    rows = await container.store.list_users(
        limit=limit + 1, after=cursor, role=role, disabled=disabled
    )
    users, next_cursor = paged(rows, limit, lambda u: u.username)
    return Page[UserPublic](items=[UserPublic.of(u) for u in users], next_cursor=next_cursor)


UserId = Annotated[
    str,
    Path(
        max_length=64,
        description="The user's id (`usr_...`, see `GET /users`); never its username.",
        examples=[USER_ID],
    ),
]
LAST_ADMIN = "It is the last enabled admin (`reason: last_admin`): make another user admin first."


@router.patch(
    "/users/{user_id}",
    response_model=UserPublic,
    tags=["users"],
    summary="Change a user",
    responses=documented(404, 409, 422, d409="Demoting or disabling: " + LAST_ADMIN),
)
async def update_user(container: ContainerDep, user_id: UserId, body: UserUpdate) -> UserPublic:
    """Change a user's role, disabled flag or password (admin). Disabling or a new password
    ends the user's sessions (refresh and access tokens). The last enabled admin cannot be
    demoted or disabled (409, `reason: last_admin`)."""
    user = await container.auth.update_user(
        user_id, role=body.role, disabled=body.disabled, password=body.password
    )
    return UserPublic.of(user)


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["users"],
    summary="Delete a user",
    responses=documented(404, 409, d409=LAST_ADMIN),
)
async def delete_user(container: ContainerDep, user_id: UserId) -> Response:
    """Delete a user (admin); its API keys stay. The last enabled admin cannot be deleted
    (409, `reason: last_admin`)."""
    await container.auth.delete_user(user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


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
    container: ContainerDep, principal: PrincipalDep, body: ApiKeyCreate
) -> ApiKeyCreated:
    """Create an API key (admin). The key is in this response only: store it now. A key
    past its `expires_at` is refused (401)."""
    created = await container.auth.create_api_key(
        body.name, body.role, user_id=principal.user_id, expires_at=body.expires_at
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
    rows = await container.store.list_api_keys(
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
async def revoke_api_key(container: ContainerDep, key_id: str) -> Response:
    """Revoke an API key (admin)."""
    await container.store.revoke_api_key(key_id, container.clock())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


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
    rows = await container.store.list_audit(
        actor=actor, action=action, target=target, since=since, before=cursor, limit=limit + 1
    )
    items, next_cursor = paged(rows, limit, lambda a: a.id)
    return Page[AuditPublic](items=[AuditPublic.of(a) for a in items], next_cursor=next_cursor)
