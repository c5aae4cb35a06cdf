"""Response models of the console's reads: a workflow's graph (``GET
/workflows/{ref}/graph``), the edges a diff adds and removes, and the workflows list's
figures (``GET /workflows?include=stats``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flowyard.api.schemas import AT, RUN_ID, WORKFLOW_EXAMPLE, WORKFLOW_ID, WorkflowPublic
from flowyard.domain.records import WorkflowRecord, WorkflowRunStats
from flowyard.domain.statuses import RunStatus
from flowyard.engine.graph import EdgeKind


class GraphNodePublic(BaseModel):
    """One element drawn: a node (or a state of a state machine)."""

    id: str
    type: str
    name: str | None = None
    start: bool = False
    group: str | None = Field(
        None, description="The group (its parallel or map node's id) drawn around this node."
    )
    known: bool = Field(
        True,
        description="False when the type is unknown or the config does not parse: routes "
        "inside the config are then not drawn.",
    )
    disabled: bool = False
    final: bool = False
    detail: str | None = None


class GraphEdgePublic(BaseModel):
    """One labelled edge, from ``next``, ``catch`` or a route the node type declares."""

    source: str
    target: str
    kind: EdgeKind
    label: str = ""
    pointer: str = Field("", description="Where the edge is set, relative to the source node.")


class GraphGroupPublic(BaseModel):
    """The box around the branches a parallel node forks or the body a map node runs."""

    id: str = Field(description="The parallel or map node's id.")
    type: str
    label: str
    parent: str | None = Field(None, description="The group this group is drawn in.")


GRAPH_EXAMPLE: dict[str, Any] = {
    "workflow_id": WORKFLOW_ID,
    "version": 2,
    "nodes": [
        {"id": "check", "type": "condition", "start": True},
        {"id": "fan", "type": "parallel"},
        {"id": "email", "type": "email", "group": "fan"},
    ],
    "edges": [
        {"source": "check", "target": "fan", "kind": "route", "label": "input.vip"},
        {"source": "fan", "target": "email", "kind": "branch", "label": "branch mail"},
    ],
    "groups": [{"id": "fan", "type": "parallel", "label": "parallel fan"}],
}


class WorkflowGraph(BaseModel):
    """A version (or the draft) as drawn: nodes, labelled edges, and groups."""

    model_config = ConfigDict(json_schema_extra={"examples": [GRAPH_EXAMPLE]})

    workflow_id: str
    version: int | None = Field(description="The version drawn; null for the draft.")
    nodes: list[GraphNodePublic]
    edges: list[GraphEdgePublic]
    groups: list[GraphGroupPublic]


class EdgeChanges(BaseModel):
    """Edges (as drawn) of the second version that the first lacks, and the other way."""

    added: list[GraphEdgePublic]
    removed: list[GraphEdgePublic]


class ListDiff(BaseModel):
    """Items (by id) added, removed and changed (field -> {from, to}; a changed object or
    list also has ``pointers``: where inside it the values differ)."""

    added: list[str]
    removed: list[str]
    changed: dict[str, dict[str, dict[str, Any]]]


class VersionDiff(BaseModel):
    """What changed between two versions of a workflow."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "workflow_id": "wf_01jd0c3v8w2m4x5y6z7a8b9c0d",
                    "from_version": 1,
                    "to_version": 2,
                    "identical": False,
                    "fields": {"description": {"from": None, "to": "Routes leads by region"}},
                    "nodes": {
                        "added": ["notify"],
                        "removed": [],
                        "changed": {"route": {"next": {"from": "done", "to": "notify"}}},
                    },
                    "states": None,
                    "actions": None,
                    "edges": {
                        "added": [
                            {"source": "route", "target": "notify", "kind": "next", "label": ""}
                        ],
                        "removed": [
                            {"source": "route", "target": "done", "kind": "next", "label": ""}
                        ],
                    },
                }
            ]
        }
    )

    workflow_id: str
    from_version: int
    to_version: int
    identical: bool
    fields: dict[str, dict[str, Any]]
    nodes: ListDiff | None = None
    states: ListDiff | None = None
    actions: ListDiff | None = None
    edges: EdgeChanges | None = Field(
        None, description="Edges as drawn (`GET .../graph`) added and removed."
    )


class LastRun(BaseModel):
    """A workflow's newest run."""

    id: str
    status: RunStatus
    created_at: datetime


class DayCount(BaseModel):
    """Runs created on one UTC day."""

    day: date
    runs: int


class WorkflowStats(BaseModel):
    """A workflow's newest run and its runs per day over the last 7 UTC days (today last)."""

    last_run: LastRun | None
    runs_per_day: list[DayCount]

    @classmethod
    def of(cls, days: list[datetime], stats: WorkflowRunStats) -> WorkflowStats:
        """From the store's figures."""
        last = None
        if stats.last_run_id and stats.last_status and stats.last_created_at:
            last = LastRun(
                id=stats.last_run_id, status=stats.last_status, created_at=stats.last_created_at
            )
        counts = [DayCount(day=d.date(), runs=n) for d, n in zip(days, stats.per_day, strict=True)]
        return cls(last_run=last, runs_per_day=counts)


class WorkflowListed(WorkflowPublic):
    """A workflow in the list; with ``include=stats``, its figures."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    **WORKFLOW_EXAMPLE,
                    "stats": {
                        "last_run": {"id": RUN_ID, "status": "succeeded", "created_at": AT},
                        "runs_per_day": [{"day": "2025-01-15", "runs": 12}],
                    },
                }
            ]
        },
    )

    stats: WorkflowStats | None = Field(
        None, description="With `include=stats`: the newest run and the runs per day."
    )

    @classmethod
    def listed(cls, record: WorkflowRecord, stats: WorkflowStats | None) -> WorkflowListed:
        """From a store record and its figures."""
        public = WorkflowPublic.of(record)
        return cls(**public.model_dump(), stats=stats)
