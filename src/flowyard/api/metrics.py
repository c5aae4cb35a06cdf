"""HTTP request metrics: a pure ASGI middleware (streams and WebSockets pass untouched), and
who may read them without a token."""

from __future__ import annotations

import ipaddress
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowyard.api.ratelimit import RateLimits
from flowyard.observability import Metrics
from flowyard.settings import MetricsAccess, Settings

#: Route label of requests no route matched (raw paths would explode the label set).
UNMATCHED = "<unmatched>"


class HttpMetricsMiddleware:
    """Counts HTTP requests by method, route template and status, and times them.

    The route label is the matched route's template (``/api/v1/runs/{run_id}``), never the
    raw path. ``metrics`` is resolved per request, so the app can get its container late.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on and record it when the response has started (or failed)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics or _container_metrics(scope)
        if metrics is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = route_template(scope)
            method = str(scope["method"])
            metrics.http_requests.labels(method, route, str(status)).inc()
            metrics.http_duration.labels(method, route).observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """The matched route's full template, e.g. ``/api/v1/runs/{run_id}``.

    FastAPI records the matched route in ``scope["route"]``, but a route of an included
    router carries its path without the router's prefix. The prefix is literal (it has no
    parameters here), so it is taken from the raw path: its leading segments not covered by
    the route's own template.
    """
    template = getattr(scope.get("route"), "path", None)
    if not isinstance(template, str) or not template:
        return UNMATCHED
    if ":path}" in template:  # a parameter spanning segments: no reliable prefix split
        return template
    raw = str(scope.get("path", "")).rstrip("/").split("/")
    own = template.rstrip("/").split("/")
    extra = len(raw) - len(own)
    if extra <= 0:
        return template
    prefix = "/".join(raw[: extra + 1])
    return (prefix + template.rstrip("/")) or "/"


def _container_metrics(scope: Scope) -> Metrics | None:
    app = scope.get("app")
    container = getattr(getattr(app, "state", None), "container", None)
    metrics = getattr(container, "metrics", None)
    return metrics if isinstance(metrics, Metrics) else None


def metrics_without_token(scope: Scope, settings: Settings, limits: RateLimits) -> bool:
    """Whether this request may read ``GET /metrics`` without a token (see
    ``Settings.metrics_access``). The client address is the rate limiter's: the peer, or
    behind ``trusted_proxies`` the forwarded client, so a proxy on the same host does not
    make every client local."""
    policy = settings.metrics_policy
    if policy is MetricsAccess.LOOPBACK:
        return is_loopback(limits.client_ip(scope))
    return policy is MetricsAccess.PUBLIC


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback (a dual-stack socket's view of 127.0.0.1)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # "unknown" (no peer address): not known to be local
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
