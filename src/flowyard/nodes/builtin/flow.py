"""Flow-control node types: delay, wait_for_signal, parallel, map, subworkflow.

They never hold a worker while they wait: the first execution parks the step (a durable
timer and/or a wake-up), and the step runs again when its timer passes or it is woken; that
second execution decides the outcome from what arrived (a signal, the branch results, the
child run).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from flowyard.domain.commands import (
    MAX_BRANCH_KEY,
    SIGNAL_NAME_PATTERN,
    BranchStart,
    ChildRun,
    Fork,
    JoinPolicy,
    Wait,
    WaitKind,
    signal_wait,
)
from flowyard.domain.definition import NodeIdStr
from flowyard.domain.durations import parse_duration, parse_timestamp
from flowyard.domain.errors import PermanentError
from flowyard.domain.records import BranchResult
from flowyard.domain.statuses import BranchStatus
from flowyard.nodes.base import NodeConfig, NodeOutcome, NodeType, Route, StepContext

BranchName = str
_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,62}$"
_SIGNAL = SIGNAL_NAME_PATTERN
Duration = str | int | float


def _literal_duration(value: Duration | None) -> Duration | None:
    """Check a duration now unless it is a template (checked when rendered)."""
    if value is None or (isinstance(value, str) and "{{" in value):
        return value
    parse_duration(value)
    return value


def _check_depth(ctx: StepContext, branches: int) -> None:
    """Refuse a fork nested so deep that its branch keys would not fit."""
    if len(ctx.branch) + len(f"/{ctx.step_id}.{branches}") > MAX_BRANCH_KEY:
        raise PermanentError(
            f"forks nest too deep here ({ctx.branch.count('/')} levels)",
            error_type="fork.too_deep",
        )


async def _render_duration(ctx: StepContext, value: Duration) -> float:
    rendered = await ctx.render(value)
    try:
        return parse_duration(rendered)
    except ValueError as exc:
        raise PermanentError(str(exc), error_type="config.duration") from None


# -- delay ---------------------------------------------------------------------------------


class DelayConfig(NodeConfig):
    """Wait ``duration`` (``30s``, ``24h``, ``PT24H``, seconds) or until ``until`` (an ISO
    8601 timestamp; templates allowed in both)."""

    duration: Duration | None = Field(None, description="e.g. 24h, 1h30m, PT24H, 90")
    until: str | None = Field(None, description="ISO 8601 timestamp, e.g. {{ input.send_at }}")

    _check_duration = field_validator("duration")(_literal_duration)

    @model_validator(mode="after")
    def _one_of(self) -> DelayConfig:
        if (self.duration is None) == (self.until is None):
            raise ValueError("give exactly one of 'duration' or 'until'")
        return self


class DelayNode(NodeType[DelayConfig]):
    """A durable timer: the run waits in the database (one row), no worker is held, and a
    restart changes nothing. Output: ``{until}``."""

    type_name = "delay"
    config_model = DelayConfig
    template_fields = ("/duration", "/until")
    description = "Waits a duration or until a timestamp (durably). Output: {until}."

    async def execute(self, ctx: StepContext, config: DelayConfig) -> NodeOutcome:
        """Park until the timer passes, then go on."""
        if ctx.resumed and ctx.wait_until is not None:
            until = ctx.wait_until
        elif config.duration is not None:
            until = ctx.now + timedelta(seconds=await _render_duration(ctx, config.duration))
        else:
            try:
                until = parse_timestamp(await ctx.render(config.until))
            except ValueError as exc:
                raise PermanentError(str(exc), error_type="config.timestamp") from None
        if ctx.now >= until:
            return NodeOutcome(output={"until": until.isoformat()})
        return NodeOutcome(wait=Wait(until, WaitKind.TIMER))


# -- wait_for_signal ------------------------------------------------------------------------


class WaitForSignalConfig(NodeConfig):
    """The signal to wait for, and what to do when it does not come in time."""

    signal: str = Field(pattern=_SIGNAL, description="e.g. reply_received")
    timeout: Duration | None = Field(None, description="e.g. 48h; none: wait forever")
    on_timeout: NodeIdStr | None = Field(
        None, description="Where to go on timeout; without it the step fails (wait.timeout)."
    )

    _check_timeout = field_validator("timeout")(_literal_duration)


class WaitForSignalNode(NodeType[WaitForSignalConfig]):
    """Park the run until ``POST /runs/{id}/signals/{signal}`` delivers a payload. A signal
    sent before the run gets here is buffered and taken at once. Output:
    ``{signal, payload, received_at, timed_out}``."""

    type_name = "wait_for_signal"
    config_model = WaitForSignalConfig
    template_fields = ("/timeout",)
    listens_for_signals = True
    description = (
        "Waits for a named signal (e.g. a reply) with an optional timeout route. "
        "Output: {signal, payload, received_at, timed_out}."
    )

    def routes(self, config: WaitForSignalConfig) -> list[Route]:
        """The timeout route."""
        return (
            [Route("/config/on_timeout", config.on_timeout, "timeout")] if config.on_timeout else []
        )

    def signal_refs(self, config: WaitForSignalConfig) -> list[tuple[str, str]]:
        """The signal it waits for."""
        return [("/config/signal", config.signal)]

    async def execute(self, ctx: StepContext, config: WaitForSignalConfig) -> NodeOutcome:
        """Take a buffered signal, time out, or park."""
        for signal in ctx.signals:
            if signal.name == config.signal:
                return NodeOutcome(
                    output={
                        "signal": signal.name,
                        "payload": signal.payload,
                        "received_at": signal.created_at.isoformat(),
                        "sent_by": signal.sent_by,
                        "timed_out": False,
                    },
                    consume_signal=signal.id,
                )
        until = ctx.wait_until if ctx.resumed else None
        if not ctx.resumed and config.timeout is not None:
            until = ctx.now + timedelta(seconds=await _render_duration(ctx, config.timeout))
        if until is not None and ctx.now >= until:
            if config.on_timeout is not None:
                return NodeOutcome(
                    output={"signal": config.signal, "payload": None, "timed_out": True},
                    next=config.on_timeout,
                )
            raise PermanentError(
                f"no {config.signal!r} signal arrived by {until.isoformat()}",
                error_type="wait.timeout",
                details={"signal": config.signal},
            )
        return NodeOutcome(wait=Wait(until, signal_wait(config.signal)))


# -- parallel ------------------------------------------------------------------------------


class BranchConfig(NodeConfig):
    """One branch: a name and the node it starts at (its path ends where it has no next)."""

    name: BranchName = Field(pattern=_NAME)
    start: NodeIdStr


class JoinConfig(NodeConfig):
    """How branches are joined."""

    join: Literal["all", "any", "n_of"] = Field(
        "all", description="all: every branch; any: the first success; n_of: n successes"
    )
    n: int | None = Field(None, ge=1, description="Successes needed with join n_of.")
    continue_on_error: bool = Field(
        False, description="Let the other branches finish when one fails (else cancel them)."
    )


class ParallelConfig(JoinConfig):
    """Named branches run concurrently (on any workers); the join decides when to go on."""

    branches: list[BranchConfig] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _check(self) -> ParallelConfig:
        names = [b.name for b in self.branches]
        if len(set(names)) != len(names):
            raise ValueError("branch names must be unique")
        if self.join == "n_of" and (self.n is None or self.n > len(self.branches)):
            raise ValueError("join n_of needs n between 1 and the number of branches")
        return self


def _failure(kind: str, message: str, failed: list[BranchResult]) -> PermanentError:
    first = failed[0].error or {}
    return PermanentError(
        f"{message}: {first.get('type', 'error')}: {first.get('message', '')}".rstrip(": "),
        error_type=kind,
        details={"failed": {r.name: r.error for r in failed[:20]}, "failed_count": len(failed)},
    )


class ParallelNode(NodeType[ParallelConfig]):
    """Fork into named branches and join them. A failed branch fails this node (catchable)
    and cancels its siblings unless ``continue_on_error``. Output: ``{branch: output}``
    (``_errors`` lists failed branches when they were tolerated)."""

    type_name = "parallel"
    config_model = ParallelConfig
    description = "Runs named branches concurrently and joins them (all, any, n_of)."

    def routes(self, config: ParallelConfig) -> list[Route]:
        """Each branch's start."""
        return [
            Route(f"/config/branches/{i}/start", b.start, f"branch {b.name}")
            for i, b in enumerate(config.branches)
        ]

    def branch_routes(self, config: ParallelConfig) -> list[Route]:
        """Every route starts a branch."""
        return self.routes(config)

    async def execute(self, ctx: StepContext, config: ParallelConfig) -> NodeOutcome:
        """Fork, then (woken) join."""
        if ctx.children is None:
            _check_depth(ctx, len(config.branches))
            policy = JoinPolicy(
                mode=config.join,
                n=config.n,
                continue_on_error=config.continue_on_error,
            )
            return NodeOutcome(
                wait=Wait(None, WaitKind.BRANCHES),
                fork=Fork(tuple(BranchStart(b.name, b.start, "") for b in config.branches), policy),
            )
        results = ctx.children
        done = [r for r in results if r.status == BranchStatus.SUCCEEDED]
        failed = [r for r in results if r.status == BranchStatus.FAILED]
        need = {"all": len(results), "any": 1, "n_of": config.n or 1}[config.join]
        if config.join == "all" and failed and not config.continue_on_error:
            raise _failure("parallel.branch_failed", "a branch failed", failed)
        if len(done) < need and (config.join != "all" or not config.continue_on_error):
            raise _failure("parallel.branch_failed", f"{len(done)} of {need} branches", failed)
        output: dict[str, Any] = {r.name: r.output for r in results}
        if failed:
            output["_errors"] = {r.name: r.error for r in failed}
        return NodeOutcome(output=output)


