"""Rate limits of the API and login throttling, with the `limits` library.

Every request counts against its client address (``rate_limit_per_ip``); one that presents a
credential (a bearer token or ``X-API-Key``) also counts against that credential
(``rate_limit_per_principal``). The middleware does not authenticate: the credential is only
hashed (SHA-256), so a forged or random token gets its own bucket but can never get around the
address limit, and no raw token reaches the storage. The client address is the peer's, or with
``trusted_proxies`` listing the peer, the first untrusted hop of ``X-Forwarded-For`` counted
from the right.

The strategy is the *moving window*: a request is allowed when fewer than ``N`` requests were
allowed in the last window, so there is no burst of ``2N`` across a fixed window's boundary,
``Retry-After`` is exact (when the oldest counted request leaves the window), and refused
requests are not recorded (a client that keeps knocking is not locked out for longer). It
keeps one timestamp per counted request, which is fine at API rates.

Storage is any async storage of `limits` (``memory://`` per process, ``redis://host:port``
shared by every process; the ``async+`` prefix is added when missing). A storage error lets
the request through (logged): rate limiting must not take the API down with it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError, StorageError
from limits.storage import storage_from_string
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowyard.api import problems
from flowyard.settings import Settings

#: Probes and scrapes are never limited.
EXEMPT_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/api/v1/healthz", "/api/v1/readyz", "/api/v1/metrics"}
)
#: Namespace of every storage key.
NAMESPACE = "flowyard"
#: Websocket subprotocol carrying a token (see :mod:`flowyard.api.stream`).
TOKEN_SUBPROTOCOL = "bearer."
#: Storage errors are logged at most this often.
STORAGE_ERROR_LOG_S = 60.0
#: Above this many entries, the "logged once per window" memory drops expired ones.
_LOGGED_MAX = 10_000

_log = logging.getLogger("flowyard.api.ratelimit")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_limits(name: str, value: str) -> list[RateLimitItem]:
    """``'600/minute'`` or several (``'20/second;600/minute'``); ValueError naming the setting."""
    try:
        items = parse_many(value)
    except ValueError:
        items = []
    if not items or any(item.amount < 1 for item in items):
        raise ValueError(
            f"{name}: {value!r} is not a rate limit; write e.g. '600/minute' or "
            "'20/second;600/minute' (amount >= 1 per second, minute, hour or day)"
        )
    return items


def parse_networks(name: str, values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or networks (CIDR); ValueError naming the setting."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not an IP address or network") from None
    return tuple(networks)


def open_storage(uri: str) -> Storage:
    """The async `limits` storage of ``uri``; ValueError when it cannot be used."""
    if not uri.startswith("async+"):
        uri = "async+" + uri
    options: dict[str, Any] = {"wrap_exceptions": True}
    scheme = uri.partition("://")[0]
    if scheme.startswith("async+redis") and importlib.util.find_spec("redis"):
        options["implementation"] = "redispy"  # the `redis` extra; else coredis if installed
    try:
        storage = storage_from_string(uri, **options)
    except ConfigurationError as exc:
        raise ValueError(f"rate_limit_storage: {uri!r} cannot be used: {exc}") from None
    if not isinstance(storage, Storage):  # pragma: no cover - "async+" always gives one
        raise ValueError(f"rate_limit_storage: {uri!r} is not an async storage")
    return storage


def credential_key(token: str) -> str:
    """The storage identifier of a presented credential: never the credential itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def presented_credential(scope: Scope) -> str | None:
    """The bearer token or API key a request presents (unchecked), websockets' subprotocol
    token included."""
    headers = Headers(scope=scope)
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if key := headers.get("x-api-key"):
        return key
    for protocol in scope.get("subprotocols") or ():
        if protocol.startswith(TOKEN_SUBPROTOCOL) and len(protocol) > len(TOKEN_SUBPROTOCOL):
            return str(protocol[len(TOKEN_SUBPROTOCOL) :])
    return None


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(scope: Scope, trusted: Sequence[Network] = ()) -> str:
    """The client's address: the peer, or behind a trusted proxy the right-most untrusted
    ``X-Forwarded-For`` hop (hops left of it could be written by anyone)."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [
        hop.strip()
        for value in Headers(scope=scope).getlist("x-forwarded-for")
        for hop in value.split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


@dataclass(frozen=True, slots=True)
class Verdict:
    """One limit's state after a check: allowed or not, and what the headers say."""

    allowed: bool
    limit: int
    remaining: int
    #: Seconds until a request is allowed again (refused) or the window is empty (allowed).
    reset_s: float

    @property
    def retry_after(self) -> int:
        """``Retry-After`` in whole seconds, at least 1."""
        return max(1, math.ceil(self.reset_s))

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` (IETF draft names), and ``Retry-After`` when refused."""
        made = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.remaining)),
            "RateLimit-Reset": str(max(0, math.ceil(self.reset_s))),
        }
        if not self.allowed:
            made["Retry-After"] = str(self.retry_after)
        return made


def too_many_requests(verdict: Verdict, detail: str, *, limit_headers: bool = True) -> JSONResponse:
    """The 429 problem (``type`` ends in ``/rate-limited``) with ``Retry-After`` (and the
    ``RateLimit-*`` headers unless ``limit_headers`` is false)."""
    response = problems.problem(
        429, "rate-limited", "Too many requests", detail, retry_after=verdict.retry_after
    )
    headers = verdict.headers()
    response.headers.update(headers if limit_headers else {"Retry-After": headers["Retry-After"]})
    return response


class RateLimits:
    """One app's limits and their storage, shared by the middleware and the login route."""

    def __init__(
        self,
        storage: Storage,
        *,
        per_ip: Sequence[RateLimitItem],
        per_principal: Sequence[RateLimitItem],
        trusted_proxies: Sequence[Network] = (),
        login_per_username: RateLimitItem | None = None,
        login_per_ip: RateLimitItem | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.limiter = MovingWindowRateLimiter(storage)
        self.per_ip = tuple(per_ip)
        self.per_principal = tuple(per_principal)
        self.trusted_proxies = tuple(trusted_proxies)
        self.login_per_username = login_per_username
        self.login_per_ip = login_per_ip
        #: Wall clock (the storages keep epoch timestamps); tests replace it.
        self.clock = clock
        self._logged: dict[str, float] = {}
        self._storage_error_logged = -math.inf

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        """Parse and check every setting: ValueError names the one that is wrong."""
        window = settings.login_failure_window_s
        return cls(
            open_storage(settings.rate_limit_storage),
            per_ip=parse_limits("rate_limit_per_ip", settings.rate_limit_per_ip),
            per_principal=parse_limits(
                "rate_limit_per_principal", settings.rate_limit_per_principal
            ),
            trusted_proxies=parse_networks("trusted_proxies", settings.trusted_proxies),
            login_per_username=_per_window(settings.login_max_failures, window),
            login_per_ip=_per_window(settings.login_max_failures_per_ip, window),
        )

    def client_ip(self, scope: Scope) -> str:
        """The request's client address, trusting only the configured proxies."""
        return client_ip(scope, self.trusted_proxies)

    async def _verdict(self, item: RateLimitItem, allowed: bool, *key: str) -> Verdict:
        stats = await self.limiter.get_window_stats(item, *key)
        reset_s = max(0.0, stats.reset_time - self.clock())
        return Verdict(allowed, item.amount, stats.remaining, reset_s)

    async def hit(self, items: Iterable[RateLimitItem], *key: str) -> Verdict:
        """Count one request against the items, shortest window first, and stop at the first
        that refuses it (its verdict); else the verdict with the fewest requests left."""
        verdicts = []
        for item in sorted(items, key=lambda i: i.get_expiry()):
            allowed = await self.limiter.hit(item, NAMESPACE, *key)
            verdict = await self._verdict(item, allowed, NAMESPACE, *key)
            if not allowed:
                return verdict
            verdicts.append(verdict)
        return _tightest(verdicts)

    async def check(self, item: RateLimitItem, *key: str) -> Verdict:
        """The item's state, counting nothing."""
        allowed = await self.limiter.test(item, NAMESPACE, *key)
        return await self._verdict(item, allowed, NAMESPACE, *key)

    async def clear(self, item: RateLimitItem, *key: str) -> None:
        """Forget the item's counted requests."""
        await self.limiter.clear(item, NAMESPACE, *key)

    # -- login throttling ------------------------------------------------------------------

    def _login_keys(self, username: str, ip: str) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
        keys: list[tuple[RateLimitItem, tuple[str, ...]]] = []
        if self.login_per_username is not None:
            keys.append((self.login_per_username, ("login-user", credential_key(username))))
        if self.login_per_ip is not None:
            keys.append((self.login_per_ip, ("login-ip", ip)))
        return keys

    async def login_refusal(self, username: str, ip: str) -> Verdict | None:
        """A refusing verdict when ``username`` or ``ip`` failed too often, else None."""
        try:
            refused = [
                verdict
                for item, key in self._login_keys(username, ip)
                if not (verdict := await self.check(item, *key)).allowed
            ]
        except StorageError as exc:
            self.storage_failed(exc)
            return None
        if not refused:
            return None
        verdict = _tightest(refused)
        self.log_refusal(f"login {ip}", verdict, "failed-login")
        return verdict

    async def login_failed(self, username: str, ip: str) -> None:
        """Count a failed login against the username and the address."""
        try:
            for item, key in self._login_keys(username, ip):
                await self.limiter.hit(item, NAMESPACE, *key)
        except StorageError as exc:
            self.storage_failed(exc)

    async def login_succeeded(self, username: str) -> None:
        """A successful login forgets the username's failures (not the address's)."""
        if self.login_per_username is None:
            return
        try:
            await self.clear(self.login_per_username, "login-user", credential_key(username))
        except StorageError as exc:
            self.storage_failed(exc)

    # -- logging and closing ---------------------------------------------------------------

    def log_refusal(self, who: str, verdict: Verdict, what: str) -> None:
        """Log a refusal at INFO, once per key and window at most."""
        now = self.clock()
        if self._logged.get(who, -math.inf) > now:
            return
        if len(self._logged) >= _LOGGED_MAX:
            self._logged = {k: until for k, until in self._logged.items() if until > now}
        self._logged[who] = now + verdict.reset_s
        _log.info(
            "%s: %s limit of %d reached; refusing for %ds",
            who,
            what,
            verdict.limit,
            verdict.retry_after,
        )

    def storage_failed(self, exc: StorageError) -> None:
        """A storage error lets requests through: warn, at most once a minute."""
        now = time.monotonic()
        if now - self._storage_error_logged >= STORAGE_ERROR_LOG_S:
            self._storage_error_logged = now
            _log.warning("rate limit storage failed, not limiting: %s", exc.storage_error)

    async def close(self) -> None:
        """Close the storage's connections (a redis client has some)."""
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        closer = getattr(client, "aclose", None) or getattr(client, "close", None)
        if closer is not None:
            result = closer()
            if hasattr(result, "__await__"):
                await result


def _per_window(amount: int, window_s: int) -> RateLimitItem | None:
    return RateLimitItemPerSecond(amount, window_s) if amount > 0 else None


def _tightest(verdicts: Sequence[Verdict]) -> Verdict:
    refused = [v for v in verdicts if not v.allowed]
    if refused:
        return max(refused, key=lambda v: v.reset_s)
    return min(verdicts, key=lambda v: (v.remaining, -v.reset_s))


def get_rate_limits(request: Request) -> RateLimits:
    """The app's :class:`RateLimits` (a FastAPI dependency)."""
    limits: RateLimits = request.app.state.rate_limits
    return limits


class RateLimitMiddleware:
    """Refuse requests over their limits with 429 (problem+json, ``Retry-After``) and add
    ``RateLimit-*`` headers to the others. A websocket handshake counts once; refused, it is
    answered 429 where the server supports denial responses, else closed (1013)."""

    def __init__(self, app: ASGIApp, *, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request, then refuse it or pass it on."""
        if scope["type"] not in ("http", "websocket") or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        ip = self.limits.client_ip(scope)
        credential = presented_credential(scope)
        key = credential_key(credential) if credential is not None else None
        by_key: Verdict | None = None
        by_ip: Verdict | None = None
        try:
            # The credential first: a request it refuses does not use up the address's
            # budget, which other clients behind the same address share.
            if key is not None:
                by_key = await self.limits.hit(self.limits.per_principal, "principal", key)
            if by_key is None or by_key.allowed:
                by_ip = await self.limits.hit(self.limits.per_ip, "ip", ip)
        except StorageError as exc:
            self.limits.storage_failed(exc)
            await self.app(scope, receive, send)
            return
        if key is not None and by_key is not None and not by_key.allowed:
            # Logs name a credential by a prefix of its hash, never by itself.
            self.limits.log_refusal(f"principal {key[:12]}", by_key, "per-principal")
            await self._refuse(scope, receive, send, by_key, "this credential")
            return
        assert by_ip is not None
        if not by_ip.allowed:
            self.limits.log_refusal(f"ip {ip}", by_ip, "per-ip")
            await self._refuse(scope, receive, send, by_ip, "this client address")
            return
        verdict = by_ip if by_key is None else _tightest([by_key, by_ip])
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in verdict.headers().items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {bytes(name).lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, verdict: Verdict, what: str
    ) -> None:
        detail = (
            f"more than {verdict.limit} requests from {what} in the window; "
            f"retry after {verdict.retry_after}s"
        )
        if scope["type"] == "http" or "websocket.http.response" in scope.get("extensions", {}):
            await too_many_requests(verdict, detail)(scope, receive, send)
            return
        message = await receive()  # websocket.connect
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1013, "reason": "rate limited"})
