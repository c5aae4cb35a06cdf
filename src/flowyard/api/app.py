"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI

from flowyard import __version__
from flowyard.api import cors, openapi, problems
from flowyard.api.limits import BodyLimitMiddleware
from flowyard.api.metrics import HttpMetricsMiddleware
from flowyard.api.ratelimit import RateLimitMiddleware, RateLimits
from flowyard.api.routers import (
    auth,
    credentials,
    flow,
    lifecycle,
    metrics,
    runs,
    stream,
    system,
    workflows,
)
from flowyard.api.security import AuditMiddleware, authorize
from flowyard.bootstrap import Container, build
from flowyard.domain.errors import InvalidInput
from flowyard.settings import Settings

API_PREFIX = "/api/v1"
_log = logging.getLogger("flowyard.api")


def create_app(settings: Settings | None = None, *, container: Container | None = None) -> FastAPI:
    """Build the app. Without a ``container`` one is built (and closed) by the lifespan,
    with ``settings.workers`` in-process workers."""
    settings = settings or (container.settings if container else Settings())
    # Parsed now: a wrong limit, proxy or storage setting fails the start, not a request.
    rate_limits = RateLimits.from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = container is None
        built = container or await build(settings)
        app.state.container = built
        if owned:
            try:
                await first_start(built)
            except StartupRefused:
                await built.close()
                raise
        if settings.load_samples:
            names = await built.load_samples(settings.samples_dir)
            _log.info("loaded %d sample workflows: %s", len(names), ", ".join(names))
        workers = [built.new_worker() for _ in range(settings.workers)] if owned else []
        tasks = [asyncio.create_task(w.run(), name=f"worker-{w.id}") for w in workers]
        try:
            yield
        finally:
            for worker in workers:
                worker.stop()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if owned:
                await built.close()
            await rate_limits.close()

    app = FastAPI(
        title="flowyard",
        version=__version__,
        description="Durable workflow automation engine. Errors are RFC 9457 problem details.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        dependencies=[Depends(authorize)],
    )
    problems.install(app)
    openapi.install(app)  # problem responses, security and examples completed from RULES
    # WebSockets authenticate in the stream router (api/stream.py), with the same checks.

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(AuditMiddleware, trusted_proxies=rate_limits.trusted_proxies)
    app.state.rate_limits = rate_limits  # also the client address of logins and the audit
    if settings.rate_limit_enabled:
        # Outside the audit (refusals are not audited), inside CORS (a 429 carries CORS
        # headers, so a browser script can read Retry-After) and metrics (429s are counted).
        app.add_middleware(RateLimitMiddleware, limits=rate_limits)
    cors.install(app, settings)
    if settings.metrics_enabled:
        # Outermost: also counts requests the body limit rejects.
        app.add_middleware(HttpMetricsMiddleware)

    app.include_router(system.router)
    app.include_router(system.router, prefix=API_PREFIX, include_in_schema=False)
    if settings.metrics_enabled:
        app.include_router(metrics.router)
    app.include_router(workflows.router, prefix=API_PREFIX)
    app.include_router(lifecycle.router, prefix=API_PREFIX)
    app.include_router(flow.router, prefix=API_PREFIX)
    app.include_router(runs.router, prefix=API_PREFIX)
    app.include_router(stream.router, prefix=API_PREFIX)
    app.include_router(auth.router, prefix=API_PREFIX)
    app.include_router(credentials.router, prefix=API_PREFIX)
    return app


class StartupRefused(RuntimeError):
    """The server must not start as configured (the message says what to change)."""


async def first_start(container: Container) -> None:
    """With no user at all, create ``admin``: with ``FLOWYARD_ADMIN_PASSWORD``, or with a
    random password written once to stderr (never logged). A weak
    ``FLOWYARD_ADMIN_PASSWORD`` stops the start (:class:`StartupRefused`)."""
    secret = container.settings.admin_password
    try:
        password = await container.auth.ensure_admin(secret.get_secret_value() if secret else None)
    except InvalidInput as exc:
        # Only the given password can be refused; the start stops with one clear line.
        reasons = "; ".join(p.message for p in exc.problems) or exc.message
        message = (
            f"FLOWYARD_ADMIN_PASSWORD is too weak for the first admin: {reasons.rstrip('.')}. "
            "Set a stronger one, or unset it to get a random password printed once."
        )
        _log.error("%s", message)
        raise StartupRefused(message) from None
    if password is not None:
        sys.stderr.write(
            "flowyard: first start: created user 'admin' with password "
            f"{password}\n(shown once; change it with POST /api/v1/auth/password)\n"
        )
        sys.stderr.flush()