# -- map -----------------------------------------------------------------------------------


class MapConfig(NodeConfig):
    """Run the sub-graph starting at ``start`` once per item of ``items``."""

    items: Any = Field(description="An expression giving a list, e.g. {{ input.contacts }}")
    start: NodeIdStr = Field(description="First node of the per-item sub-graph.")
    max_concurrency: int = Field(10, ge=1, le=10_000)
    tolerated_failure_percentage: float = Field(0.0, ge=0, le=100)
    max_items: int = Field(100_000, ge=1, le=1_000_000)


class MapNode(NodeType[MapConfig]):
    """Fan out over a list: each item runs the sub-graph with ``item`` and ``index`` in scope,
    at most ``max_concurrency`` at once. Output: the items' results, in item order (null for
    tolerated failures). More failures than tolerated fail the node (``map.failed``)."""

    type_name = "map"
    config_model = MapConfig
    template_fields = ("/items",)
    description = "Runs a sub-graph for each item of a list; output: results in order."

    def routes(self, config: MapConfig) -> list[Route]:
        """The sub-graph's start."""
        return [Route("/config/start", config.start, "each item")]

    def branch_routes(self, config: MapConfig) -> list[Route]:
        """The per-item sub-graph is a branch."""
        return self.routes(config)

    async def execute(self, ctx: StepContext, config: MapConfig) -> NodeOutcome:
        """Fork over the items, then (woken) gather."""
        if ctx.children is None:
            items = await ctx.render(config.items)
            if not isinstance(items, list):
                raise PermanentError(
                    f"map items must be a list, got {type(items).__name__}",
                    error_type="map.items",
                )
            if len(items) > config.max_items:
                raise PermanentError(
                    f"{len(items)} items; max_items is {config.max_items}", error_type="map.items"
                )
            if not items:
                return NodeOutcome(output=[])
            _check_depth(ctx, len(items))
            tolerated = math.floor(len(items) * config.tolerated_failure_percentage / 100)
            policy = JoinPolicy(
                max_concurrency=config.max_concurrency, tolerated_failures=tolerated
            )
            branches = tuple(
                BranchStart(str(i), config.start, "", item) for i, item in enumerate(items)
            )
            return NodeOutcome(
                wait=Wait(None, WaitKind.BRANCHES), fork=Fork(branches, policy, "map")
            )
        results = ctx.children
        failed = [r for r in results if r.status != BranchStatus.SUCCEEDED]
        tolerated = math.floor(len(results) * config.tolerated_failure_percentage / 100)
        if len(failed) > tolerated:
            errors = [r for r in failed if r.status == BranchStatus.FAILED] or failed
            raise _failure("map.failed", f"{len(failed)} of {len(results)} items failed", errors)
        return NodeOutcome(
            output=[r.output if r.status == BranchStatus.SUCCEEDED else None for r in results]
        )


