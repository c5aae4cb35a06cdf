"""Health checks and the node-type registry."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from flowyard import __version__
from flowyard.api.deps import ContainerDep
from flowyard.api.problems import problem
from flowyard.domain.errors import StoreUnavailable

router = APIRouter(tags=["system"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
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


@router.get("/node-types")
async def node_types(container: ContainerDep) -> list[dict[str, Any]]:
    """Every registered node type with its config JSON Schema."""
    return container.registry.describe()
