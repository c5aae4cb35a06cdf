"""/hooks: webhook triggers, managed by editors (create, list, read, change, delete). Their
public delivery URLs are in :mod:`flowyard.api.routers.hook_delivery`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from flowyard.api.deps import ActorDep, AuditDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.routers.hook_delivery import hooks_of, verify
from flowyard.api.schemas import Page, paged
from flowyard.domain.hooks import (
    INPUT_HELP,
    HookAction,
    HookAuth,
    HookDedupe,
    HookRecord,
    HookRespond,
)
from flowyard.domain.triggers import Debounce, Throttle
from flowyard.service.hooks import parse_config

router = APIRouter(tags=["hooks"], route_class=StrictJSONRoute)

_CONFIG_FIELDS = (
    "auth",
    "input",
    "dedupe",
    "respond",
    "action",
    "max_body_bytes",
    "rate_limit",
    "debounce",
    "throttle",
)
_EXAMPLE: dict[str, Any] = {
    "workflow": "lead-routing",
    "name": "crm-leads",
    "path": "crm-leads",
    "auth": {"scheme": "hmac", "credential": "crm-webhook"},
    "dedupe": {"header": "X-Delivery-Id", "window_s": 86400},
    "respond": "accepted",
}


class HookFields(BaseModel):
    """The configuration fields of a hook (see docs/triggers.md); in a change, those given
    replace the stored ones."""

    model_config = ConfigDict(extra="forbid")

    auth: HookAuth | None = None
    input: Any = Field(None, description=INPUT_HELP)
    dedupe: HookDedupe | None = None
    respond: HookRespond | None = Field(
        None, description='How a delivery is answered ("on_finish" is short for {"mode": ...}).'
    )
    action: HookAction | None = None
    max_body_bytes: int | None = Field(None, ge=1)
    rate_limit: Annotated[str, Field(max_length=64)] | None = None
    debounce: Debounce | None = None
    throttle: Throttle | None = None


class HookCreate(HookFields):
    """A new hook on a workflow (its latest version is started)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    auth: HookAuth
    workflow: Annotated[str, Field(min_length=1, max_length=200)]
    name: Annotated[str, Field(min_length=1, max_length=63)]
    path: Annotated[str, Field(max_length=100)] | None = None
    enabled: bool = True


class HookPatch(HookFields):
    """Change a hook: only the fields given. ``path: null`` removes the readable path;
    configuration fields replace the stored ones."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"enabled": False}, {"respond": "on_finish"}]},
    )

    enabled: bool | None = None
    workflow: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    path: Annotated[str, Field(max_length=100)] | None = None


_PUBLIC_EXAMPLE: dict[str, Any] = {
    "id": "hk_3qLx0Zr9VbT2mN8sYc4KfWp1aE6uGh7D",
    "name": "crm-leads",
    "workflow_id": "wf_01jh5k2v3m4n5p6q7r8s9t0vwx",
    "workflow": "lead-routing",
    "path": "crm-leads",
    "enabled": True,
    "url": "/api/v1/hooks/hk_3qLx0Zr9VbT2mN8sYc4KfWp1aE6uGh7D",
    "path_url": "/api/v1/hooks/by-path/crm-leads",
    "config": {
        "auth": {"scheme": "hmac", "credential": "crm-webhook", "tolerance_s": 300},
        "input": None,
        "dedupe": {"header": "X-Delivery-Id", "body": None, "window_s": 86400},
        "respond": {"mode": "accepted", "timeout_s": 10.0},
        "action": {"signal": None},
        "max_body_bytes": 262144,
        "rate_limit": None,
    },
    "created_at": "2026-12-01T09:00:00Z",
    "updated_at": "2026-12-01T09:00:00Z",
    "created_by": "user:admin",
}


class HookPublic(BaseModel):
    """A hook: its public URL and configuration (no secret: the credential is a name)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PUBLIC_EXAMPLE]})

    id: str
    name: str
    workflow_id: str
    workflow: str
    path: str | None
    enabled: bool
    url: str = Field(description="The public URL, relative to the API's host.")
    path_url: str | None
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    created_by: str | None

    @classmethod
    def of(cls, hook: HookRecord) -> HookPublic:
        """From the store's record."""
        return cls(
            id=hook.id,
            name=hook.name,
            workflow_id=hook.workflow_id,
            workflow=hook.workflow_name,
            path=hook.path,
            enabled=hook.enabled,
            url=f"/api/v1/hooks/{hook.id}",
            path_url=f"/api/v1/hooks/by-path/{hook.path}" if hook.path else None,
            config=hook.config.model_dump(mode="json"),
            created_at=hook.created_at,
            updated_at=hook.updated_at,
            created_by=hook.created_by,
        )


