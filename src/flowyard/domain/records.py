"""Plain records returned by the store: what other layers read about workflows and runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flowyard.domain.ids import EventId, RunId, StepId, WorkflowId
from flowyard.domain.priorities import INTERACTIVE, NO_LANE
from flowyard.domain.statuses import BranchStatus, RunStatus, StepStatus


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """A named workflow and its newest version number."""

    id: WorkflowId
    name: str
    latest_version: int
    created_at: datetime
    updated_at: datetime
    archived: bool = False
    description: str | None = None


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One immutable version of a workflow definition."""

    workflow_id: WorkflowId
    version: int
    definition: dict[str, Any]
    checksum: str
    created_at: datetime
    created_by: str | None = None
    #: Node positions on the builder's canvas (``{"nodes": {id: {"x", "y"}}}``), published
    #: from a draft beside the definition; never part of what runs.
    layout: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class WorkflowRunStats:
    """A workflow's newest run and how many runs it started on each of the last days."""

    workflow_id: WorkflowId
    #: Runs created per day, oldest day first (one count per day asked for).
    per_day: tuple[int, ...]
    last_run_id: RunId | None = None
    last_status: RunStatus | None = None
    last_created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One execution of one workflow version."""

    id: RunId
    workflow_id: WorkflowId
    workflow_version: int
    status: RunStatus
    input: Any
    vars: dict[str, Any]
    output: Any
    error: dict[str, Any] | None
    idempotency_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    campaign_id: str | None = None
    parent_run_id: RunId | None = None
    deadline_at: datetime | None = None
    error_type: str | None = None
    #: The business key signals and actions may address the run by (decision 0024).
    correlation_key: str | None = None
    #: The key is unique among the workflow's unfinished runs (its version said so).
    correlation_unique: bool = False
    #: A child run's sub-workflow step, in the run ``parent_run_id``.
    parent_step_id: StepId | None = None
    #: The schedule whose tick started the run.
    schedule_id: str | None = None
    #: What the run's steps inherit: the claim's order (decision 0032).
    priority: int = INTERACTIVE
    lane: str = NO_LANE
    #: The quota key of its campaign's limit per concurrency key, if it has one.
    limit_key: str | None = None


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One execution of one node inside a run (attempts are counted on the row)."""

    id: StepId
    run_id: RunId
    node_id: str
    node_type: str
    branch: str
    iteration: int
    status: StepStatus
    attempt: int
    available_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    output: Any
    error: dict[str, Any] | None
    recoveries: int
    claims: int
    #: A waiting step's timer (kept while a wake-up makes it due earlier).
    wait_until: datetime | None = None
    #: What a waiting step waits for (``signal:<name>``, ``action``, ``branches``, ...).
    waiting_for: str | None = None
    wait_data: dict[str, Any] | None = None
    #: The run's priority and lane (decision 0032).
    priority: int = INTERACTIVE
    lane: str = NO_LANE

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and recoveries of this step; differs per iteration."""
        return step_idempotency_key(self.run_id, self.branch, self.node_id, self.iteration)


def step_idempotency_key(run_id: str, branch: str, node_id: str, iteration: int) -> str:
    """The idempotency key of a step, sent to providers that accept one."""
    return (
        f"{run_id}:{branch}:{node_id}:{iteration}" if branch else f"{run_id}:{node_id}:{iteration}"
    )


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One append-only history entry of a run."""

    id: EventId
    run_id: RunId
    step_id: StepId | None
    type: str
    data: dict[str, Any]
    actor: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewRun:
    """What is needed to start a run."""

    workflow_id: WorkflowId
    workflow_version: int
    start_node: str
    start_node_type: str
    input: Any
    vars: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    actor: str | None = None
    campaign_id: str | None = None
    parent_run_id: RunId | None = None
    deadline_at: datetime | None = None
    correlation_key: str | None = None
    correlation_unique: bool = False
    #: The schedule whose tick starts the run.
    schedule_id: str | None = None
    #: The claim's order of the run's steps (decision 0032): runs started one at a time are
    #: interactive; a campaign's runs are in its lane at its priority.
    priority: int = INTERACTIVE
    lane: str = NO_LANE


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """A named message delivered to a run (buffered until a waiting step takes it)."""

    id: int
    run_id: RunId
    name: str
    payload: Any
    sent_by: str | None
    created_at: datetime
    consumed_at: datetime | None = None
    step_id: StepId | None = None


@dataclass(frozen=True, slots=True)
class MoveFacts:
    """What deciding a state-machine move needs, read under the run's lock: the run, its
    latest moves (newest first) and the main-path state step waiting for one, if any."""

    run: RunRecord
    moves: Sequence[SignalRecord]
    waiting_in: str | None


#: A move decided from its facts: the move (the signal's payload) and the event to record.
MovePlan = tuple[dict[str, Any], tuple[str, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class BranchResult:
    """How one branch of a fork (or a child run) ended, in branch order."""

    name: str
    index: int
    status: BranchStatus
    output: Any
    error: dict[str, Any] | None
    child_run_id: RunId | None = None
