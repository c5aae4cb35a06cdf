"""Request and response models of the API (separate from storage records).

Every model a route reads or returns carries an example (``json_schema_extra``), shown in
``/docs``; ``tests/api/test_openapi_docs.py`` walks ``/openapi.json`` to keep it so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from flowyard.domain.definition import MAX_CORRELATION_KEY
from flowyard.domain.records import (
    EventRecord,
    RunRecord,
    StepRecord,
    VersionRecord,
    WorkflowRecord,
)
from flowyard.nodes.registry import PluginStatus

T = TypeVar("T")
R = TypeVar("R")

# -- example values shared by the models' examples ---------------------------------------------

WORKFLOW_ID = "wf_01jh5k2v3m4n5p6q7r8s9t0vwx"
RUN_ID = "run_01jh5m9a7bc2d3e4f5g6h7j8k9"
AT = "2025-01-15T09:30:00Z"
LATER = "2025-01-15T09:30:01Z"

#: A small valid definition (``examples/`` holds real ones).
EXAMPLE_DEFINITION: dict[str, Any] = {
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


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


def example_of(model: type[BaseModel]) -> Any:
    """The first example a model declares (None without one)."""
    extra = model.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    return examples[0] if isinstance(examples, list) and examples else None


#: Bounds of integers that reach the database: ids are 64-bit, versions 32-bit (a larger
#: value is a 422, not a database overflow).
MAX_ID = 2**63 - 1
MAX_VERSION = 2**31 - 1
VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION, description="A version number")]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


WORKFLOW_EXAMPLE: dict[str, Any] = {
    "id": WORKFLOW_ID,
    "name": "hello",
    "description": None,
    "latest_version": 2,
    "archived": False,
    "draft": False,
    "created_at": AT,
    "updated_at": LATER,
}


class WorkflowPublic(_Out):
    """A workflow and its newest version number."""

    model_config = ConfigDict(
        from_attributes=True, json_schema_extra={"examples": [WORKFLOW_EXAMPLE]}
    )

    id: str
    name: str
    description: str | None = None
    latest_version: int
    archived: bool
    draft: bool = Field(
        False,
        description="True while the workflow exists only as a draft: no version yet "
        "(`latest_version` 0); runs refuse it until its draft is published.",
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: WorkflowRecord) -> WorkflowPublic:
        """From a store record."""
        return cls.model_validate(record).model_copy(update={"draft": record.latest_version == 0})


VERSION_EXAMPLE: dict[str, Any] = {
    "workflow_id": WORKFLOW_ID,
    "version": 2,
    "checksum": "9f2c4e1b7a3d5f60",
    "created_at": LATER,
    "created_by": "user:admin",
    "definition": EXAMPLE_DEFINITION,
}


class VersionPublic(_Out):
    """One immutable version."""

    model_config = ConfigDict(
        from_attributes=True, json_schema_extra={"examples": [VERSION_EXAMPLE]}
    )

    workflow_id: str
    version: int
    checksum: str
    created_at: datetime
    created_by: str | None = None
    definition: dict[str, Any]
    layout: dict[str, Any] | None = Field(
        None, description="Node positions on the builder's canvas, published from a draft."
    )

    @classmethod
    def of(cls, record: VersionRecord) -> VersionPublic:
        """From a store record."""
        return cls.model_validate(record)


class WorkflowWithVersion(BaseModel):
    """Answer to creating, reading or updating a workflow. The response's ``ETag`` header
    identifies this state: send it back in ``If-Match`` to update or archive safely."""

    model_config = _examples(
        {"workflow": WORKFLOW_EXAMPLE, "version": VERSION_EXAMPLE, "created": True}
    )

    workflow: WorkflowPublic
    version: VersionPublic | None = Field(
        description="The latest version; null while the workflow exists only as a draft "
        "(`workflow.draft`: read it at `.../draft`)."
    )
    created: bool = Field(description="False when the definition equals the latest version.")


def _page_examples(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """A concrete page (``Page[RunPublic]``) shows one item of its type's example."""
    annotation = cls.model_fields["items"].annotation
    (item_type,) = get_args(annotation) or (None,)
    item = example_of(item_type) if isinstance(item_type, type) else None
    if item is not None:
        schema["examples"] = [{"items": [item], "next_cursor": "opaque-cursor-of-the-next-page"}]


