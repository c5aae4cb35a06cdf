"""Execute one claimed step: build its scope, run the node, turn the result into a
transition. No database access here; the worker commits what this returns."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from pydantic import ValidationError

from flowyard.domain.commands import Transition
from flowyard.domain.credentials import ResolvedCredential, redact, redact_result
from flowyard.domain.errors import (
    DefinitionError,
    ErrorInfo,
    NodeError,
    PermanentError,
    TransientError,
)
from flowyard.domain.events import EventType
from flowyard.domain.quotas import campaign_key
from flowyard.domain.records import StepRecord
from flowyard.domain.statuses import StepStatus
from flowyard.engine.cache import WorkflowCache
from flowyard.engine.compiled import CompiledWorkflow
from flowyard.engine.settlement import fail_run
from flowyard.engine.transitions import on_failure, on_success
from flowyard.expressions import ExpressionEngine, ExpressionError
from flowyard.nodes.base import (
    CredentialSource,
    NodeOutcome,
    NodeType,
    StepContext,
    WorkflowResolver,
)
from flowyard.outbound import Outbound
from flowyard.store.ports import RunState
from flowyard.worker.storable import (
    DEFAULT_MAX_OUTPUT_BYTES,
    MIN_OUTPUT_BYTES,
    is_large,
    storable,
)

_log = logging.getLogger("flowyard.worker")


def build_scope(wf: CompiledWorkflow, state: RunState) -> dict[str, Any]:
    """The expression scope of a run: input, vars, finished steps and run facts."""
    run = state.run
    return {
        "input": run.input,
        "vars": {**wf.definition.vars, **(run.vars or {})},
        "steps": state.steps,
        "item": state.item,
        "index": state.index,
        "run": {
            "id": run.id,
            "workflow_id": run.workflow_id,
            "workflow_version": run.workflow_version,
            "workflow_name": wf.definition.name,
            "created_at": run.created_at.isoformat(),
        },
    }


def _classify(exc: Exception) -> ErrorInfo:
    if isinstance(exc, NodeError):
        return exc.info()
    if isinstance(exc, ExpressionError):
        return ErrorInfo(f"expression.{exc.kind}", exc.message, transient=False)
    if isinstance(exc, TimeoutError):
        return TransientError("the step timed out", error_type="timeout").info()
    # Unknown exceptions are transient by default; the retry policy caps them.
    return ErrorInfo("internal", f"{exc.__class__.__name__}: {exc}", transient=True)


class _RecordingSource:
    """Hands credentials to one step (for the outbound layer) and remembers their secret
    values, and those derived while sending, to redact them from what the step produces."""

    def __init__(self, source: CredentialSource) -> None:
        self.source = source
        self.secrets: set[str] = set()

    async def get(self, name: str) -> ResolvedCredential:
        resolved = await self.source.get(name)
        self.secrets.update(resolved.secrets)
        return resolved

    def remember(self, secret: str) -> None:
        """Redact ``secret`` too (e.g. an access token an authenticator obtained)."""
        if secret:
            self.secrets.add(secret)


def declared_output(node_type: NodeType[Any], outcome: NodeOutcome) -> NodeOutcome:
    """The outcome with its output reduced to what the node type's ``output_model`` admits
    (keys it does not declare are dropped); a node type breaking its own declaration fails
    the step (``node.output_invalid``).

    Dumped in Python mode, not JSON mode: JSON mode would turn a NaN from the outside world
    into null, and fail on a lone surrogate or deep nesting, before
    :func:`~flowyard.worker.storable.storable` applies the one rule for those. Output models
    therefore declare JSON types."""
    model = node_type.output_model
    if model is None or outcome.output is None:
        return outcome
    try:
        output = model.model_validate(outcome.output).model_dump()
    except ValidationError as exc:
        raise PermanentError(
            f"the {node_type.type_name} node produced an output its type does not declare "
            f"({exc.error_count()} problem(s))",
            error_type="node.output_invalid",
        ) from None
    return dataclasses.replace(outcome, output=output)


class StepExecutor:
    """Turns a claimed step into a :class:`Transition`."""

    def __init__(
        self,
        cache: WorkflowCache,
        expressions: ExpressionEngine,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], datetime],
        rand: Callable[[], float] = random.random,
        credentials: CredentialSource | None = None,
        workflows: WorkflowResolver | None = None,
        outbound: Outbound | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> None:
        if max_output_bytes < MIN_OUTPUT_BYTES:
            raise ValueError(f"max_output_bytes must be at least {MIN_OUTPUT_BYTES}")
        self.max_output_bytes = max_output_bytes
        self.credentials = credentials
        self.workflows = workflows
        self.cache = cache
        self.expressions = expressions
        self.http = http
        self.outbound = outbound if outbound is not None else Outbound(http)
        self.clock = clock
        self.rand = rand
        #: Node types whose steps read the run's buffered signals (declared by each type).
        self.listening = cache.registry.listening_types()

    async def execute(self, step: StepRecord, state: RunState | None) -> Transition:
        """Run the step's node and decide what follows. Never raises (but cancellation).

        The secret values of every credential the node resolved are redacted from the
        transition (output, error, events) before it leaves here, so step rows, run rows and
        events never hold them; then what it stores is made storable and its size checked
        (:func:`~flowyard.worker.storable.storable`; in a thread when it is large)."""
        recorder = _RecordingSource(self.credentials) if self.credentials is not None else None
        transition = await self._execute(step, state, recorder)
        if recorder is not None and recorder.secrets:
            transition = redact_result(transition, recorder.secrets)
        if is_large(transition):
            checked = await asyncio.to_thread(storable, transition, self.max_output_bytes)
        else:
            checked = storable(transition, self.max_output_bytes)
        if isinstance(checked, ErrorInfo):
            return await self._unstorable(step, state, checked)
        return checked

    async def quota_keys(self, step: StepRecord, state: RunState | None) -> list[str]:
        """The quota keys of the step's node, and of its campaign's limits (every step of a
        campaign's run counts against them; decision 0032). None when the run ended or its
        definition cannot be loaded: the step will not run."""
        if state is None or state.run.status.is_terminal:
            return []
        try:
            wf = await self.cache.get(state.run.workflow_id, state.run.workflow_version)
            node = wf.node(step.node_id)
        except (DefinitionError, KeyError):
            return []
        keys = node.node_type.quota_keys(node.config)
        run = state.run
        if run.campaign_id is not None:
            keys = [*keys, campaign_key(run.campaign_id)]
        if run.limit_key is not None:
            keys = [*keys, run.limit_key]
        return keys

    async def _unstorable(
        self, step: StepRecord, state: RunState | None, error: ErrorInfo
    ) -> Transition:
        """The step's result cannot be stored (see :mod:`flowyard.worker.storable`): it
        fails with ``error``, through its retry and catch rules like any node error."""
        if state is None:
            return fail_run(step.node_id, error)
        try:
            wf = await self.cache.get(state.run.workflow_id, state.run.workflow_version)
        except DefinitionError:
            return fail_run(step.node_id, error)
        failed = storable(self._failed(wf, step, state, error))
        return failed if isinstance(failed, Transition) else fail_run(step.node_id, error)

    async def _execute(
        self, step: StepRecord, state: RunState | None, recorder: _RecordingSource | None
    ) -> Transition:
        if state is None or state.run.status.is_terminal:
            return Transition(
                StepStatus.CANCELLED,
                event=(
                    EventType.STEP_CANCELLED,
                    {"node_id": step.node_id, "reason": "the run has ended"},
                ),
            )
        try:
            wf = await self.cache.get(state.run.workflow_id, state.run.workflow_version)
        except DefinitionError as exc:
            error = ErrorInfo(
                "engine.definition",
                exc.message,
                False,
                {"problems": [p.as_dict() for p in exc.problems]},
            )
            return fail_run(step.node_id, error)
        node = wf.node(step.node_id)
        ctx = StepContext(
            run_id=step.run_id,
            workflow_id=state.run.workflow_id,
            workflow_version=state.run.workflow_version,
            node_id=step.node_id,
            step_id=step.id,
            attempt=step.attempt,
            iteration=step.iteration,
            idempotency_key=step.idempotency_key,
            scope=build_scope(wf, state),
            expressions=self.expressions,
            http=self.http,
            credentials=recorder,
            now=self.clock(),
            wait_until=step.wait_until,
            waiting_for=step.waiting_for,
            branch=step.branch,
            signals=state.signals,
            children=state.children.get(step.id),
            workflows=self.workflows,
            outbound=self.outbound,
            remember_secret=recorder.remember if recorder is not None else None,
        )
        try:
            if node.timeout_s is not None:
                async with asyncio.timeout(node.timeout_s):
                    outcome = await node.node_type.execute(ctx, node.config)
            else:
                outcome = await node.node_type.execute(ctx, node.config)
            outcome = declared_output(node.node_type, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = _classify(exc)
            if not isinstance(exc, NodeError | ExpressionError | TimeoutError):
                _log.warning(
                    "node %s of run %s raised %s",
                    step.node_id,
                    step.run_id,
                    redact(repr(exc), recorder.secrets if recorder else ()),
                )
            return self._failed(wf, step, state, error)
        return on_success(wf, step.node_id, outcome, iterations=state.iterations, now=self.clock())

    def _failed(
        self, wf: CompiledWorkflow, step: StepRecord, state: RunState, error: ErrorInfo
    ) -> Transition:
        return on_failure(
            wf,
            step.node_id,
            error,
            attempt=step.attempt,
            iterations=state.iterations,
            now=self.clock(),
            rand=self.rand,
        )

    def lost(
        self, step: StepRecord, state: RunState | None, wf: CompiledWorkflow | None
    ) -> Transition:
        """Transition for a poison step: its worker kept dying, so stop trying."""
        error = PermanentError(
            f"step {step.node_id!r} was abandoned by its worker {step.recoveries} times "
            "(the worker died or hung); giving up",
            error_type="worker.lost",
        ).info()
        if wf is None or state is None:
            return fail_run(step.node_id, error)
        return self._failed(wf, step, state, error)
