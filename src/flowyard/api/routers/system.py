"""Health checks, the node-type registry and the node packs it loaded."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from flowyard.api.deps import ContainerDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import PROBLEM_JSON, TYPE_BASE, problem, problem_response
from flowyard.api.schemas import Health, NodeTypePublic, Page, PluginPublic, Readiness, paged

router = APIRouter(tags=["system"], route_class=StrictJSONRoute)

NOT_READY = problem_response(
    503, "Not ready: the database does not answer or migrations are pending."
)
NOT_READY["content"][PROBLEM_JSON]["example"] = {
    "type": TYPE_BASE + "not-ready",
    "title": "Not ready",
    "status": 503,
    "detail": "database migrations are pending",
}


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up (no database access). It does not tell the version: that is the
    ``flowyard_build_info`` series of ``GET /metrics``, for those who may read metrics."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    responses={503: NOT_READY},
)
async def readyz(container: ContainerDep) -> JSONResponse:
    """The database answers and its schema is current."""
    reason = await container.admin.not_ready()
    if reason is not None:
        return problem(503, "not-ready", "Not ready", reason)
    return JSONResponse({"status": "ready", "database": container.admin.dialect})


#: Served under ``/api/v1`` only (the health checks above also at the root, for probes).
registry_router = APIRouter(tags=["node-types"], route_class=StrictJSONRoute)


@registry_router.get("/node-types", response_model=Page[NodeTypePublic], summary="List node types")
async def node_types(
    container: ContainerDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=128, description="`next_cursor` (a type name)")
    ] = None,
) -> Page[NodeTypePublic]:
    """Every registered node type with the JSON Schema of its ``config``, by type name, a
    page at a time."""
    rows = [d for d in container.registry.describe() if cursor is None or d["type"] > cursor]
    items, next_cursor = paged(rows[: limit + 1], limit, lambda d: d["type"])
    return Page[NodeTypePublic](
        items=[NodeTypePublic.model_validate(d) for d in items], next_cursor=next_cursor
    )


@registry_router.get("/plugins", response_model=Page[PluginPublic], summary="List node packs")
async def plugins(
    container: ContainerDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 100,
    cursor: Annotated[
        str | None,
        Query(max_length=8, pattern=r"^[0-9]+$", description="`next_cursor` (a position)"),
    ] = None,
) -> Page[PluginPublic]:
    """Every node pack (``flowyard.nodes`` entry point) the server found at start, in load
    order: ``loaded`` with the types it registered, ``failed`` with its error (the server
    runs without it), or ``disabled`` (third-party packs while ``FLOWYARD_LOAD_PLUGINS`` is
    false). A process has a handful of packs: the cursor is a position in that order."""
    start = int(cursor) if cursor is not None else 0
    found = container.registry.plugins()
    items = [PluginPublic.model_validate(p) for p in found[start : start + limit]]
    more = start + limit < len(found)
    return Page[PluginPublic](items=items, next_cursor=str(start + limit) if more else None)
