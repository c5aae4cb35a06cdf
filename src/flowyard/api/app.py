"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI

from flowyard import console
from flowyard.api import cors, docs, openapi, problems
from flowyard.api.foreground import ForegroundMiddleware
from flowyard.api.headers import SecurityHeadersMiddleware
from flowyard.api.limits import BodyLimitMiddleware
from flowyard.api.metrics import HttpMetricsMiddleware
from flowyard.api.ratelimit import RateLimitMiddleware, RateLimits
from flowyard.api.routers import (
    api_keys,
    audit,
    auth,
    campaigns,
    correlations,
    credentials,
    drafts,
    event_triggers,
    hook_delivery,
    hooks,
    lifecycle,
    metrics,
    quotas,
    runs,
    schedules,
    signals,
    stream,
    system,
    users,
    workflows,
)
from flowyard.api.security import AuditMiddleware, authorize
from flowyard.bootstrap import Container, build
from flowyard.domain.errors import InvalidInput
from flowyard.nodes.registry import NodeRegistry
from flowyard.settings import Settings

API_PREFIX = "/api/v1"
#: ``info.version`` of the OpenAPI document.
API_VERSION = "1"
_log = logging.getLogger("flowyard.api")


def create_app(
    settings: Settings | None = None,
    *,
    container: Container | None = None,
    registry: NodeRegistry | None = None,
) -> FastAPI:
    """Build the app. Without a ``container`` one is built (and closed) by the lifespan,
    with ``settings.workers`` in-process workers (and ``registry``, when given: ``flowyard
    serve`` passes the one its preflight loaded, so node packs load and report once); a
    given one is ``app.state.container`` from the start."""
    settings = settings or (container.settings if container else Settings())
    # Parsed now: a wrong limit, proxy or storage setting fails the start, not a request.
    rate_limits = RateLimits.from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = container is None
        built = container or await build(settings, registry=registry)
        app.state.container = built
        built.service.changes.enable()  # an API process hears other processes' changes
        built.foreground.serving = True  # its workers put the requests first
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
        # The first worker brings the process's scheduler and trigger dispatcher along.
        tasks = [asyncio.create_task(w.run(), name=f"worker-{w.id}") for w in workers]
        app.state.workers = workers  # stopped early by begin_shutdown()
        # Runs started by other processes wake these workers too (PostgreSQL).
        listener = await built.listen_for_work() if workers else None
        try:
            yield
        finally:
            for worker in workers:
                worker.stop()
            if listener is not None:
                await listener.close()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if owned:
                await built.close()
            await rate_limits.close()

    app = FastAPI(
        title="flowyard",
        # The version of the API (its /api/v1 contract), not of the build: the document is
        # public, and the build is told only through /metrics (flowyard_build_info).
        version=API_VERSION,
        description="Durable workflow automation engine. Errors are RFC 9457 problem details.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,  # FastAPI's pages load their assets from a CDN: see api/docs.py
        redoc_url=None,
        dependencies=[Depends(authorize)],
    )
    problems.install(app)
    openapi.install(app)  # problem responses, security and examples completed from RULES
    docs.install(app)  # /docs and /redoc with local assets
    # WebSockets authenticate in the stream router (api/stream.py), with the same checks.

    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        # A campaign's items (50,000 lines of NDJSON) are larger than any other body.
        overrides={f"{API_PREFIX}/campaigns": settings.max_campaign_bytes},
    )
    app.add_middleware(AuditMiddleware, trusted_proxies=rate_limits.trusted_proxies)
    app.state.rate_limits = rate_limits  # also the client address of logins and the audit
    if container is not None:
        # At once, not only in the lifespan: a client that runs no lifespan (an in-process
        # ASGI transport) can use the app as soon as it is made.
        app.state.container = container
    if settings.rate_limit_enabled:
        # Outside the audit (refusals are not audited), inside CORS (a 429 carries CORS
        # headers, so a browser script can read Retry-After) and metrics (429s are counted).
        app.add_middleware(RateLimitMiddleware, limits=rate_limits)
    cors.install(app, settings)
    if settings.metrics_enabled:
        # Outside the others: also counts requests the body limit rejects.
        app.add_middleware(HttpMetricsMiddleware)
    # Outermost: every answer carries them, refusals (413, 429) and CORS preflights included.
    app.add_middleware(SecurityHeadersMiddleware)
    # Around everything: the embedded workers yield to a request from its first byte.
    app.add_middleware(ForegroundMiddleware)

    app.include_router(system.router)
    app.include_router(system.router, prefix=API_PREFIX, include_in_schema=False)
    app.include_router(system.registry_router, prefix=API_PREFIX)
    if settings.metrics_enabled:
        app.include_router(metrics.router)
    app.include_router(workflows.router, prefix=API_PREFIX)
    app.include_router(drafts.router, prefix=API_PREFIX)
    app.include_router(lifecycle.router, prefix=API_PREFIX)
    app.include_router(signals.router, prefix=API_PREFIX)
    app.include_router(correlations.router, prefix=API_PREFIX)
    app.include_router(runs.router, prefix=API_PREFIX)
    app.include_router(stream.router, prefix=API_PREFIX)
    for security_router in (auth, users, api_keys, audit):
        app.include_router(security_router.router, prefix=API_PREFIX)
    app.include_router(credentials.router, prefix=API_PREFIX)
    app.include_router(quotas.router, prefix=API_PREFIX)
    app.include_router(hooks.router, prefix=API_PREFIX)
    app.include_router(hook_delivery.router, prefix=API_PREFIX)
    app.include_router(campaigns.router, prefix=API_PREFIX)
    app.include_router(event_triggers.router, prefix=API_PREFIX)
    app.include_router(schedules.router, prefix=API_PREFIX)
    # Last: its deep-link fallback answers any GET path that no route above took.
    console.install(app)
    return app


