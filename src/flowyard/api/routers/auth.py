"""Tokens: ``/auth`` (log in, refresh, log out, change one's own password)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response, status

from flowyard.api.auth_schemas import PasswordChange, RefreshRequest, TokenResponse
from flowyard.api.deps import AuditDep, ContainerDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.ratelimit import RateLimits, Verdict, get_rate_limits, too_many_requests
from flowyard.api.security import PrincipalDep, unauthorized
from flowyard.domain.auth import AuditEntry
from flowyard.security import AuthError, LoginThrottled

router = APIRouter(route_class=StrictJSONRoute)


def _note_actor(entry: AuditEntry | None, actor: str) -> None:
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


def _note_failure(entry: AuditEntry | None, exc: AuthError) -> None:
    """Why a login failed, for the audit log only (the answer is the same every time)."""
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
    audit: AuditDep,
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
    _note_actor(audit, f"user:{username}")
    client = limits.client_ip(request.scope)
    try:
        pair = await container.auth.login(username, password, client=client, audit=audit)
    except LoginThrottled as exc:
        return _throttled(exc)
    except AuthError as exc:
        _note_failure(audit, exc)
        raise unauthorized(str(exc)) from None
    return TokenResponse.of(pair)


@router.post(
    "/auth/refresh",
    response_model=TokenResponse,
    tags=["auth"],
    summary="Rotate a refresh token",
    responses=documented(401, d401="The refresh token is invalid, expired, revoked or reused."),
)
async def refresh(container: ContainerDep, audit: AuditDep, body: RefreshRequest) -> TokenResponse:
    """Rotate a refresh token: the old one is used up. Presenting a used one again revokes
    its whole family (every token descended from the same login): 401."""
    try:
        return TokenResponse.of(await container.auth.refresh(body.refresh_token, audit=audit))
    except AuthError as exc:
        raise unauthorized(str(exc)) from None


@router.post(
    "/auth/logout", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"], summary="Log out"
)
async def logout(
    container: ContainerDep, _: PrincipalDep, audit: AuditDep, body: RefreshRequest
) -> Response:
    """End the session of the refresh token: its family of refresh tokens, and every access
    token issued with them, stop working (401) at once."""
    try:
        await container.auth.logout(body.refresh_token, audit=audit)
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
    audit: AuditDep,
    limits: Annotated[RateLimits, Depends(get_rate_limits)],
    body: PasswordChange,
) -> TokenResponse | Response:
    """Any logged-in user changes its own password with the current one. Wrong current
    passwords are throttled like logins (429, shared with them). Every session of the user
    ends (its refresh and access tokens, this request's included); the answer is a new
    token pair. API keys have no password (403)."""
    if principal.kind != "user" or principal.user_id is None:
        raise HTTPException(403, "only a user logged in with a password can change it")
    if audit is not None:
        audit.target_id = principal.user_id
    client = limits.client_ip(request.scope)
    try:
        pair = await container.auth.change_password(
            principal.user_id,
            body.current_password,
            body.new_password,
            client=client,
            audit=audit,
        )
    except LoginThrottled as exc:
        return _throttled(exc)
    except AuthError as exc:
        raise unauthorized(str(exc)) from None
    return TokenResponse.of(pair)