# -- subworkflow ---------------------------------------------------------------------------


class SubworkflowConfig(NodeConfig):
    """Which workflow to start, with what input, and how to map its output."""

    workflow: str = Field(min_length=1, max_length=128, description="Workflow name or id.")
    version: int | None = Field(None, ge=1, description="Pinned version; none: the latest.")
    input: Any = Field(None, description="The child's input (templates allowed).")
    output: Any = Field(
        None, description="This step's output; templates see the child's output as 'child'."
    )


class SubworkflowNode(NodeType[SubworkflowConfig]):
    """Start another workflow as a child run and wait for it. Cancelling this run cancels
    the child. A failed child fails this node (``subworkflow.failed``, catchable)."""

    type_name = "subworkflow"
    config_model = SubworkflowConfig
    template_fields = ("/input", "/output")
    description = "Runs another workflow as a child run and waits for it. Output: its output."

    async def execute(self, ctx: StepContext, config: SubworkflowConfig) -> NodeOutcome:
        """Start the child, then (woken) map its result."""
        if ctx.children is None:
            if ctx.workflows is None:
                raise PermanentError("no workflow resolver", error_type="subworkflow.unavailable")
            _check_depth(ctx, 1)
            target = await ctx.workflows.resolve(
                config.workflow, config.version, parent_run_id=ctx.run_id
            )
            deadline = (
                ctx.now + timedelta(seconds=target.run_timeout_s) if target.run_timeout_s else None
            )
            child = ChildRun(
                target.workflow_id,
                target.version,
                target.start_node,
                target.start_type,
                await ctx.render(config.input) if config.input is not None else {},
                deadline,
            )
            return NodeOutcome(wait=Wait(None, WaitKind.CHILD), child=child)
        [result] = ctx.children
        if result.status != BranchStatus.SUCCEEDED:
            error = result.error or {}
            raise PermanentError(
                f"child run {result.child_run_id} failed: {error.get('message', result.status)}",
                error_type="subworkflow.failed",
                details={"child_run_id": result.child_run_id, "error": error},
            )
        if config.output is None:
            return NodeOutcome(output=result.output)
        scope = {**ctx.scope, "child": {"output": result.output, "run_id": result.child_run_id}}
        return NodeOutcome(output=await ctx.render(config.output, scope))
