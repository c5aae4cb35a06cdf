"""Definitions: workflows and their immutable versions."""

from __future__ import annotations

from typing import Any, Protocol

from flowyard.domain.auth import AuditEntry
from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import (
    VersionRecord,
    WorkflowRecord,
)


class WorkflowStore(Protocol):
    """Workflows and their versions."""

    async def create_workflow(
        self,
        name: str,
        description: str | None,
        definition: dict[str, Any],
        actor: str | None,
        *,
        audit: AuditEntry | None = None,
    ) -> tuple[WorkflowRecord, VersionRecord]:
        """Create a workflow with version 1 (Conflict if the name exists)."""
        ...

    async def add_version(
        self,
        workflow_id: WorkflowId,
        definition: dict[str, Any],
        actor: str | None,
        *,
        expected_latest: int | None = None,
        expected_archived: bool | None = None,
        audit: AuditEntry | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Add a version; returns (version, created). An identical definition returns the
        latest version with created=False. PreconditionFailed (a Conflict) when
        ``expected_latest`` / ``expected_archived`` do not hold, checked atomically with the
        write."""
        ...

    async def archive_workflow(
        self,
        workflow_id: WorkflowId,
        *,
        expected_latest: int | None = None,
        expected_archived: bool | None = None,
        audit: AuditEntry | None = None,
    ) -> WorkflowRecord:
        """Archive a workflow (NotFound): hidden from lists, refuses new runs; a new version
        un-archives it. Archiving an archived workflow changes nothing. PreconditionFailed as
        in :meth:`add_version`."""
        ...

    async def get_workflow(self, ref: str) -> WorkflowRecord:
        """A workflow by id or name (NotFound)."""
        ...

    async def list_workflows(
        self, *, limit: int = 50, after: str | None = None, include_archived: bool = False
    ) -> list[WorkflowRecord]:
        """Workflows by name, after a name cursor."""
        ...

    async def get_version(
        self, workflow_id: WorkflowId, version: int | None = None
    ) -> VersionRecord:
        """A version (latest when None) (NotFound)."""
        ...

    async def list_versions(
        self, workflow_id: WorkflowId, *, limit: int | None = None, before: int | None = None
    ) -> list[VersionRecord]:
        """Versions newest first (all without ``limit``), below a version-number cursor."""
        ...
