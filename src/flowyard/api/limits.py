"""Request body size limit as a pure ASGI middleware.

A ``Content-Length`` above the limit is refused before the body is read; a body without one
(``Transfer-Encoding: chunked``) is counted while the app reads it, so streaming cannot get
around the limit either.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowyard.api import problems


class BodyLimitMiddleware:
    """Answer 413 (problem+json) to requests whose body exceeds ``max_bytes``."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, overrides: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        #: Exact paths with a limit of their own.
        self.overrides = overrides or {}

    @staticmethod
    def _detail(size: str, limit: int) -> str:
        return f"the body is {size} bytes; the limit is {limit}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the bytes actually received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get(scope.get("path", ""), self.max_bytes)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > limit
        ):
            response = problems.problem(
                413, "too-large", "Request too large", self._detail(declared.decode(), limit)
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the app's body read; the problem handler answers 413.
                    raise HTTPException(413, self._detail(f"more than {limit}", limit))
            return message

        await self.app(scope, counting_receive, send)
