"""Run use cases: start (input checked against the workflow), read runs, steps, events and
signals, list, and resolve the workflow a sub-workflow step starts."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from flowyard.domain import jsonvalue
from flowyard.domain.auth import AuditEntry
from flowyard.domain.definition import MAX_CORRELATION_KEY
from flowyard.domain.errors import (
    Conflict,
    DefinitionError,
    InvalidInput,
    NotFound,
    PermanentError,
    Problem,
)
from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import (
    EventRecord,
    NewRun,
    RunRecord,
    SignalRecord,
    StepRecord,
    WorkflowRecord,
)
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.engine import actions
from flowyard.engine.compiled import CompiledWorkflow
from flowyard.engine.input_schema import input_problems
from flowyard.engine.restart import failure_cause
from flowyard.engine.transitions import first_step
from flowyard.expressions import ExpressionError
from flowyard.nodes.base import ResolvedWorkflow
from flowyard.service.base import ServiceBase

#: Inputs and vars beyond this many bytes (as JSON) are refused: they are stored on every run.
MAX_RUN_PAYLOAD_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RunDetail:
    """A run with its steps and events."""

    run: RunRecord
    steps: list[StepRecord]
    events: list[EventRecord]

    @property
    def cause(self) -> StepRecord | None:
        """The step whose error explains a failed run (the caught call behind a ``fail``
        node, else the failing step); None unless the run failed in a step."""
        if self.run.status != RunStatus.FAILED:
            return None
        return failure_cause(self.run.error, self.steps)


class RunUseCases(ServiceBase):
    """Starting and reading runs."""

    async def start_run(
        self,
        ref: str,
        input: Any,
        *,
        vars: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        version: int | None = None,
        actor: str | None = None,
        correlation_key: str | None = None,
        audit: AuditEntry | None = None,
    ) -> tuple[RunRecord, bool]:
        """Start a run of a workflow (latest version unless pinned). Returns (run, created).

        Its correlation key is ``correlation_key``, else what the definition's
        ``correlation.key`` template makes of the input (none when it renders empty). A key
        the workflow declares unique that an unfinished run holds is refused (Conflict,
        naming that run)."""
        record, stored_version, wf = await self._runnable(ref, version)
        new = self._new_run(wf, record.id, stored_version, input, vars, idempotency_key, actor)
        new = await self._correlated(wf, new, correlation_key)
        [(run, created)] = await self.store.start_runs([new], self.clock(), audit=audit)
        if actions.has_states(wf):  # its first action needs no read of the run
            self._run_workflows.put(run.id, (run.workflow_id, run.workflow_version))
        if created:
            if self.metrics is not None:
                self.metrics.runs_started.labels(wf.definition.name).inc()
            self._enqueued()
        return run, created

    async def prepare_run(
        self,
        ref: str,
        input: Any,
        *,
        actor: str,
        idempotency_key: str,
        schedule_id: str,
    ) -> tuple[NewRun, str]:
        """A checked run of the latest version of ``ref``, not started: a schedule starts it
        in the transaction that records its tick (``ScheduleStore.fire_schedule``). It
        carries the correlation key the definition's template makes of the input (the store
        refuses a unique one an unfinished run holds). Returns it with the workflow's name.
        NotFound, Conflict (archived, nothing published), InvalidInput (the input no longer
        fits the workflow, or its key cannot be computed)."""
        record, version, wf = await self._runnable(ref, None)
        new = self._new_run(wf, record.id, version, input, None, idempotency_key, actor)
        new = await self._correlated(wf, new, None)
        return replace(new, schedule_id=schedule_id), wf.definition.name

    async def _runnable(
        self, ref: str, version: int | None
    ) -> tuple[WorkflowRecord, int, CompiledWorkflow]:
        """The workflow (not archived, a version published), the version to run and its
        compiled form."""
        record = await self.reads.workflow(ref, self.store.get_workflow)
        if record.archived:
            raise Conflict(f"workflow {record.name!r} is archived; save a new version to use it")
        if record.latest_version == 0:
            raise Conflict(
                f"workflow {record.name!r} has no published version yet: publish its draft "
                "(POST .../draft/publish) to run it"
            )
        # The compiled cache holds the definition: no need to read (and parse) it again.
        number = record.latest_version if version is None else version
        if number < 1:
            raise NotFound(f"workflow {record.name!r} has no version {number}")
        return record, number, await self.cache.get(record.id, number)

    async def _correlated(
        self, wf: CompiledWorkflow, new: NewRun, correlation_key: str | None
    ) -> NewRun:
        """``new`` with its correlation key: ``correlation_key``, else what the definition's
        ``correlation.key`` template makes of the input (none when it renders empty), and
        whether the workflow declares it unique."""
        spec = wf.definition.correlation
        key = correlation_key
        if key is None and spec is not None and spec.key is not None:
            key = await self._computed_key(wf, spec.key, new)
        if key is None:
            return new
        check_correlation_key(key, "/correlation_key")
        return replace(new, correlation_key=key, correlation_unique=bool(spec and spec.unique))

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

    async def _computed_key(self, wf: CompiledWorkflow, source: str, new: NewRun) -> str | None:
        """The definition's key template rendered on the run's input and vars (metered
        like node configs): a string or number; empty or null means no key."""
        scope = {"input": new.input, "vars": {**wf.definition.vars, **new.vars}}
        try:
            value = await self.validator.expressions.render_value_async(source, scope)
        except ExpressionError as exc:
            raise InvalidInput(
                f"the workflow's correlation key could not be computed: {exc.message}",
                [Problem("/input", f"correlation.key {source!r}: {exc.message}", "correlation")],
            ) from None
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InvalidInput(
                "the workflow's correlation key must be a string",
                [
                    Problem(
                        "/input",
                        f"correlation.key {source!r} gave a {type(value).__name__}",
                        "correlation",
                    )
                ],
            )
        key = str(value)
        check_correlation_key(key, "/input")
        return key

    async def get_run(self, run_id: str) -> RunDetail:
        """A run with its steps and (first 1,000) events."""
        run = await self.store.get_run(run_id)
        steps = await self.store.list_steps(run.id)
        events = await self.store.list_events(run.id)
        return RunDetail(run, steps, events)

    async def get_run_record(self, run_id: str) -> RunRecord:
        """A run alone, without its steps and events (NotFound)."""
        return await self.store.get_run(run_id)

    async def list_steps(
        self,
        run_id: str,
        *,
        limit: int | None = None,
        after: int | None = None,
        status: StepStatus | None = None,
        node_id: str | None = None,
    ) -> list[StepRecord]:
        """A run's steps in creation order, after a step-id cursor, optionally only in
        ``status`` or of ``node_id`` (NotFound for an unknown run)."""
        run = await self.store.get_run(run_id)
        return await self.store.list_steps(
            run.id, limit=limit, after=after, status=status, node_id=node_id
        )

    async def list_events(
        self, run_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[EventRecord]:
        """A run's events after an event-id cursor (NotFound for an unknown run)."""
        run = await self.store.get_run(run_id)
        return await self.store.list_events(run.id, after=after, limit=limit)

    async def list_signals(
        self,
        run_id: str,
        *,
        limit: int = 1000,
        after: int | None = None,
        exclude: str | None = None,
        buffered: bool | None = None,
    ) -> list[SignalRecord]:
        """Signals delivered to a run, oldest first, after a signal-id cursor, without
        those called ``exclude``; with ``buffered`` only those no step took yet (True) or
        only taken ones (False) (NotFound for an unknown run)."""
        await self.store.get_run(run_id)
        return await self.store.list_signals(
            run_id, limit=limit, after=after, exclude=exclude, buffered=buffered
        )

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        limit: int = 50,
        before: str | None = None,
        error_type: str | None = None,
        correlation_key: str | None = None,
        parent_run_id: str | None = None,
        schedule_id: str | None = None,
        campaign_id: str | None = None,
    ) -> list[RunRecord]:
        """Runs newest first, optionally filtered (``error_type``: exact or ``prefix*``;
        ``correlation_key``; ``parent_run_id``: the child runs of that run; ``schedule_id``:
        the runs a schedule started; ``campaign_id``: a campaign's runs)."""
        workflow_id = (await self.store.get_workflow(workflow)).id if workflow else None
        if campaign_id is not None:
            await self.store.get_campaign(campaign_id, now=self.clock())  # NotFound: 404
        return await self.store.list_runs(
            status=status,
            workflow_id=workflow_id,
            limit=limit,
            before=before,
            error_type=error_type,
            correlation_key=correlation_key,
            parent_run_id=parent_run_id,
            schedule_id=schedule_id,
            campaign_id=campaign_id,
        )

    async def resolve(
        self, ref: str, version: int | None, *, parent_run_id: str
    ) -> ResolvedWorkflow:
        """The workflow version a sub-workflow step starts (by id or name; None: latest).
        Refused beyond MAX_SUBWORKFLOW_DEPTH nested child runs (a workflow that calls itself
        would otherwise start runs without end)."""
        depth = 0
        ancestor: str | None = parent_run_id
        while ancestor is not None:
            depth += 1
            if depth > MAX_SUBWORKFLOW_DEPTH:
                raise PermanentError(
                    f"sub-workflows nest deeper than {MAX_SUBWORKFLOW_DEPTH} runs here",
                    error_type="subworkflow.too_deep",
                )
            ancestor = (await self.store.get_run(ancestor)).parent_run_id
        try:
            record = await self.store.get_workflow(ref)
            wf = await self.compiled(record.id, version or record.latest_version)
        except NotFound as exc:
            raise PermanentError(str(exc), error_type="subworkflow.not_found") from None
        except DefinitionError as exc:
            raise PermanentError(exc.message, error_type="subworkflow.invalid") from None
        if record.latest_version == 0 and version is None:
            raise PermanentError(
                f"workflow {record.name!r} has no published version yet",
                error_type="subworkflow.not_found",
            )
        if record.archived:
            raise PermanentError(
                f"workflow {record.name!r} is archived", error_type="subworkflow.archived"
            )
        return ResolvedWorkflow(
            record.id,
            version or record.latest_version,
            record.name,
            wf.start.id,
            wf.start.spec.type,
            wf.definition.run_timeout_s,
        )


