"""Dependency aliases for routes.

Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in its thread
pool, one thread hop per dependency per request, for what is an attribute read."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from flowyard.api.security import PrincipalDep, audit_dependency
from flowyard.bootstrap import Container
from flowyard.domain.auth import AuditEntry
from flowyard.service import FlowyardService


async def get_container(request: Request) -> Container:
    """The process container built in the app lifespan."""
    container: Container = request.app.state.container
    return container


async def get_service(request: Request) -> FlowyardService:
    """The application service (served by an API: it hears other processes' changes)."""
    container: Container = request.app.state.container
    container.service.changes.enable()
    return container.service


ContainerDep = Annotated[Container, Depends(get_container)]
ServiceDep = Annotated[FlowyardService, Depends(get_service)]


async def get_actor(principal: PrincipalDep) -> str:
    """Who is asking, as recorded in run events and the audit log: ``user:<name>`` or
    ``key:<prefix>``."""
    return principal.actor


ActorDep = Annotated[str, Depends(get_actor)]

#: The request's audit entry (None for reads): pass it on as ``audit=`` to the change.
AuditDep = Annotated[AuditEntry | None, Depends(audit_dependency)]
