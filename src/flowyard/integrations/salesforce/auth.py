"""The ``salesforce_oauth`` authenticator: OAuth 2.0 access tokens for a connected app, one
per credential, cached and shared by every step of the process.

Three flows get a token from ``{token_url}/services/oauth2/token`` (form-encoded; the
token URL defaults to ``https://login.salesforce.com``): the refresh-token flow, the
client-credentials flow, and the JWT bearer flow (an RS256 assertion signed with the
credential's private key: ``iss`` the client id, ``sub`` the user name, ``aud`` the token
endpoint's origin, valid for three minutes).

The cache is keyed by the credential's name and a hash of its whole data and allowed
origins, so an edited credential gets a new token at once. One lock per credential makes a
burst of steps cost one token request. A token lives until Salesforce refuses it (a 401
``INVALID_SESSION_ID``: the node calls :meth:`SalesforceAuth.invalidate` and repeats its call
once) or until ``expires_in`` says, when the answer has it. Every step that uses a token
remembers it (``AuthContext.remember``), so it is redacted from what the step produces.

The secrets (client secret, refresh token, private key) go only to the token endpoint, and
only after :func:`~flowyard.outbound.check_origin` admitted it; the egress policy applies to
the token request as to any other.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from flowyard.domain.credentials import ResolvedCredential, SalesforceFlow
from flowyard.domain.errors import PermanentError, TransientError
from flowyard.nodes.httpio import parse_retry_after, read_limited
from flowyard.outbound import AuthContext, check_origin, origin_of
from flowyard.outbound.origins import SALESFORCE_LOGIN, OriginError, admits

_log = logging.getLogger("flowyard.integrations.salesforce")

TOKEN_PATH = "/services/oauth2/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Lifetime of a JWT bearer assertion (Salesforce accepts at most a few minutes).
ASSERTION_TTL_S = 180
#: A token answer is a few hundred bytes; anything this large is not one.
TOKEN_MAX_BYTES = 64 * 1024
#: A token said to expire is dropped this long before it does (clock skew, a slow call).
EXPIRY_MARGIN_S = 30.0
_ERROR_CODE = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True, slots=True)
class Session:
    """A cached access token and what it was obtained for."""

    token: str
    #: The hash of the credential data the token belongs to.
    data_key: str
    #: The hash of the credential's plain fields (what a node sees, see
    #: :meth:`SalesforceAuth.instance_url`).
    public_key: str
    #: The token answer's ``instance_url`` when the credential admits its origin.
    instance_url: str | None
    #: ``time.monotonic()`` after which the token is not used (None: until refused).
    expires_at: float | None


def token_endpoint(values: Mapping[str, Any]) -> httpx.URL:
    """``{token_url or https://login.salesforce.com}/services/oauth2/token`` (a token URL
    already ending with that path is taken as it is)."""
    base = str(values.get("token_url") or SALESFORCE_LOGIN).rstrip("/")
    if not base.endswith(TOKEN_PATH):
        base += TOKEN_PATH
    return httpx.URL(base)


def _hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def public_key(public_values: Mapping[str, Any]) -> str:
    """The hash a node can compute of a credential's plain fields."""
    return _hash(dict(public_values))


def data_key(credential: ResolvedCredential) -> str:
    """The hash of everything a token depends on: the data and the allowed origins."""
    return _hash({"values": dict(credential.values), "origins": list(credential.allowed_origins)})


