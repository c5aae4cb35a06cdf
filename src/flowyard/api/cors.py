"""CORS for browser clients on other origins: starlette's middleware, only when configured.

The middleware answers preflight requests (``OPTIONS`` with ``Access-Control-Request-Method``)
itself, before routing, so the authorization dependency never sees them.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from flowyard.settings import Settings

ALLOW_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ALLOW_HEADERS = ("Authorization", "Content-Type", "X-API-Key", "If-Match", "If-None-Match")
#: Response headers a browser script may read besides the CORS-safelisted ones.
EXPOSE_HEADERS = (
    "ETag",
    "Location",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
)
PREFLIGHT_MAX_AGE_S = 600


def install(app: FastAPI, settings: Settings) -> None:
    """Add the CORS middleware when ``cors_origins`` lists any origin."""
    origins = [origin.rstrip("/") for origin in settings.cors_origins]
    if not origins:
        return
    if "*" in origins and settings.cors_allow_credentials:
        # Starlette would echo any origin back with credentials allowed: every site could
        # then act with a user's cookies. Name the origins instead.
        raise ValueError("cors_origins: '*' cannot be combined with cors_allow_credentials")
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=ALLOW_METHODS,
        allow_headers=ALLOW_HEADERS,
        allow_credentials=settings.cors_allow_credentials,
        expose_headers=EXPOSE_HEADERS,
        max_age=PREFLIGHT_MAX_AGE_S,
    )