def begin_shutdown(app: FastAPI) -> None:
    """The server stopped accepting connections: the in-process workers stop claiming now
    and drain during the server's grace period, not in a second one after it (the lifespan
    then only waits for them)."""
    for worker in getattr(app.state, "workers", ()):
        worker.stop()


class StartupRefused(RuntimeError):
    """The server must not start as configured (the message says what to change)."""


async def check_first_start(container: Container) -> None:
    """Refuse (:class:`StartupRefused`, one clear line) a ``FLOWYARD_ADMIN_PASSWORD`` that the
    first start would refuse as too weak; ``flowyard serve`` asks before it starts serving."""
    secret = container.settings.admin_password
    if secret is None or await container.auth.has_users():
        return
    try:
        container.auth.check_password(secret.get_secret_value(), "admin")
    except InvalidInput as exc:
        reasons = "; ".join(p.message for p in exc.problems) or exc.message
        raise StartupRefused(
            f"FLOWYARD_ADMIN_PASSWORD is too weak for the first admin: {reasons.rstrip('.')}. "
            "Set a stronger one, or unset it to get a random password printed once."
        ) from None


async def first_start(container: Container) -> None:
    """With no user at all, create ``admin``: with ``FLOWYARD_ADMIN_PASSWORD``, or with a
    random password written once to stderr (never logged). A weak
    ``FLOWYARD_ADMIN_PASSWORD`` stops the start (:class:`StartupRefused`)."""
    secret = container.settings.admin_password
    if secret is not None and await container.auth.has_users():
        # Said at every start, never the value: the variable only seeds an empty database.
        _log.warning(
            "FLOWYARD_ADMIN_PASSWORD is set but ignored: this database already has users, "
            "so no admin is created and no password is changed (change a password with "
            "POST /api/v1/auth/password, or an admin's PATCH /api/v1/users/{id}); unset it "
            "to silence this warning"
        )
    try:
        await check_first_start(container)
    except StartupRefused as exc:
        _log.error("%s", exc)
        raise
    password = await container.auth.ensure_admin(secret.get_secret_value() if secret else None)
    if password is not None:
        sys.stderr.write(
            "flowyard: first start: created user 'admin' with password "
            f"{password}\n(shown once; change it with POST /api/v1/auth/password)\n"
        )
        sys.stderr.flush()