class SalesforceAuth:
    """The authenticator of ``salesforce_oauth`` credentials (``Authorization: Bearer``)."""

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._sessions: dict[str, Session] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def header_names(self, credential: ResolvedCredential) -> frozenset[str]:
        """``authorization``."""
        return frozenset({"authorization"})

    async def headers(
        self, credential: ResolvedCredential, url: httpx.URL, ctx: AuthContext
    ) -> Mapping[str, str]:
        """The bearer header of the credential's current token (fetched when none is
        cached for its present data)."""
        session = await self.session(credential, ctx)
        return {"Authorization": f"Bearer {session.token}"}

    def _usable(self, session: Session | None, key: str) -> Session | None:
        if session is None or session.data_key != key:
            return None
        if session.expires_at is not None and self._monotonic() >= session.expires_at:
            return None
        return session

    async def session(self, credential: ResolvedCredential, ctx: AuthContext) -> Session:
        """The cached session of ``credential``, or a new one (one token request at a time
        per credential: the steps waiting behind it take its token)."""
        key = data_key(credential)
        session = self._usable(self._sessions.get(credential.name), key)
        if session is None:
            lock = self._locks.setdefault(credential.name, asyncio.Lock())
            async with lock:
                session = self._usable(self._sessions.get(credential.name), key)
                if session is None:
                    session = await self._fetch(credential, ctx, key)
                    self._sessions[credential.name] = session
        ctx.remember(session.token)
        return session

    def instance_url(self, name: str, public_values: Mapping[str, Any]) -> str | None:
        """The instance the cached token of credential ``name`` names (the token answer's
        ``instance_url``, when the credential admits it), if the credential's plain fields
        are still those it was obtained with; None: use the configured ``instance_url``."""
        session = self._sessions.get(name)
        if session is None or session.public_key != public_key(public_values):
            return None
        return session.instance_url

    def invalidate(self, name: str, authorization: str | None) -> bool:
        """Forget credential ``name``'s token if it is the one ``authorization`` (the header
        of the refused request) carried: a step refused with an older token does not throw
        away the fresh one another step just obtained. True when it was dropped."""
        session = self._sessions.get(name)
        if session is None or authorization != f"Bearer {session.token}":
            return False
        del self._sessions[name]
        return True

    async def _fetch(self, credential: ResolvedCredential, ctx: AuthContext, key: str) -> Session:
        values = credential.values
        endpoint = token_endpoint(values)
        # Before any secret is put in a request body: the token endpoint must be one of the
        # credential's origins (credential.origin_not_allowed otherwise, nothing sent).
        check_origin(credential, endpoint)
        form = self._grant(credential, endpoint)
        for name in ("client_secret", "refresh_token", "assertion"):
            if form.get(name):
                ctx.remember(form[name])
        request = ctx.outbound.build_request(
            "POST", endpoint, data=form, headers={"Accept": "application/json"}
        )
        status, headers, body = await _post(ctx, request)
        if status != 200 or not isinstance(body, dict):
            _token_error(credential, status, headers, body)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise PermanentError(
                f"the token endpoint of credential {credential.name!r} answered without an "
                "access_token",
                error_type="salesforce.auth_invalid_response",
                details={"credential": credential.name, "status": status},
            )
        ctx.remember(token)
        if isinstance(body.get("refresh_token"), str):
            ctx.remember(body["refresh_token"])
        _log.info(
            "salesforce: new access token for credential %r (%s flow)",
            credential.name,
            values.get("flow"),
        )
        return Session(
            token=token,
            data_key=key,
            public_key=public_key(credential.public_values),
            instance_url=_admitted_instance(credential, body.get("instance_url")),
            expires_at=self._expiry(body.get("expires_in")),
        )

    def _expiry(self, expires_in: Any) -> float | None:
        if isinstance(expires_in, str) and expires_in.isdigit():
            expires_in = int(expires_in)
        if isinstance(expires_in, int) and not isinstance(expires_in, bool) and expires_in > 0:
            return self._monotonic() + max(0.0, expires_in - EXPIRY_MARGIN_S)
        return None

    def _grant(self, credential: ResolvedCredential, endpoint: httpx.URL) -> dict[str, str]:
        values = credential.values
        flow = SalesforceFlow(values.get("flow") or SalesforceFlow.REFRESH_TOKEN)
        client_id = str(values["client_id"])
        if flow is SalesforceFlow.REFRESH_TOKEN:
            return {
                "grant_type": "refresh_token",
                "client_id": client_id,
                "client_secret": str(values["client_secret"]),
                "refresh_token": str(values["refresh_token"]),
            }
        if flow is SalesforceFlow.CLIENT_CREDENTIALS:
            return {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": str(values["client_secret"]),
            }
        return {"grant_type": JWT_BEARER_GRANT, "assertion": self._assertion(credential, endpoint)}

    def _assertion(self, credential: ResolvedCredential, endpoint: httpx.URL) -> str:
        """The signed JWT of the bearer flow; its audience is the token endpoint's origin
        (``https://login.salesforce.com``, ``https://test.salesforce.com`` or a My Domain)."""
        values = credential.values
        claims = {
            "iss": str(values["client_id"]),
            "sub": str(values["username"]),
            "aud": str(origin_of(endpoint)),
            "exp": int(self._wall_clock()) + ASSERTION_TTL_S,
        }
        try:
            return jwt.encode(claims, str(values["private_key"]), algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError):
            # Never the exception's text: some key parsers quote what they could not read.
            raise PermanentError(
                f"the private_key of credential {credential.name!r} is not an RSA private key "
                "in PEM form",
                error_type="salesforce.auth_invalid_private_key",
                details={"credential": credential.name},
            ) from None


