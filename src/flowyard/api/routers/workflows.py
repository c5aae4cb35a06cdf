"""/workflows: definitions and their versions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status

from flowyard.api.deps import ActorDep, ServiceDep
from flowyard.api.schemas import (
    Page,
    ProblemItem,
    ValidationReport,
    VersionPublic,
    WorkflowPublic,
    WorkflowWithVersion,
)
from flowyard.domain.errors import NotFound

router = APIRouter(prefix="/workflows", tags=["workflows"])

EXAMPLE = {
    "name": "hello",
    "start": "start",
    "nodes": [
        {"id": "start", "type": "trigger", "next": "greet"},
        {
            "id": "greet",
            "type": "set",
            "config": {"values": {"greeting": "Hello {{ input.name }}"}},
            "next": "done",
        },
        {"id": "done", "type": "end", "config": {"output": "{{ steps.greet.output }}"}},
    ],
}
DefinitionBody = Annotated[
    dict[str, Any],
    Body(
        description="A workflow definition (see schema/workflow.schema.json).",
        openapi_examples={"hello": {"summary": "Three nodes", "value": EXAMPLE}},
    ),
]


@router.post("/validate", response_model=ValidationReport)
async def validate_workflow(service: ServiceDep, definition: DefinitionBody) -> ValidationReport:
    """Validate a definition without saving it; every problem comes with a JSON pointer."""
    result = service.validate(definition)
    return ValidationReport(
        valid=result.ok, errors=[ProblemItem(**p.as_dict()) for p in result.problems]
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WorkflowWithVersion)
async def create_workflow(
    service: ServiceDep, actor: ActorDep, definition: DefinitionBody, response: Response
) -> WorkflowWithVersion:
    """Create a workflow from a definition (its version 1). 422 lists every problem."""
    record, version = await service.create_workflow(definition, actor)
    response.headers["Location"] = f"/api/v1/workflows/{record.id}"
    response.headers["ETag"] = f'"{version.version}"'
    return WorkflowWithVersion(
        workflow=WorkflowPublic.of(record), version=VersionPublic.of(version), created=True
    )


@router.get("", response_model=Page[WorkflowPublic])
async def list_workflows(
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    include_archived: bool = False,
) -> Page[WorkflowPublic]:
    """Workflows by name."""
    items = await service.store.list_workflows(
        limit=limit, after=cursor, include_archived=include_archived
    )
    next_cursor = items[-1].name if len(items) == limit else None
    return Page[WorkflowPublic](
        items=[WorkflowPublic.of(w) for w in items], next_cursor=next_cursor
    )


@router.get("/{workflow_ref}", response_model=WorkflowWithVersion)
async def get_workflow(
    service: ServiceDep, workflow_ref: str, response: Response
) -> WorkflowWithVersion:
    """A workflow (by id or name) with its latest version."""
    record = await service.store.get_workflow(workflow_ref)
    version = await service.store.get_version(record.id)
    response.headers["ETag"] = f'"{version.version}"'
    return WorkflowWithVersion(
        workflow=WorkflowPublic.of(record), version=VersionPublic.of(version), created=False
    )


@router.put("/{workflow_ref}", response_model=WorkflowWithVersion)
async def update_workflow(
    service: ServiceDep,
    actor: ActorDep,
    workflow_ref: str,
    definition: DefinitionBody,
    response: Response,
) -> WorkflowWithVersion:
    """Save a new version (versions are immutable). An unchanged definition makes none."""
    record, version, created = await service.update_workflow(workflow_ref, definition, actor)
    response.headers["ETag"] = f'"{version.version}"'
    return WorkflowWithVersion(
        workflow=WorkflowPublic.of(record), version=VersionPublic.of(version), created=created
    )


@router.delete("/{workflow_ref}", response_model=WorkflowPublic)
async def archive_workflow(service: ServiceDep, workflow_ref: str) -> WorkflowPublic:
    """Archive a workflow: it leaves the list and refuses new runs; its versions and runs stay.
    Saving a new version brings it back."""
    record = await service.store.get_workflow(workflow_ref)
    return WorkflowPublic.of(await service.store.archive_workflow(record.id))


@router.get("/{workflow_ref}/versions", response_model=list[VersionPublic])
async def list_versions(service: ServiceDep, workflow_ref: str) -> list[VersionPublic]:
    """Every version, newest first."""
    record = await service.store.get_workflow(workflow_ref)
    return [VersionPublic.of(v) for v in await service.store.list_versions(record.id)]


@router.get("/{workflow_ref}/versions/{version}", response_model=VersionPublic)
async def get_version(service: ServiceDep, workflow_ref: str, version: int) -> VersionPublic:
    """One version."""
    record = await service.store.get_workflow(workflow_ref)
    if version < 1:
        raise NotFound(f"workflow {workflow_ref!r} has no version {version}")
    return VersionPublic.of(await service.store.get_version(record.id, version))
