"""The node-type plugin protocol.

A node type is a class with a pydantic ``config_model`` (its JSON Schema is served to editors)
and an async ``execute``. Node types classify their own failures by raising
:class:`~flowyard.domain.errors.TransientError` or :class:`~flowyard.domain.errors.PermanentError`
with a stable ``error_type``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, cast

import httpx
from pydantic import BaseModel, ConfigDict

from flowyard.expressions import ExpressionEngine

C = TypeVar("C", bound=BaseModel)


class NodeConfig(BaseModel):
    """Base for config models: unknown keys are mistakes, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EmptyConfig(NodeConfig):
    """Config of node types that take none."""


@dataclass(frozen=True, slots=True)
class Route:
    """A control-flow target declared inside a node's config (e.g. a condition case)."""

    pointer: str  # relative to the node, e.g. "/config/cases/0/next"
    target: str


@dataclass(frozen=True, slots=True)
class ExpressionRef:
    """An expression or template inside a node's config, for validation."""

    pointer: str  # relative to the node
    source: str
    kind: str  # "condition" | "template"


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    """What a successful execution produced.

    ``next`` overrides the node's static ``next`` (branching nodes choose it); ``end`` ends
    this path of the run with ``output`` as the run output candidate.
    """

    output: Any = None
    next: str | None = None
    end: bool = False


@dataclass(slots=True)
class StepContext:
    """Everything a node may use while executing one step."""

    run_id: str
    workflow_id: str
    workflow_version: int
    node_id: str
    step_id: int
    attempt: int
    iteration: int
    idempotency_key: str
    scope: Mapping[str, Any]
    expressions: ExpressionEngine
    http: httpx.AsyncClient
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("flowyard.node"))

    def render(self, value: Any) -> Any:
        """Render every template inside ``value`` against the run scope."""
        return self.expressions.render_value(value, self.scope)

    def test(self, condition: str) -> bool:
        """Evaluate a condition against the run scope."""
        return self.expressions.test(condition, self.scope)


class NodeType(ABC, Generic[C]):
    """Base class of every node type; subclasses set the class variables and ``execute``."""

    type_name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]] = EmptyConfig
    description: ClassVar[str] = ""
    #: Terminal node types end a path; a ``next`` on them is a definition error.
    terminal: ClassVar[bool] = False
    #: Branching node types choose their target in config; a static ``next`` is optional.
    branching: ClassVar[bool] = False

    def parse_config(self, raw: Mapping[str, Any]) -> C:
        """Validate raw config into the config model (raises pydantic.ValidationError)."""
        return cast("C", self.config_model.model_validate(dict(raw)))

    def routes(self, config: C) -> list[Route]:
        """Targets named in the config (beyond the node's ``next``)."""
        return []

    def expressions(
        self, config: C, raw: Mapping[str, Any], engine: ExpressionEngine
    ) -> list[ExpressionRef]:
        """Expressions in the config; by default every template string in it."""
        return [
            ExpressionRef("/config" + pointer, source, "template")
            for pointer, source in engine.find_templates(dict(raw))
        ]

    @abstractmethod
    async def execute(self, ctx: StepContext, config: C) -> NodeOutcome:
        """Run one step. Raise TransientError/PermanentError to fail it."""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The registry entry served at ``GET /node-types``."""
        return {
            "type": cls.type_name,
            "description": cls.description,
            "terminal": cls.terminal,
            "branching": cls.branching,
            "config_schema": cls.config_model.model_json_schema(),
        }