class Page(BaseModel, Generic[T]):
    """A page of items with the cursor of the next page (null on the last page). Pass it
    back as ``cursor`` for the next page; the same filters must be sent again."""

    model_config = ConfigDict(json_schema_extra=_page_examples)

    items: list[T]
    next_cursor: str | None = Field(
        None, description="Cursor of the next page; null when this page is the last."
    )


def paged(
    rows: Sequence[R], limit: int, cursor: Callable[[R], object]
) -> tuple[list[R], str | None]:
    """The first ``limit`` rows and the cursor of the next page.

    Routes ask the store for ``limit + 1`` rows: only a row beyond the page proves that a
    next page exists, so a last page exactly ``limit`` long has no ``next_cursor`` (and no
    client fetches an empty page to find out)."""
    page = list(rows[:limit])
    return page, (str(cursor(page[-1])) if len(rows) > limit and page else None)


class ProblemItem(BaseModel):
    """One problem, located by a JSON pointer."""

    pointer: str
    message: str
    code: str


class ValidationReport(BaseModel):
    """Answer of ``POST /workflows/validate``."""

    model_config = _examples(
        {"valid": True, "errors": []},
        {
            "valid": False,
            "errors": [
                {
                    "pointer": "/nodes/1/next",
                    "message": "no node has id 'nowhere'",
                    "code": "dangling_edge",
                }
            ],
        },
    )

    valid: bool
    errors: list[ProblemItem]


class StartRun(BaseModel):
    """Start a run."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "input": {"email": "lead@example.com", "region": "East Coast"},
                    "vars": {"east_manager": "005xx000001Sv6Q"},
                    "idempotency_key": "lead-42",
                },
                {"input": {"name": "Ada"}, "version": 1},
            ]
        },
    )

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
    version: int | None = Field(
        None, ge=1, le=MAX_VERSION, description="Pin a version; latest when omitted."
    )
    correlation_key: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_CORRELATION_KEY,
        description="The run's business key (signals and actions may address it by this); "
        "without it the definition's correlation.key computes one from the input.",
    )


STEP_EXAMPLE: dict[str, Any] = {
    "id": 1042,
    "node_id": "greet",
    "node_type": "set",
    "branch": "",
    "iteration": 0,
    "status": "succeeded",
    "attempt": 1,
    "available_at": AT,
    "created_at": AT,
    "started_at": AT,
    "finished_at": LATER,
    "lease_owner": None,
    "output": {"greeting": "Hello Ada"},
    "error": None,
    "recoveries": 0,
}


class StepPublic(_Out):
    """One step of a run."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [STEP_EXAMPLE]})

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


EVENT_EXAMPLE: dict[str, Any] = {
    "id": 5311,
    "run_id": RUN_ID,
    "step_id": 1042,
    "type": "step.succeeded",
    "data": {"node_id": "greet", "attempt": 1},
    "actor": None,
    "created_at": LATER,
}


class EventPublic(_Out):
    """One history entry."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [EVENT_EXAMPLE]})

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


RUN_EXAMPLE: dict[str, Any] = {
    "id": RUN_ID,
    "workflow_id": WORKFLOW_ID,
    "workflow_version": 2,
    "status": "succeeded",
    "input": {"name": "Ada"},
    "vars": {},
    "output": {"greeting": "Hello Ada"},
    "error": None,
    "error_type": None,
    "idempotency_key": "lead-42",
    "correlation_key": "+15551230001",
    "parent_run_id": None,
    "parent_step_id": None,
    "created_at": AT,
    "started_at": AT,
    "finished_at": LATER,
    "updated_at": LATER,
}


class RunPublic(_Out):
    """A run's status and result."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [RUN_EXAMPLE]})

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
    correlation_key: str | None = Field(
        None, description="The business key signals and actions may address the run by."
    )
    parent_run_id: str | None = Field(
        None, description="The run whose sub-workflow step started this one (a child run)."
    )
    parent_step_id: int | None = Field(None, description="That sub-workflow step.")
    schedule_id: str | None = Field(
        None, description="The schedule whose tick started the run; filter with ?schedule=."
    )
    campaign_id: str | None = Field(
        None, description="The campaign that started the run; filter with ?campaign=."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, record: RunRecord) -> RunPublic:
        """From a store record."""
        return cls.model_validate(record)