def fields_given(
    body: BaseModel, names: tuple[str, ...], base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The fields ``names`` the request gave, as JSON, over ``base`` (the stored ones); a
    field given as null is dropped (``input`` stays: null is its default)."""
    raw = dict(base or {})
    for name in names:
        if name in body.model_fields_set:
            value = getattr(body, name)
            raw[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return {k: v for k, v in raw.items() if v is not None or k == "input"}


# -- management --------------------------------------------------------------------------


@router.post(
    "/hooks",
    status_code=status.HTTP_201_CREATED,
    response_model=HookPublic,
    summary="Create a webhook trigger",
    responses=documented(404, 409, 422),
)
async def create_hook(
    request: Request, actor: ActorDep, audit: AuditDep, body: HookCreate
) -> HookPublic:
    """A hook on a workflow (editor): its URL starts runs of the workflow's latest version."""
    hook = await hooks_of(request).create(
        name=body.name,
        workflow=body.workflow,
        config=parse_config(fields_given(body, _CONFIG_FIELDS)),
        path=body.path,
        enabled=body.enabled,
        actor=actor,
        audit=audit,
    )
    return HookPublic.of(hook)


@router.get(
    "/hooks",
    response_model=Page[HookPublic],
    summary="List webhook triggers",
    responses=documented(404),
)
async def list_hooks(
    request: Request,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64, description="`next_cursor`")] = None,
) -> Page[HookPublic]:
    """Hooks by name, optionally of one workflow (editor)."""
    rows = await hooks_of(request).list(workflow=workflow, limit=limit + 1, after=cursor)
    items, next_cursor = paged(rows, limit, lambda h: h.name)
    return Page[HookPublic](items=[HookPublic.of(h) for h in items], next_cursor=next_cursor)


@router.get(
    "/hooks/{hook_ref}",
    response_model=HookPublic,
    summary="Get a webhook trigger (or answer Meta's verification request)",
    responses={200: {"content": {"text/plain": {}}}, **documented(404)},
)
async def get_hook(request: Request, hook_ref: str) -> Any:
    """A hook by id or name (editor). With ``hub.mode`` in the query it is Meta's
    subscription check instead (no token): the hook's ``hub.challenge`` answer, as text."""
    if "hub.mode" in request.query_params:
        return await verify(request, hook_id=hook_ref)
    return HookPublic.of(await hooks_of(request).get(hook_ref))


@router.patch(
    "/hooks/{hook_ref}",
    response_model=HookPublic,
    summary="Change a webhook trigger",
    responses=documented(404, 409, 422),
)
async def update_hook(
    request: Request, audit: AuditDep, hook_ref: str, body: HookPatch
) -> HookPublic:
    """Enable, disable, move or reconfigure a hook (editor)."""
    svc = hooks_of(request)
    config = None
    if any(name in body.model_fields_set for name in _CONFIG_FIELDS):
        current = (await svc.get(hook_ref)).config.model_dump(mode="json")
        config = parse_config(fields_given(body, _CONFIG_FIELDS, current))
    path_given = "path" in body.model_fields_set
    hook = await svc.update(
        hook_ref,
        enabled=body.enabled,
        path=body.path if path_given else None,
        clear_path=path_given and body.path is None,
        config=config,
        workflow=body.workflow,
        audit=audit,
    )
    return HookPublic.of(hook)


@router.delete(
    "/hooks/{hook_ref}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a webhook trigger",
    responses=documented(404),
)
async def delete_hook(request: Request, audit: AuditDep, hook_ref: str) -> Response:
    """Delete a hook (editor): its URL answers 404 from now on."""
    await hooks_of(request).delete(hook_ref, audit=audit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
