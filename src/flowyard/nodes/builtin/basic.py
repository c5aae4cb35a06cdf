"""Control and data node types: trigger, condition, set, log, end, fail."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from flowyard.domain.definition import NodeIdStr
from flowyard.domain.errors import PermanentError
from flowyard.expressions import ExpressionEngine
from flowyard.nodes.base import (
    EmptyConfig,
    ExpressionRef,
    NodeConfig,
    NodeOutcome,
    NodeType,
    Route,
    StepContext,
)


class TriggerNode(NodeType[EmptyConfig]):
    """Entry point of a run; its output is the run input."""

    type_name = "trigger"
    description = "Starts the workflow. Output: the run input."

    async def execute(self, ctx: StepContext, config: EmptyConfig) -> NodeOutcome:
        """Pass the run input on."""
        return NodeOutcome(output=ctx.scope.get("input"))


class Case(NodeConfig):
    """One branch of a condition: the first case whose ``when`` is true wins."""

    when: str = Field(min_length=1, description="Condition, e.g. input.region == 'East Coast'")
    next: NodeIdStr


class ConditionConfig(NodeConfig):
    """Ordered cases and an optional default target."""

    cases: list[Case] = Field(min_length=1)
    default: NodeIdStr | None = None


class ConditionNode(NodeType[ConditionConfig]):
    """Branch on the first true condition; no match and no default fails the run."""

    type_name = "condition"
    config_model = ConditionConfig
    condition_fields = ("/cases/*/when",)
    description = "Routes to the first case whose condition is true, else to default."
    branching = True

    def routes(self, config: ConditionConfig) -> list[Route]:
        """Every case target and the default."""
        routes = [
            Route(f"/config/cases/{i}/next", case.next, case.when)
            for i, case in enumerate(config.cases)
        ]
        if config.default is not None:
            routes.append(Route("/config/default", config.default, "default"))
        return routes

    def expressions(
        self, config: ConditionConfig, raw: Mapping[str, Any], engine: ExpressionEngine
    ) -> list[ExpressionRef]:
        """The ``when`` of each case is a condition, not a template."""
        return [
            ExpressionRef(f"/config/cases/{i}/when", case.when, "condition")
            for i, case in enumerate(config.cases)
        ]

    async def execute(self, ctx: StepContext, config: ConditionConfig) -> NodeOutcome:
        """Evaluate the cases in order."""
        for index, case in enumerate(config.cases):
            if await ctx.test(case.when):
                return NodeOutcome(output={"case": index, "next": case.next}, next=case.next)
        if config.default is not None:
            return NodeOutcome(output={"case": None, "next": config.default}, next=config.default)
        raise PermanentError(
            f"no case of condition {ctx.node_id!r} matched and it has no default",
            error_type="condition.no_match",
        )


class SetConfig(NodeConfig):
    """Named values; strings may be templates (a lone ``{{ expr }}`` keeps its type)."""

    values: dict[str, Any] = Field(min_length=1)


class SetNode(NodeType[SetConfig]):
    """Compute values from expressions; the output is the dict of values."""

    type_name = "set"
    config_model = SetConfig
    template_fields = ("/values",)
    description = "Computes named values with templates. Output: the values."

    async def execute(self, ctx: StepContext, config: SetConfig) -> NodeOutcome:
        """Render every value."""
        return NodeOutcome(output=await ctx.render(config.values))


class LogConfig(NodeConfig):
    """A message template and a level."""

    message: str
    level: Literal["debug", "info", "warning", "error"] = "info"


class LogNode(NodeType[LogConfig]):
    """Write a message to the service log; the output is the rendered message."""

    type_name = "log"
    config_model = LogConfig
    template_fields = ("/message",)
    description = "Logs a rendered message. Output: {message}."

    async def execute(self, ctx: StepContext, config: LogConfig) -> NodeOutcome:
        """Render and log."""
        message = str(await ctx.render(config.message))
        ctx.logger.log(
            logging.getLevelNamesMapping()[config.level.upper()],
            "run %s node %s: %s",
            ctx.run_id,
            ctx.node_id,
            message,
        )
        return NodeOutcome(output={"message": message})


class EndConfig(NodeConfig):
    """Optional run output (templates allowed)."""

    output: Any = None


class EndNode(NodeType[EndConfig]):
    """End this path; its rendered ``output`` becomes the run output."""

    type_name = "end"
    config_model = EndConfig
    template_fields = ("/output",)
    description = "Ends the run successfully with an optional output."
    terminal = True

    async def execute(self, ctx: StepContext, config: EndConfig) -> NodeOutcome:
        """Render the output."""
        return NodeOutcome(output=await ctx.render(config.output), end=True)


class FailConfig(NodeConfig):
    """The error to fail the run with."""

    error: str = Field("workflow.failed", pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    message: str = "the workflow failed"


class FailNode(NodeType[FailConfig]):
    """Fail the run with a permanent, user-defined error."""

    type_name = "fail"
    config_model = FailConfig
    template_fields = ("/message",)
    description = "Fails the run with the configured error type and message."
    terminal = True

    async def execute(self, ctx: StepContext, config: FailConfig) -> NodeOutcome:
        """Raise the configured error."""
        raise PermanentError(str(await ctx.render(config.message)), error_type=config.error)
