"""Request and response models of the API (separate from storage records)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from flowyard.domain.records import (
    EventRecord,
    RunRecord,
    StepRecord,
    VersionRecord,
    WorkflowRecord,
)

T = TypeVar("T")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class WorkflowPublic(_Out):
    """A workflow and its newest version number."""

    id: str
    name: str
    description: str | None = None
    latest_version: int
    archived: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: WorkflowRecord) -> WorkflowPublic:
        """From a store record."""
        return cls.model_validate(record)


class VersionPublic(_Out):
    """One immutable version."""

    workflow_id: str
    version: int
    checksum: str
    created_at: datetime
    created_by: str | None = None
    definition: dict[str, Any]

    @classmethod
    def of(cls, record: VersionRecord) -> VersionPublic:
        """From a store record."""
        return cls.model_validate(record)


class WorkflowWithVersion(BaseModel):
    """Answer to creating or updating a workflow."""

    workflow: WorkflowPublic
    version: VersionPublic
    created: bool = Field(description="False when the definition equals the latest version.")


class Page(BaseModel, Generic[T]):
    """A page of items with the cursor of the next page (null at the end)."""

    items: list[T]
    next_cursor: str | None = None


class ProblemItem(BaseModel):
    """One problem, located by a JSON pointer."""

    pointer: str
    message: str
    code: str


class ValidationReport(BaseModel):
    """Answer of ``POST /workflows/validate``."""

    valid: bool
    errors: list[ProblemItem]


class StartRun(BaseModel):
    """Start a run."""

    model_config = ConfigDict(extra="forbid")

    input: Any = Field(
        default_factory=dict,
        description="The run input (checked against the workflow's input_schema).",
    )
    vars: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the workflow vars."
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Starting twice with one key returns the first run.",
    )
    version: int | None = Field(None, ge=1, description="Pin a version; latest when omitted.")


class StepPublic(_Out):
    """One step of a run."""

    id: int
    node_id: str
    node_type: str
    branch: str
    iteration: int
    status: str
    attempt: int
    available_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: str | None
    output: Any = None
    error: dict[str, Any] | None = None
    recoveries: int

    @classmethod
    def of(cls, record: StepRecord) -> StepPublic:
        """From a store record."""
        return cls.model_validate(record)


class EventPublic(_Out):
    """One history entry."""

    id: int
    run_id: str
    step_id: int | None
    type: str
    data: dict[str, Any]
    actor: str | None
    created_at: datetime

    @classmethod
    def of(cls, record: EventRecord) -> EventPublic:
        """From a store record."""
        return cls.model_validate(record)


class RunPublic(_Out):
    """A run's status and result."""

    id: str
    workflow_id: str
    workflow_version: int
    status: str
    input: Any = None
    vars: dict[str, Any]
    output: Any = None
    error: dict[str, Any] | None = None
    error_type: str | None = Field(
        None, description="Type of the error that ended the run (e.g. http.400); filterable."
    )
    idempotency_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, record: RunRecord) -> RunPublic:
        """From a store record."""
        return cls.model_validate(record)


class RunDetailPublic(RunPublic):
    """A run with its steps and events."""

    steps: list[StepPublic]
    events: list[EventPublic]


class ProblemDetails(BaseModel):
    """An RFC 9457 problem (``application/problem+json``); extension members may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="Stable URI of the problem type.")
    title: str
    status: int
    detail: str


class CancelRun(BaseModel):
    """Optional body of ``POST /runs/{id}/cancel``."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(
        None, max_length=500, description="Why the run is cancelled (kept in its history)."
    )


class BulkRetryRequest(BaseModel):
    """Which ended runs to retry (the dead-letter queue)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["failed", "timed_out", "cancelled"] = Field(
        "failed", description="Status of the runs to retry."
    )
    workflow: str | None = Field(
        None, min_length=1, max_length=200, description="Workflow id or name."
    )
    error_type: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Error type, exact (`http.400`) or a prefix ending in `*` (`http.*`).",
    )
    limit: int = Field(100, ge=1, le=1000, description="At most this many runs, newest first.")


class SkippedRun(BaseModel):
    """A matched run that was not retried, and why."""

    run_id: str
    reason: str


class BulkRetryResult(BaseModel):
    """Outcome of a bulk retry."""

    matched: int = Field(description="Runs that matched the filter (up to the limit).")
    retried: list[str] = Field(description="Ids of the runs started again.")
    skipped: list[SkippedRun]