class RunDetailPublic(RunPublic):
    """A run with its steps and (first 1,000) events."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [{**RUN_EXAMPLE, "steps": [STEP_EXAMPLE], "events": [EVENT_EXAMPLE]}]
        },
    )

    steps: list[StepPublic]
    events: list[EventPublic]


class ProblemDetails(BaseModel):
    """An RFC 9457 problem (``application/problem+json``); extension members may follow."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "https://flowyard.dev/problems/not-found",
                    "title": "Not found",
                    "status": 404,
                    "detail": "workflow 'lead-routing' not found",
                }
            ]
        },
    )

    type: str = Field(description="Stable URI of the problem type.")
    title: str
    status: int
    detail: str


class RetryRun(BaseModel):
    """Optional body of ``POST /runs/{id}/retry``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"use_latest_definition": True}]}
    )

    use_latest_definition: bool = Field(
        False,
        description="Move the run to its workflow's latest version first (409 when a node it "
        "must run again is not in that version).",
    )


class CancelRun(BaseModel):
    """Optional body of ``POST /runs/{id}/cancel``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "duplicate lead"}]}
    )

    reason: str | None = Field(
        None, max_length=500, description="Why the run is cancelled (kept in its history)."
    )


class BulkRetryRequest(BaseModel):
    """Which ended runs to retry (the dead-letter queue)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"status": "failed", "workflow": "lead-routing", "error_type": "http.5*"},
                {"status": "timed_out", "limit": 500},
            ]
        },
    )

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

    model_config = _examples(
        {
            "matched": 2,
            "retried": [RUN_ID],
            "skipped": [
                {
                    "run_id": "run_01jh5m9a7bc2d3e4f5g6h7j8ka",
                    "reason": "run run_01jh5m9a7bc2d3e4f5g6h7j8ka has nothing to re-run",
                }
            ],
        }
    )

    matched: int = Field(description="Runs that matched the filter (up to the limit).")
    retried: list[str] = Field(description="Ids of the runs started again.")
    skipped: list[SkippedRun]


# -- system -----------------------------------------------------------------------------------


class Health(BaseModel):
    """The process is up."""

    model_config = _examples({"status": "ok"})

    status: Literal["ok"]


class Readiness(BaseModel):
    """The database answers and its schema is current."""

    model_config = _examples({"status": "ready", "database": "postgresql"})

    status: Literal["ready"]
    database: str = Field(description="The store's dialect: `sqlite` or `postgresql`.")


class NodeTypePublic(BaseModel):
    """A registered node type and the JSON Schema of its ``config`` (node packs may add
    members)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "set",
                    "description": "Set values in the step output.",
                    "terminal": False,
                    "branching": False,
                    "config_schema": {
                        "type": "object",
                        "properties": {"values": {"type": "object"}},
                        "required": ["values"],
                    },
                }
            ]
        },
    )

    type: str
    description: str
    terminal: bool
    branching: bool
    config_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema of the step output, when the type declares it."
    )


class PluginPublic(BaseModel):
    """One ``flowyard.nodes`` entry point (a node pack) and what loading it did at start."""

    model_config = ConfigDict(
        # Read straight from the registry's PluginReport.
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "example",
                    "value": "flowyard_example_pack:register",
                    "distribution": "flowyard-example-pack",
                    "version": "0.1.0",
                    "status": "failed",
                    "types": [],
                    "error": "ModuleNotFoundError: No module named 'discord_sdk'",
                }
            ]
        },
    )

    name: str = Field(description="The entry point's name.")
    value: str = Field(description="What it names: `module:attribute`.")
    distribution: str | None = Field(description="The installed distribution declaring it.")
    version: str | None = Field(description="That distribution's version.")
    status: PluginStatus = Field(
        description="`loaded`; `failed` (skipped whole: see `error`); `disabled` (a "
        "third-party pack while FLOWYARD_LOAD_PLUGINS is false)."
    )
    types: list[str] = Field(description="The node types it registered.")
    error: str | None = Field(description="Why it failed to load (the exception, one line).")
