"""Application service: the use cases shared by the API and the CLI (validate, save
workflows, start runs, read runs). Routes and commands stay thin on top of it."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from flowyard.domain import jsonvalue
from flowyard.domain.commands import RetryFrom
from flowyard.domain.errors import (
    Busy,
    Conflict,
    DefinitionError,
    FlowyardError,
    InvalidInput,
    NotFound,
    PermanentError,
    Problem,
)
from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import (
    EventRecord,
    MoveFacts,
    MovePlan,
    NewRun,
    RunRecord,
    SignalRecord,
    StepRecord,
    VersionRecord,
    WorkflowRecord,
)
from flowyard.domain.state_machine import ACTION_SIGNAL
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.engine import actions
from flowyard.engine.actions import Position
from flowyard.engine.cache import WorkflowCache
from flowyard.engine.compiled import CompiledWorkflow
from flowyard.engine.input_schema import input_problems
from flowyard.engine.restart import failure_cause, retry_start
from flowyard.engine.transitions import first_step
from flowyard.engine.validation import DefinitionValidator, ValidationResult
from flowyard.nodes.base import ResolvedWorkflow
from flowyard.nodes.builtin.state import StateConfig
from flowyard.observability import Metrics
from flowyard.store.ports import Store

#: Inputs and vars beyond this many bytes (as JSON) are refused: they are stored on every run.
MAX_RUN_PAYLOAD_BYTES = 1024 * 1024
#: Definitions compiled at once per process for validate/create/update, and how long a
#: request waits for its turn before it is refused (Busy: 503 with Retry-After).
COMPILE_CONCURRENCY = 2
COMPILE_WAIT_S = 2.0


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

    @property
    def cause(self) -> StepRecord | None:
        """The step whose error explains a failed run (the caught call behind a ``fail``
        node, else the failing step); None unless the run failed in a step."""
        if self.run.status != RunStatus.FAILED:
            return None
        return failure_cause(self.run.error, self.steps)


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
        compile_concurrency: int = COMPILE_CONCURRENCY,
        compile_wait_s: float = COMPILE_WAIT_S,
    ) -> None:
        self.store = store
        self.validator = validator
        self.cache = cache
        self.clock = clock
        self.on_enqueue = on_enqueue
        self.on_stop_requested = on_stop_requested
        self.metrics = metrics
        self.compile_wait_s = compile_wait_s
        self._compile_slots = asyncio.Semaphore(compile_concurrency)
        #: Which workflow version each recently moved run is on (a hint: checked under the
        #: run's lock when it moves, so a run retried on another version is read again).
        self._run_workflows: _Recent[str, tuple[WorkflowId, int]] = _Recent(10_000)

    # -- workflows -------------------------------------------------------------------------

    async def validate(self, raw: Any) -> ValidationResult:
        """Check a definition without saving it: exactly the problems ``create_workflow``
        would refuse it for (structure, expressions, compile budget, unknown credentials)."""
        result = await self._validated(raw)
        if result.workflow is not None:
            problems = await self.credential_problems(result.workflow)
            if problems:
                return ValidationResult(problems=problems)
        return result

    async def _validated(self, raw: Any) -> ValidationResult:
        """Validate and compile off the event loop, in one of the process's compile slots,
        within the compile budget (the validator's). A request waits ``compile_wait_s`` for
        a slot, then is refused (Busy), so costly definitions cannot pile up threads."""
        try:
            async with asyncio.timeout(self.compile_wait_s):
                await self._compile_slots.acquire()
        except TimeoutError:
            budget = self.validator.expressions.limits.compile_budget_s
            raise Busy(
                "too many workflow definitions are being compiled right now; retry shortly",
                retry_after_s=max(1, math.ceil(budget)),
            ) from None
        compiling = asyncio.ensure_future(asyncio.to_thread(self.validator.validate, raw))
        # The slot is freed when the thread is done, not when the request is: a request
        # cancelled (client gone) cannot stop its thread, nor start more than the slots.
        compiling.add_done_callback(self._compile_done)
        return await asyncio.shield(compiling)

    def _compile_done(self, compiling: asyncio.Future[ValidationResult]) -> None:
        self._compile_slots.release()
        if not compiling.cancelled():
            compiling.exception()  # retrieved: a cancelled request no longer awaits it

    async def _compile(self, raw: Any) -> CompiledWorkflow:
        return (await self._validated(raw)).compiled()

    async def create_workflow(
        self, raw: Any, actor: str | None = None
    ) -> tuple[WorkflowRecord, VersionRecord]:
        """Validate and save a new workflow (version 1). A name taken by an archived
        workflow is a Conflict that says so and how to bring it back."""
        wf = await self._compile(raw)
        await self.check_credentials(wf)
        definition = _as_json(raw)
        await self._refuse_archived_name(wf.definition.name)
        return await self.store.create_workflow(
            wf.definition.name, wf.definition.description, definition, actor
        )

    async def _refuse_archived_name(self, name: str) -> None:
        try:
            existing = await self.store.get_workflow(name)
        except NotFound:
            return
        if existing.archived and existing.name == name:
            raise Conflict(
                f"a workflow named {name!r} already exists and is archived; restore it by "
                f"saving a new version (PUT /api/v1/workflows/{name}, or flowyard run FILE), "
                "or choose another name",
                detail={"workflow_id": existing.id, "archived": True},
            )

    async def update_workflow(
        self,
        ref: str,
        raw: Any,
        actor: str | None = None,
        *,
        expected_version: int | None = None,
        expected_archived: bool | None = None,
    ) -> tuple[WorkflowRecord, VersionRecord, bool]:
        """Validate and save a new version of an existing workflow; with expectations (an
        ``If-Match``), only if the workflow is still in that state (PreconditionFailed)."""
        record = await self.store.get_workflow(ref)
        wf = await self._compile(raw)
        if wf.definition.name != record.name:
            raise InvalidInput(
                "the definition's name must match the workflow",
                [Problem("/name", f"expected {record.name!r}, got {wf.definition.name!r}", "name")],
            )
        await self.check_credentials(wf)
        version, created = await self.store.add_version(
            record.id,
            _as_json(raw),
            actor,
            expected_latest=expected_version,
            expected_archived=expected_archived,
        )
        return await self.store.get_workflow(record.id), version, created

    async def save_workflow(
        self, raw: Any, actor: str | None = None
    ) -> tuple[WorkflowRecord, VersionRecord, bool]:
        """Create the workflow, or add a version when the definition changed (by name)."""
        wf = await self._compile(raw)
        try:
            existing = await self.store.get_workflow(wf.definition.name)
        except NotFound:
            record, version = await self.create_workflow(raw, actor)
            return record, version, True
        return await self.update_workflow(existing.id, raw, actor)

    async def check_credentials(self, wf: CompiledWorkflow) -> None:
        """Every credential the nodes reference must exist (DefinitionError locating each
        one that does not). Deleting a credential later fails the steps that use it
        (``credential.not_found``)."""
        problems = await self.credential_problems(wf)
        if problems:
            count = len(problems)
            raise DefinitionError(
                f"the workflow references {count} unknown credential{'s' if count != 1 else ''}",
                problems,
            )

    async def credential_problems(self, wf: CompiledWorkflow) -> list[Problem]:
        """A problem (``unknown_credential``) locating each credential reference of ``wf``
        that names no credential."""
        problems: list[Problem] = []
        exists: dict[str, bool] = {}
        for index, spec in enumerate(wf.definition.nodes):
            node = wf.nodes.get(spec.id)
            if node is None:
                continue
            for pointer, name in node.node_type.credential_refs(node.config):
                if name not in exists:
                    try:
                        exists[name] = (await self.store.get_credential(name)).record.name == name
                    except NotFound:
                        exists[name] = False
                if not exists[name]:
                    problems.append(
                        Problem(
                            f"/nodes/{index}{pointer}",
                            f"no credential named {name!r}",
                            "unknown_credential",
                        )
                    )
        return problems

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
        if actions.has_states(wf):  # its first action needs no read of the run
            self._run_workflows.put(run.id, (run.workflow_id, run.workflow_version))
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
        await self.cancel_orphans()
        if self.on_stop_requested is not None:
            self.on_stop_requested()
        return run

    async def cancel_orphans(self) -> int:
        """Cancel child runs whose parent ended (and their children, level by level)."""
        total = 0
        while cancelled := await self.store.cancel_orphans(self.clock()):
            total += len(cancelled)
            if self.metrics is not None:
                self.metrics.runs_finished.labels(RunStatus.CANCELLED.value).inc(len(cancelled))
        if total and self.on_stop_requested is not None:
            self.on_stop_requested()
        return total

    async def send_signal(
        self, run_id: str, name: str, payload: Any, *, actor: str | None = None
    ) -> tuple[SignalRecord, bool]:
        """Deliver a signal to a run: a step waiting for it wakes now; otherwise it is
        buffered until the run gets to one. A finished run refuses it (Conflict)."""
        signal, woke = await self.store.send_signal(
            run_id, name, payload, actor=actor, now=self.clock()
        )
        if woke:
            self._enqueued()
        return signal, woke

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

    async def pause_run(self, run_id: str, *, actor: str | None = None) -> RunRecord:
        """Pause a run: no new step starts until it is resumed; timers keep their deadlines."""
        return await self.store.pause_run(run_id, actor=actor, now=self.clock())

    async def resume_run(self, run_id: str, *, actor: str | None = None) -> RunRecord:
        """Resume a paused run."""
        run = await self.store.resume_run(run_id, actor=actor, now=self.clock())
        self._enqueued()
        return run

    async def retry_run(
        self, run_id: str, *, actor: str | None = None, use_latest_definition: bool = False
    ) -> RunRecord:
        """Re-run a failed, timed-out or cancelled run from its failed step, keeping the
        outputs of the steps that succeeded. A run that failed in a ``fail`` node reached by
        a ``catch`` route restarts from the caught step instead, and the error branch's
        steps are discarded (:func:`flowyard.engine.restart.retry_start`). A run timeout
        starts afresh. With ``use_latest_definition`` the run moves to its workflow's latest
        version first (Conflict when a node it must run again is not in that version)."""
        run = await self.store.get_run(run_id)
        steps = await self.store.list_steps(run.id)
        start = retry_start(run.error, steps) if run.status == RunStatus.FAILED else None
        restart = (
            RetryFrom(start.step.id, start.failed_step, start.discard)
            if start is not None and start.caught
            else None
        )
        version = run.workflow_version
        if use_latest_definition:
            version = (await self.store.get_workflow(run.workflow_id)).latest_version
        wf = await self.cache.get(run.workflow_id, version)
        if version != run.workflow_version:
            failed = (
                start.step.node_id
                if start is not None
                else (run.error or {}).get("details", {}).get("node_id")
            )
            dropped = set(start.discard) if start is not None else set()
            again = {
                s.node_id
                for s in steps
                if not s.branch and s.status == StepStatus.CANCELLED and s.id not in dropped
            }
            missing = sorted(
                n for n in again | ({failed} if failed else set()) if n not in wf.nodes
            )
            if missing:
                raise Conflict(
                    f"version {version} of the workflow has no node {missing[0]!r}, which "
                    f"run {run_id} must run again; retry it on its own version",
                    detail={"missing_nodes": missing, "version": version},
                )
        now = self.clock()
        retried = await self.store.retry_run(
            run_id,
            actor=actor,
            now=now,
            deadline_at=run_deadline(wf, now),
            workflow_version=version,
            restart=restart,
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

    # -- state machines ----------------------------------------------------------------------

    async def run_actions(self, run_id: str) -> ActionsView:
        """Where a state-machine run is, which actions it accepts now (each other action of
        that state under ``unavailable`` with the reason), and its latest moves."""
        run = await self.store.get_run(run_id)
        wf = await self.compiled(run.workflow_id, run.workflow_version)
        states = actions.state_nodes(wf)
        moves = await self.store.recent_signals(run.id, ACTION_SIGNAL, limit=MAX_HISTORY)
        state = actions.known_state(wf, states, moves[0] if moves else None)
        if state is None:  # a graph whose first state is a choice: where its step waits
            waiting = [
                s
                for s in await self.store.list_steps(run.id)
                if s.node_id in states and s.status == StepStatus.WAITING and not s.branch
            ]
            state = waiting[-1].node_id if waiting else None
        # Read again after the moves: a final state's step ends the run after its move.
        run = await self.store.get_run(run_id)
        where = actions.position(states, run.status, state)
        return ActionsView(run, where, actions.history(moves[::-1]))

    async def take_action(
        self, run_id: str, action_id: str, *, actor: str, payload: Any = None
    ) -> ActionsView:
        """Move a state-machine run with a named action, in one transaction: it is in the
        target state when this returns, and the next action is accepted at once
        (``on_enter`` nodes run on workers, after). Refused (Conflict, with the reason): a
        disabled action or target state, an action not allowed from the current state, any
        action once the run is in a final state or ended, a paused run. Concurrent actions
        on one run are decided one after the other, each on the state the previous left."""
        now = self.clock()
        key = self._run_workflows.get(run_id)
        for _ in range(2):
            if key is None:
                run = await self.store.get_run(run_id)
                key = (run.workflow_id, run.workflow_version)
            wf = await self.compiled(*key)
            states = actions.state_nodes(wf)

            def decide(
                facts: MoveFacts,
                key: tuple[WorkflowId, int] = key,
                wf: CompiledWorkflow = wf,
                states: dict[str, StateConfig] = states,
            ) -> MovePlan:
                if (facts.run.workflow_id, facts.run.workflow_version) != key:
                    raise _OtherVersion  # retried on another version since: decide again
                return actions.decide(
                    wf, states, facts, action_id, actor=actor, now=now, payload=payload
                )

            try:
                facts, recorded = await self.store.record_action(
                    run_id, ACTION_SIGNAL, decide, actor=actor, now=now, history=MAX_HISTORY
                )
            except _OtherVersion:
                key = None
                continue
            self._run_workflows.put(run_id, key)
            self._enqueued()
            where = actions.position(states, facts.run.status, recorded.payload["to"])
            history = actions.history([*facts.moves[::-1], recorded][-MAX_HISTORY:])
            return ActionsView(facts.run, where, history, recorded)
        raise Conflict(f"run {run_id} changed version while moving; try again")

    def _enqueued(self) -> None:
        if self.on_enqueue is not None:
            self.on_enqueue()


@dataclass(frozen=True, slots=True)
class ActionsView:
    """A state-machine run, where it is, and its moves (``recorded``: the move an action
    just made)."""

    run: RunRecord
    where: Position
    history: list[dict[str, Any]]
    recorded: SignalRecord | None = None


#: How many moves a state-machine run lists (its latest).
MAX_HISTORY = 1000


K = TypeVar("K")
V = TypeVar("V")


class _Recent(Generic[K, V]):
    """The latest ``size`` entries put (older ones are forgotten)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        self._items.pop(key, None)
        self._items[key] = value
        if len(self._items) > self.size:
            del self._items[next(iter(self._items))]


class _OtherVersion(Exception):
    """The run is on another workflow version than the one an action was decided with."""


#: How deep child runs may nest (a run, its child, the child's child, ...).
MAX_SUBWORKFLOW_DEPTH = 10


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


def _as_json(raw: Any) -> dict[str, Any]:
    """The definition as stored: exactly what the user wrote (it validated)."""
    if not isinstance(raw, dict):
        raise InvalidInput("a workflow definition must be a JSON object")
    return raw
