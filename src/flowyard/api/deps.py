"""Dependency aliases for routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from flowyard.api.security import PrincipalDep, audit_of
from flowyard.bootstrap import Container
from flowyard.domain.auth import AuditEntry
from flowyard.service import FlowyardService


def get_container(request: Request) -> Container:
    """The process container built in the app lifespan."""
    container: Container = request.app.state.container
    return container


def get_service(request: Request) -> FlowyardService:
    """The application service."""
    return get_container(request).service


ContainerDep = Annotated[Container, Depends(get_container)]
ServiceDep = Annotated[FlowyardService, Depends(get_service)]


def get_actor(principal: PrincipalDep) -> str:
    """Who is asking, as recorded in run events and the audit log: ``user:<name>`` or
    ``key:<prefix>``."""
    return principal.actor


ActorDep = Annotated[str, Depends(get_actor)]

#: The request's audit entry (None for reads): pass it on as ``audit=`` to the change.
AuditDep = Annotated[AuditEntry | None, Depends(audit_of)]