async def _post(ctx: AuthContext, request: httpx.Request) -> tuple[int, httpx.Headers, Any]:
    """Send the token request (no credential attached: its origin was checked) and decode
    the answer (the JSON object, or None when the body is not one)."""
    what = f"POST {request.url}"
    try:
        response = await ctx.outbound.send(request)
        try:
            raw = await read_limited(response, TOKEN_MAX_BYTES, prefix="salesforce.auth")
        finally:
            await response.aclose()
    except httpx.TimeoutException as exc:
        raise TransientError(f"{what} timed out", error_type="salesforce.auth_timeout") from exc
    except httpx.TransportError as exc:
        raise TransientError(
            f"{what} failed: {exc.__class__.__name__}", error_type="salesforce.auth_network"
        ) from exc
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    return response.status_code, response.headers, body


def _token_error(
    credential: ResolvedCredential, status: int, headers: httpx.Headers, body: Any
) -> None:
    """Raise the error of a refused token request: ``salesforce.auth_<error>`` (permanent)
    for an OAuth error answer, transient for 5xx and 429."""
    details: dict[str, Any] = {"credential": credential.name, "status": status}
    code = body.get("error") if isinstance(body, dict) else None
    if isinstance(code, str) and code:
        details["error"] = code
        description = body.get("error_description") if isinstance(body, dict) else None
        if isinstance(description, str):
            details["error_description"] = description[:500]
        error_type = "salesforce.auth_" + (_ERROR_CODE.sub("_", code.lower())[:64] or "error")
    elif status == 200 or body is None:
        error_type = "salesforce.auth_invalid_response"
    else:
        error_type = f"salesforce.auth_http_{status}"
    message = (
        f"the token endpoint refused credential {credential.name!r} ({status}"
        + (f" {details['error']}" if "error" in details else "")
        + (f": {details['error_description']}" if "error_description" in details else "")
        + ")"
    )
    if status >= 500 or status == 429:
        raise TransientError(
            message,
            error_type=f"salesforce.auth_http_{status}",
            details=details,
            retry_after_s=parse_retry_after(headers.get("retry-after")),
        )
    raise PermanentError(message, error_type=error_type, details=details)


def _admitted_instance(credential: ResolvedCredential, value: Any) -> str | None:
    """The token answer's ``instance_url`` when the credential admits its origin (a token
    endpoint cannot send the token to a host the admin did not name)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        url = httpx.URL(value)
        origin_of(url)
    except (httpx.InvalidURL, OriginError):
        return None
    bare = url.path in ("", "/") and not url.query and not url.fragment and not url.userinfo
    if (
        not bare
        or url.scheme not in ("http", "https")
        or not admits(credential.allowed_origins, url)
    ):
        if value.rstrip("/") != str(credential.values.get("instance_url", "")).rstrip("/"):
            _log.warning(
                "salesforce: credential %r: the token's instance_url %s is not one of its "
                "allowed origins; using the configured instance",
                credential.name,
                value[:200],
            )
        return None
    return value.rstrip("/")
