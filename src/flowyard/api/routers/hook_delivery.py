"""The public URLs of webhook triggers: ``POST /hooks/{hook_id}`` and
``/hooks/by-path/{path}`` (and Meta's verification request), authenticated by each hook's own
scheme, never by a user token. Every refusal is problem+json and audited (reason, hook,
address). The hooks' management routes are in :mod:`flowyard.api.routers.hooks`."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from limits import RateLimitItem
from limits.errors import StorageError
from pydantic import BaseModel, ConfigDict, Field

from flowyard.api import problems, stream
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.ratelimit import RateLimits, parse_limits
from flowyard.api.security import audit_of
from flowyard.bootstrap import Container
from flowyard.domain.auth import AuditEntry
from flowyard.domain.hooks import HookRecord, HookRefused, RefusalReason, RespondMode
from flowyard.service.hooks import Delivered, DeliveryRequest, HookService

router = APIRouter(tags=["hooks"], route_class=StrictJSONRoute)


class DeliveryPublic(BaseModel):
    """What a delivery started (202), found (a repeat: 200), or how its run ended (200)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"run_id": "run_01JH5K2V3M4N5P6Q7R8S9T0VWX", "status": "pending", "created": True}
            ]
        }
    )

    run_id: str | None = Field(description="The run started, found or signalled.")
    status: str | None = Field(description="The run's status (null: a repeated signal).")
    created: bool = Field(description="False for a repeated delivery id: nothing was done.")
    output: Any = None
    error: Any = None
    signal_id: int | None = Field(None, description="A signal action: the signal delivered.")
    woke: bool | None = Field(None, description="A signal action: a waiting step took it.")
    debounced: bool | None = Field(None, description="Debounce: the run starts at `fire_at`.")
    fire_at: datetime | None = None
    throttled: bool | None = Field(
        None, description="Throttle: over the limit, dropped (nothing will start)."
    )
    retry_after_s: float | None = Field(None, description="Throttle: when the window frees.")


def hooks_of(request: Request) -> HookService:
    """The app's hook service."""
    container: Container = request.app.state.container
    return container.hooks


#: What both public delivery routes declare.
_DELIVERY: dict[str, Any] = {
    "status_code": status.HTTP_202_ACCEPTED,
    "response_model": DeliveryPublic,
    "responses": {
        200: {"description": "A repeated delivery (its first run), or the run's end."},
        202: {"description": "A run was started (or a signal delivered).", "model": DeliveryPublic},
        204: {"description": "A run was started; the hook answers without a body."},
        **documented(401, 404, 409, 413, 415, 422, 429, 503),
    },
}


@router.post(
    "/hooks/{hook_id}",
    summary="Deliver to a webhook trigger (public: the hook's scheme authenticates)",
    **_DELIVERY,
)
async def deliver(request: Request, hook_id: str) -> Response:
    """Start a run of the hook's workflow with the request mapped to its input."""
    return await _deliver(request, hook_id=hook_id)


@router.post(
    "/hooks/by-path/{path}",
    summary="Deliver to a webhook trigger by its readable path",
    **_DELIVERY,
)
async def deliver_by_path(request: Request, path: str) -> Response:
    """The same as ``POST /hooks/{hook_id}``; the path is not a secret, the scheme is."""
    return await _deliver(request, path=path)


@router.get(
    "/hooks/by-path/{path}",
    summary="Meta's verification request to a hook's readable path",
    response_class=PlainTextResponse,
    responses=documented(403, 404),
)
async def verify_by_path(request: Request, path: str) -> Response:
    """Answer ``hub.challenge`` when ``hub.verify_token`` is the hook's (public)."""
    return await verify(request, path=path)


def _refused(request: Request, exc: HookRefused, hook: HookRecord | None) -> JSONResponse:
    """The refusal's problem answer; its audit entry says why (never the body or the
    signature)."""
    entry = audit_of(request) or AuditEntry(action="hook.verify", source_ip=_client(request))
    entry.outcome = "refused"
    entry.target_type = "hook"
    entry.target_id = hook.name if hook is not None else None
    entry.detail = {"reason": exc.reason.value, "hook_id": hook.id if hook is not None else None}
    request.state.hook_refusal = entry
    extra: dict[str, Any] = {"reason": exc.reason.value}
    if exc.problems:
        extra["errors"] = exc.problems
    response = problems.problem(exc.status, exc.code, exc.message, exc.message, **extra)
    if exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def _client(request: Request) -> str | None:
    limits: RateLimits = request.app.state.rate_limits
    return limits.client_ip(request.scope) if request.scope.get("client") else None