#: How deep child runs may nest (a run, its child, the child's child, ...).
MAX_SUBWORKFLOW_DEPTH = 10


def check_correlation_key(key: str, pointer: str) -> None:
    """A correlation key is 1-200 printable characters without ``/``: it is one segment of
    the URLs that address the run by it. InvalidInput otherwise."""
    problem = None
    if not key or len(key) > MAX_CORRELATION_KEY:
        problem = f"a correlation key has 1 to {MAX_CORRELATION_KEY} characters, not {len(key)}"
    elif not key.isprintable() or "/" in key:
        problem = "a correlation key has no control characters and no '/'"
    if problem is not None:
        raise InvalidInput("the correlation key is invalid", [Problem(pointer, problem, "pattern")])


def run_deadline(wf: CompiledWorkflow, now: datetime) -> datetime | None:
    """When a run started (or restarted) at ``now`` times out, if the workflow sets one."""
    if wf.definition.run_timeout_s is None:
        return None
    return now + timedelta(seconds=wf.definition.run_timeout_s)


def check_run_payload(
    wf: CompiledWorkflow, input: Any, vars: dict[str, Any] | None
) -> list[Problem]:
    """Problems with a run's input and vars (strict JSON, size, the workflow's input schema,
    and vars that feed where a credential goes: a run start may not set those)."""
    problems: list[Problem] = [
        Problem(p.pointer, p.message, p.code)
        for name, value in (("/input", input), ("/vars", vars))
        for p in jsonvalue.problems(value, prefix=name)
    ]
    if problems:
        return problems
    problems.extend(wf.var_guard.problems(vars))
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
        problems.extend(input_problems(schema, input))
    return problems
