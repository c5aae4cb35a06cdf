"""Security headers of every HTTP response: a pure ASGI middleware (streams pass untouched).

- ``X-Content-Type-Options: nosniff`` everywhere: a browser never guesses a type other than
  the one declared (a JSON body echoing user text is never run as HTML or script).
- ``Cache-Control: no-store`` on everything under ``/api/v1``: every answer depends on who
  asks (roles, users), some carry tokens or secrets (``/auth/token``, ``/auth/refresh``, a new
  API key), and a stale copy of a run's state misleads. Neither a browser nor a shared cache
  may keep one. Conditional requests still work: clients that keep their own copy send
  ``If-None-Match`` themselves. A route that sets its own ``Cache-Control`` keeps it.

The ``Server`` header is left out by ``flowyard serve`` (:mod:`flowyard.api.server`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Paths whose responses are never stored by a cache.
NO_STORE_PREFIX = "/api/v1"

_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_STORE = (b"cache-control", b"no-store")


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    """The headers every response to ``path`` carries (also used by the 500 handler, whose
    response is sent outside the middleware stack)."""
    headers = [_NOSNIFF]
    if path == NO_STORE_PREFIX or path.startswith(NO_STORE_PREFIX + "/"):
        headers.append(_NO_STORE)
    return headers


def adding_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """``send`` that completes a response's start with ``extra`` headers it does not set."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {bytes(name).lower() for name, _ in headers}
            headers += [(name, value) for name, value in extra if name not in present]
            message = {**message, "headers": headers}
        await send(message)

    return send_with_headers


class SecurityHeadersMiddleware:
    """Adds :func:`security_headers` to every HTTP response that does not set them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; complete the headers of its response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, adding_headers(send, security_headers(str(scope["path"]))))
