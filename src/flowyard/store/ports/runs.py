"""Runs and what they recorded: steps, events and signals (reads), and starting runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from flowyard.domain.auth import AuditEntry
from flowyard.domain.ids import RunId, WorkflowId
from flowyard.domain.records import (
    EventRecord,
    NewRun,
    RunRecord,
    SignalRecord,
    StepRecord,
    WorkflowRunStats,
)
from flowyard.domain.statuses import RunStatus, StepStatus


class RunStore(Protocol):
    """Starting runs, and reading runs, steps, events and signals."""

    async def workflow_run_stats(
        self, workflow_ids: Sequence[WorkflowId], days: Sequence[datetime]
    ) -> dict[WorkflowId, WorkflowRunStats]:
        """For each workflow (at most 500): its newest run, and its runs counted per day,
        ``days`` being the ascending starts of the days (the last day has no end). Every
        workflow asked for is in the answer (no run: zeros and no last run)."""
        ...

    async def start_runs(
        self, new_runs: Sequence[NewRun], now: datetime, *, audit: AuditEntry | None = None
    ) -> list[tuple[RunRecord, bool]]:
        """Create runs and their first steps in one transaction. A run whose idempotency key
        was used for the same workflow is not created again: (existing, False)."""
        ...

    async def get_run(self, run_id: str) -> RunRecord:
        """A run (NotFound)."""
        ...

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow_id: WorkflowId | None = None,
        limit: int = 50,
        before: str | None = None,
        error_type: str | None = None,
        correlation_key: str | None = None,
        parent_run_id: str | None = None,
        schedule_id: str | None = None,
        campaign_id: str | None = None,
    ) -> list[RunRecord]:
        """Runs newest first, before an id cursor; ``error_type`` filters failures by type
        (exact, or a prefix ending in ``*``); ``correlation_key``, ``parent_run_id`` (child
        runs of that run) and ``schedule_id`` (the runs a schedule started) match exactly."""
        ...

    async def unfinished_runs_by_key(
        self, workflow_id: WorkflowId, correlation_key: str, *, limit: int = 10
    ) -> list[RunRecord]:
        """The workflow's unfinished runs holding ``correlation_key``, oldest first."""
        ...

    async def list_steps(
        self,
        run_id: RunId,
        *,
        limit: int | None = None,
        after: int | None = None,
        status: StepStatus | None = None,
        node_id: str | None = None,
    ) -> list[StepRecord]:
        """Steps of a run in creation order (all without ``limit``), after a step-id cursor,
        optionally only in ``status`` or of ``node_id``."""
        ...

    async def list_events(
        self, run_id: RunId, *, after: int = 0, limit: int = 1000
    ) -> list[EventRecord]:
        """Events of a run after an event-id cursor."""
        ...

    async def recent_signals(
        self, run_id: str, name: str, *, limit: int = 1000
    ) -> list[SignalRecord]:
        """The run's latest ``limit`` signals called ``name``, newest first."""
        ...

    async def list_signals(
        self,
        run_id: str,
        *,
        limit: int = 1000,
        after: int | None = None,
        name: str | None = None,
        exclude: str | None = None,
        buffered: bool | None = None,
    ) -> list[SignalRecord]:
        """Signals of a run, oldest first (after the id ``after``; only those called
        ``name``; not those called ``exclude``; with ``buffered`` only those no step took
        yet (True) or only taken ones (False))."""
        ...
