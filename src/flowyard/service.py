"""Application service: the use cases shared by the API and the CLI (validate, save
workflows, start runs, read runs). Routes and commands stay thin on top of it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jsonschema

from flowyard.domain.errors import Conflict, FlowyardError, InvalidInput, NotFound, Problem
from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import (
    EventRecord,
    NewRun,
    RunRecord,
    StepRecord,
    VersionRecord,
    WorkflowRecord,
)
from flowyard.domain.statuses import RunStatus
from flowyard.engine.cache import WorkflowCache
from flowyard.engine.compiled import CompiledWorkflow
from flowyard.engine.transitions import first_step
from flowyard.engine.validation import DefinitionValidator, ValidationResult, pointer_from_loc
from flowyard.observability import Metrics
from flowyard.store.ports import Store

#: Inputs and vars beyond this many bytes (as JSON) are refused: they are stored on every run.
MAX_RUN_PAYLOAD_BYTES = 1024 * 1024


@dataclass(slots=True)
class BulkRetry:
    """Outcome of retrying runs by filter."""

    matched: int
    retried: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RunDetail:
    """A run with its steps and events."""

    run: RunRecord
    steps: list[StepRecord]
    events: list[EventRecord]


class FlowyardService:
    """Use cases over a store, a validator and the compiled-workflow cache."""

    def __init__(
        self,
        store: Store,
        validator: DefinitionValidator,
        cache: WorkflowCache,
        *,
        clock: Callable[[], datetime],
        on_enqueue: Callable[[], None] | None = None,
        on_stop_requested: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.validator = validator
        self.cache = cache
        self.clock = clock
        self.on_enqueue = on_enqueue
        self.on_stop_requested = on_stop_requested
        self.metrics = metrics

    # -- workflows -------------------------------------------------------------------------

    def validate(self, raw: Any) -> ValidationResult:
        """Check a definition without saving it."""
        return self.validator.validate(raw)

    async def create_workflow(
        self, raw: Any, actor: str | None = None
    ) -> tuple[WorkflowRecord, VersionRecord]:
        """Validate and save a new workflow (version 1)."""
        wf = self.validator.compile(raw)
        definition = _as_json(raw)
        return await self.store.create_workflow(
            wf.definition.name, wf.definition.description, definition, actor
        )

    async def update_workflow(
        self, ref: str, raw: Any, actor: str | None = None, *, expected_version: int | None = None
    ) -> tuple[WorkflowRecord, VersionRecord, bool]:
        """Validate and save a new version of an existing workflow."""
        record = await self.store.get_workflow(ref)
        wf = self.validator.compile(raw)
        if wf.definition.name != record.name:
            raise InvalidInput(
                "the definition's name must match the workflow",
                [Problem("/name", f"expected {record.name!r}, got {wf.definition.name!r}", "name")],
            )
        version, created = await self.store.add_version(
            record.id, _as_json(raw), actor, expected_latest=expected_version
        )
        return await self.store.get_workflow(record.id), version, created

    async def save_workflow(
        self, raw: Any, actor: str | None = None
    ) -> tuple[WorkflowRecord, VersionRecord, bool]:
        """Create the workflow, or add a version when the definition changed (by name)."""
        wf = self.validator.compile(raw)
        try:
            existing = await self.store.get_workflow(wf.definition.name)
        except NotFound:
            record, version = await self.create_workflow(raw, actor)
            return record, version, True
        return await self.update_workflow(existing.id, raw, actor)

    async def compiled(self, workflow_id: WorkflowId, version: int) -> CompiledWorkflow:
        """The compiled form of a stored version."""
        return await self.cache.get(workflow_id, version)

    # -- runs ------------------------------------------------------------------------------

    async def start_run(
        self,
        ref: str,
        input: Any,
        *,
        vars: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        version: int | None = None,
        actor: str | None = None,
    ) -> tuple[RunRecord, bool]:
        """Start a run of a workflow (latest version unless pinned). Returns (run, created)."""
        record = await self.store.get_workflow(ref)
        if record.archived:
            raise Conflict(f"workflow {record.name!r} is archived; save a new version to use it")
        stored = await self.store.get_version(record.id, version)
        wf = await self.cache.get(record.id, stored.version)
        new = self._new_run(wf, record.id, stored.version, input, vars, idempotency_key, actor)
        [(run, created)] = await self.store.start_runs([new], self.clock())
        if created:
            if self.metrics is not None:
                self.metrics.runs_started.labels(wf.definition.name).inc()
            self._enqueued()
        return run, created

    def _new_run(
        self,
        wf: CompiledWorkflow,
        workflow_id: WorkflowId,
        version: int,
        input: Any,
        vars: dict[str, Any] | None,
        idempotency_key: str | None,
        actor: str | None,
    ) -> NewRun:
        problems = check_run_payload(wf, input, vars)
        if problems:
            raise InvalidInput("the run input is invalid", problems)
        now = self.clock()
        first = first_step(wf, now)
        return NewRun(
            workflow_id=workflow_id,
            workflow_version=version,
            start_node=first.node_id,
            start_node_type=first.node_type,
            input=input,
            vars=vars or {},
            idempotency_key=idempotency_key,
            actor=actor,
            deadline_at=run_deadline(wf, now),
        )

    async def get_run(self, run_id: str) -> RunDetail:
        """A run with its steps and (first 1,000) events."""
        run = await self.store.get_run(run_id)
        steps = await self.store.list_steps(run.id)
        events = await self.store.list_events(run.id)
        return RunDetail(run, steps, events)

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        limit: int = 50,
        before: str | None = None,
        error_type: str | None = None,
    ) -> list[RunRecord]:
        """Runs newest first, optionally filtered (``error_type``: exact or ``prefix*``)."""
        workflow_id = (await self.store.get_workflow(workflow)).id if workflow else None
        return await self.store.list_runs(
            status=status,
            workflow_id=workflow_id,
            limit=limit,
            before=before,
            error_type=error_type,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def cancel_run(
        self, run_id: str, *, actor: str | None = None, reason: str | None = None
    ) -> RunRecord:
        """Cancel an unfinished run; running steps are stopped at their next heartbeat."""
        run = await self.store.cancel_run(run_id, actor=actor, reason=reason, now=self.clock())
        if self.metrics is not None:
            # Runs that end in a worker are counted by the worker that commits their end.
            self.metrics.runs_finished.labels(RunStatus.CANCELLED.value).inc()
        if self.on_stop_requested is not None:
            self.on_stop_requested()
        return run

    async def pause_run(self, run_id: str, *, actor: str | None = None) -> RunRecord:
        """Pause a run: no new step starts until it is resumed; timers keep their deadlines."""
        return await self.store.pause_run(run_id, actor=actor, now=self.clock())

    async def resume_run(self, run_id: str, *, actor: str | None = None) -> RunRecord:
        """Resume a paused run."""
        run = await self.store.resume_run(run_id, actor=actor, now=self.clock())
        self._enqueued()
        return run

    async def retry_run(self, run_id: str, *, actor: str | None = None) -> RunRecord:
        """Re-run a failed, timed-out or cancelled run from its failed step, keeping the
        outputs of the steps that succeeded. A run timeout starts afresh."""
        run = await self.store.get_run(run_id)
        wf = await self.cache.get(run.workflow_id, run.workflow_version)
        now = self.clock()
        retried = await self.store.retry_run(
            run_id, actor=actor, now=now, deadline_at=run_deadline(wf, now)
        )
        self._enqueued()
        return retried

    async def retry_failed(
        self,
        *,
        workflow: str | None = None,
        error_type: str | None = None,
        status: RunStatus = RunStatus.FAILED,
        limit: int = 100,
        actor: str | None = None,
    ) -> BulkRetry:
        """Retry every run matching the filter (the dead-letter queue), up to ``limit``."""
        if status not in (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED):
            raise InvalidInput(
                "only failed, timed_out or cancelled runs can be retried",
                [Problem("/status", f"{status.value} is not retryable", "status")],
            )
        matched = await self.list_runs(
            status=status, workflow=workflow, error_type=error_type, limit=limit
        )
        result = BulkRetry(matched=len(matched))
        for run in matched:
            try:
                await self.retry_run(run.id, actor=actor)
            except FlowyardError as exc:
                result.skipped.append({"run_id": run.id, "reason": exc.message})
            else:
                result.retried.append(run.id)
        return result

    def _enqueued(self) -> None:
        if self.on_enqueue is not None:
            self.on_enqueue()


def run_deadline(wf: CompiledWorkflow, now: datetime) -> datetime | None:
    """When a run started (or restarted) at ``now`` times out, if the workflow sets one."""
    if wf.definition.run_timeout_s is None:
        return None
    return now + timedelta(seconds=wf.definition.run_timeout_s)


def check_run_payload(
    wf: CompiledWorkflow, input: Any, vars: dict[str, Any] | None
) -> list[Problem]:
    """Problems with a run's input and vars (size, and the workflow's input schema)."""
    problems: list[Problem] = []
    size = len(json.dumps({"input": input, "vars": vars}, default=str))
    if size > MAX_RUN_PAYLOAD_BYTES:
        problems.append(
            Problem(
                "/input",
                f"input and vars are {size} bytes; the limit is {MAX_RUN_PAYLOAD_BYTES}",
                "too_large",
            )
        )
        return problems
    schema = wf.definition.input_schema
    if schema is not None:
        validator = jsonschema.Draft202012Validator(schema)
        for error in sorted(validator.iter_errors(input), key=lambda e: list(e.path)):
            problems.append(
                Problem(pointer_from_loc("/input", error.path), error.message, "schema")
            )
    return problems


def _as_json(raw: Any) -> dict[str, Any]:
    """The definition as stored: exactly what the user wrote (it validated)."""
    if not isinstance(raw, dict):
        raise InvalidInput("a workflow definition must be a JSON object")
    return raw