@functools.lru_cache(maxsize=256)
def _limits(value: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_limits("rate_limit", value))


async def _rate_limit(request: Request, hook: HookRecord) -> None:
    container: Container = request.app.state.container
    if not container.settings.rate_limit_enabled:
        return
    limits: RateLimits = request.app.state.rate_limits
    items = _limits(hook.config.rate_limit or container.settings.hook_rate_limit)
    try:
        verdict = await limits.hit(items, "hook", hook.id)
    except StorageError as exc:
        limits.storage_failed(exc)
        return
    if not verdict.allowed:
        limits.log_refusal(f"hook {hook.name}", verdict, "per-hook")
        raise HookRefused(
            RefusalReason.RATE_LIMITED,
            f"more than {verdict.limit} deliveries to this hook in the window",
            retry_after_s=verdict.retry_after,
        )


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) once it is over ``limit`` bytes, declared or received."""
    declared = request.headers.get("content-length", "")
    too_large = HookRefused(RefusalReason.TOO_LARGE, f"the body is over {limit} bytes")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _delivery(request: Request, body: bytes) -> DeliveryRequest:
    return DeliveryRequest(
        path=request.url.path,
        url=str(request.url),
        query_string=request.url.query,
        query=request.query_params.multi_items(),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        content_type=request.headers.get("content-type"),
    )


async def _deliver(
    request: Request, *, hook_id: str | None = None, path: str | None = None
) -> Response:
    svc = hooks_of(request)
    hook: HookRecord | None = None
    audit = audit_of(request)
    try:
        hook = await svc.find(hook_id=hook_id, path=path)
        if audit is not None:
            audit.actor = f"hook:{hook.name}"
            audit.detail = {"hook": hook.id}
        await _rate_limit(request, hook)
        body = await _read_body(request, hook.config.max_body_bytes)
        delivered = await svc.deliver(hook, _delivery(request, body), audit=audit)
    except HookRefused as exc:
        return _refused(request, exc, hook)
    return await _answer(request, delivered)


async def _answer(request: Request, delivered: Delivered) -> Response:
    respond = delivered.hook.config.respond
    run, created = delivered.run, delivered.created
    container: Container = request.app.state.container
    match respond.mode:
        case RespondMode.FIXED:
            return Response(
                content=respond.body or b"",
                status_code=respond.status,
                media_type=respond.content_type if respond.status != 204 else None,
            )
        case RespondMode.ON_FINISH if run is not None:
            hub = stream.hub_of(request.app, container)
            run = await stream.wait_for_end(
                hub, container.service.get_run_record, run.id, respond.timeout_s
            )
            done = run.status.is_terminal
            answer = DeliveryPublic(
                run_id=run.id,
                status=run.status.value,
                created=created,
                output=run.output if done else None,
                error=run.error if done else None,
            )
            code = status.HTTP_200_OK if done else status.HTTP_202_ACCEPTED
            return JSONResponse(answer.model_dump(mode="json"), status_code=code)
        case _ if delivered.gated is not None and delivered.gated.outcome != "started":
            gated = delivered.gated
            answer = DeliveryPublic(
                run_id=None,
                status=None,
                created=False,
                debounced=gated.outcome == "debounced" or None,
                fire_at=gated.fire_at,
                throttled=gated.outcome == "throttled" or None,
                retry_after_s=gated.retry_after_s,
            )
            return JSONResponse(answer.model_dump(mode="json"), status_code=202)
        case _:
            signal = delivered.signal
            answer = DeliveryPublic(
                run_id=run.id if run is not None else None,
                status=run.status.value if run is not None else None,
                created=created,
                signal_id=signal.id if signal is not None else None,
                woke=delivered.woke if signal is not None else None,
            )
            code = status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
            return JSONResponse(answer.model_dump(mode="json"), status_code=code)


async def verify(
    request: Request, *, hook_id: str | None = None, path: str | None = None
) -> Response:
    svc = hooks_of(request)
    hook: HookRecord | None = None
    try:
        hook = await svc.find(hook_id=hook_id, path=path)
        challenge = await svc.subscription_challenge(hook, dict(request.query_params))
    except HookRefused as exc:
        response = _refused(request, exc, hook)
        container: Container = request.app.state.container
        # A read is not audited by the middleware: this refusal is written here.
        await container.admin.append_audit(request.state.hook_refusal)
        return response
    return PlainTextResponse(challenge)
