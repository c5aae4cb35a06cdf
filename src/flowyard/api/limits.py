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

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self, size: str) -> str:
        return f"the body is {size} bytes; the limit is {self.max_bytes}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the bytes actually received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > self.max_bytes
        ):
            response = problems.problem(
                413, "too-large", "Request too large", self._detail(declared.decode())
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the app's body read; the problem handler answers 413.
                    raise HTTPException(413, self._detail(f"more than {self.max_bytes}"))
            return message

        await self.app(scope, counting_receive, send)
