"""Counts this process's HTTP requests in flight for its embedded workers, which yield their
claims and commits to them (worker/foreground.py), and marks a request's work urgent: on
SQLite its writes go before the workers' (domain/urgency.py, decision 0041). WebSocket
streams are not requests in flight: they live for hours."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from flowyard.domain.urgency import urgent


class ForegroundMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        container = getattr(scope["app"].state, "container", None) if "app" in scope else None
        if scope["type"] != "http" or container is None:
            await self.app(scope, receive, send)
            return
        gate = container.foreground
        gate.enter()
        try:
            with urgent():
                await self.app(scope, receive, send)
        finally:
            gate.leave()
