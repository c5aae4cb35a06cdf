"""Health checks and the node-type registry."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from flowyard import __version__
from flowyard.api.deps import ContainerDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import PROBLEM_JSON, TYPE_BASE, problem, problem_response
from flowyard.api.schemas import Health, NodeTypePublic, Readiness
from flowyard.domain.errors import StoreUnavailable

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
    """The process is up (no database access)."""
    return {"status": "ok", "version": __version__}


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    responses={503: NOT_READY},
)
async def readyz(container: ContainerDep) -> JSONResponse:
    """The database answers and its schema is current."""
    try:
        await container.store.ping()
        current = await container.store.schema_is_current()
    except StoreUnavailable as exc:
        return problem(503, "not-ready", "Not ready", str(exc))
    if not current:
        return problem(503, "not-ready", "Not ready", "database migrations are pending")
    return JSONResponse({"status": "ready", "database": container.store.dialect})


@router.get("/node-types", response_model=list[NodeTypePublic], summary="List node types")
async def node_types(container: ContainerDep) -> list[dict[str, Any]]:
    """Every registered node type with its config JSON Schema, by type name."""
    return container.registry.describe()
