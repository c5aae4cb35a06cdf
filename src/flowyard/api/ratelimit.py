"""Rate limits of the API, with the `limits` library (login throttling is elsewhere: in the
database, :mod:`flowyard.security.throttle`).

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
keeps one timestamp per counted request, which is fine at API rates. A request is checked
against *every* limit that applies (each of several windows, its credential's and its
address's) before it is counted against any: a request one limit refuses counts against
none, so refusals never push another window's reset further away. (Between the check and
the count another process may fill a window; that request is then refused but was counted
by the limits checked before: a race of one request, not a growing debt.)

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

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError, StorageError
from limits.storage import storage_from_string
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from flowyard.api import problems
from flowyard.api.headers import adding_headers
from flowyard.security.addresses import DEFAULT_IPV6_PREFIX, canonical_address, client_group
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
#: Limits and the storage key they count under, e.g. ``(per_ip, ("ip", "10.0.0.7"))``.
LimitGroup = tuple[Sequence[RateLimitItem], tuple[str, ...]]


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
    """The client's address, canonical (``::ffff:10.0.0.7`` is ``10.0.0.7``): the peer, or
    behind a trusted proxy the right-most untrusted ``X-Forwarded-For`` hop (hops left of it
    could be written by anyone)."""
    client = scope.get("client")
    peer = canonical_address(str(client[0])) if client else "unknown"
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [
        canonical_address(hop)
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
    """One app's limits and their storage, used by the middleware."""

    def __init__(
        self,
        storage: Storage,
        *,
        per_ip: Sequence[RateLimitItem],
        per_principal: Sequence[RateLimitItem],
        trusted_proxies: Sequence[Network] = (),
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.limiter = MovingWindowRateLimiter(storage)
        self.per_ip = tuple(per_ip)
        self.per_principal = tuple(per_principal)
        self.trusted_proxies = tuple(trusted_proxies)
        #: IPv6 clients count per network of this many bits (one attacker, one /64).
        self.ipv6_prefix = ipv6_prefix
        #: Wall clock (the storages keep epoch timestamps); tests replace it.
        self.clock = clock
        self._logged: dict[str, float] = {}
        self._storage_error_logged = -math.inf

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        """Parse and check every setting: ValueError names the one that is wrong."""
        return cls(
            open_storage(settings.rate_limit_storage),
            per_ip=parse_limits("rate_limit_per_ip", settings.rate_limit_per_ip),
            per_principal=parse_limits(
                "rate_limit_per_principal", settings.rate_limit_per_principal
            ),
            trusted_proxies=parse_networks("trusted_proxies", settings.trusted_proxies),
            ipv6_prefix=settings.client_ipv6_prefix,
        )

    def client_ip(self, scope: Scope) -> str:
        """The request's client address, trusting only the configured proxies."""
        return client_ip(scope, self.trusted_proxies)

    async def _verdict(self, item: RateLimitItem, allowed: bool, *key: str) -> Verdict:
        stats = await self.limiter.get_window_stats(item, *key)
        reset_s = max(0.0, stats.reset_time - self.clock())
        return Verdict(allowed, item.amount, stats.remaining, reset_s)

    async def hit_all(self, groups: Sequence[LimitGroup]) -> tuple[int | None, list[Verdict]]:
        """Check one request against every item of every group ``(items, key)`` first,
        counting nothing. At the first group that refuses it: ``(its index, [its
        refusal])``. Else the request is counted against every item: ``(None, one verdict
        per group)``, each group's tightest (refused only if another process filled a
        window between the check and the count)."""
        for index, (items, key) in enumerate(groups):
            refused = [
                await self._verdict(item, False, NAMESPACE, *key)
                for item in items
                if not await self.limiter.test(item, NAMESPACE, *key)
            ]
            if refused:
                return index, [_tightest(refused)]
        verdicts = []
        for items, key in groups:
            counted = []
            for item in items:
                allowed = await self.limiter.hit(item, NAMESPACE, *key)
                counted.append(await self._verdict(item, allowed, NAMESPACE, *key))
            verdicts.append(_tightest(counted))
        return None, verdicts

    async def hit(self, items: Iterable[RateLimitItem], *key: str) -> Verdict:
        """Count one request against all ``items`` unless one of them refuses it; the
        verdict (the refusal, or the tightest)."""
        _, verdicts = await self.hit_all([(tuple(items), key)])
        return verdicts[0]

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


def _tightest(verdicts: Sequence[Verdict]) -> Verdict:
    refused = [v for v in verdicts if not v.allowed]
    if refused:
        return max(refused, key=lambda v: v.reset_s)
    return min(verdicts, key=lambda v: (v.remaining, -v.reset_s))


async def get_rate_limits(request: Request) -> RateLimits:
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
        # The credential first: its refusal is the one reported. Nothing is counted unless
        # every limit allows the request, so a refused request uses up no budget (neither the
        # address's, which other clients behind it share, nor the credential's).
        group = client_group(ip, self.limits.ipv6_prefix)
        groups: list[LimitGroup] = [(self.limits.per_ip, ("ip", group))]
        if key is not None:
            groups.insert(0, (self.limits.per_principal, ("principal", key)))
        try:
            refused_by, verdicts = await self.limits.hit_all(groups)
        except StorageError as exc:
            self.limits.storage_failed(exc)
            await self.app(scope, receive, send)
            return
        if refused_by is None and not all(v.allowed for v in verdicts):
            # Another process filled a window between the check and the count.
            refused_by = next(i for i, v in enumerate(verdicts) if not v.allowed)
            verdicts = [verdicts[refused_by]]
        if refused_by is not None:
            [refusal] = verdicts
            if key is not None and refused_by == 0:
                # Logs name a credential by a prefix of its hash, never by itself.
                self.limits.log_refusal(f"principal {key[:12]}", refusal, "per-principal")
                await self._refuse(scope, receive, send, refusal, "this credential")
            else:
                self.limits.log_refusal(f"ip {ip}", refusal, "per-ip")
                await self._refuse(scope, receive, send, refusal, "this client address")
            return
        verdict = _tightest(verdicts)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in verdict.headers().items()]
        await self.app(scope, receive, adding_headers(send, extra))

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
