"""A definition compiled for execution: node types resolved, configs parsed, defaults applied."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from flowyard.domain.definition import CatchRule, NodeSpec, RetryPolicy, WorkflowDefinition
from flowyard.nodes.base import NodeType

#: Used when neither the node nor the workflow sets a policy: transient failures get a few
#: quick retries, permanent ones none. Explicit policies replace it entirely.
DEFAULT_RETRY = RetryPolicy(
    max_attempts=3, initial_interval_s=1.0, backoff_rate=2.0, max_interval_s=30.0, jitter="full"
)


@dataclass(frozen=True, slots=True)
class CompiledNode:
    """One node ready to execute."""

    spec: NodeSpec
    node_type: NodeType[Any]
    config: BaseModel
    retry: RetryPolicy
    timeout_s: float | None
    in_cycle: bool

    @property
    def id(self) -> str:
        """The node id."""
        return self.spec.id

    @property
    def catch(self) -> list[CatchRule]:
        """Error routes, in order."""
        return self.spec.catch


@dataclass(frozen=True, slots=True)
class CompiledWorkflow:
    """A validated definition with everything resolved; immutable and cacheable per version."""

    definition: WorkflowDefinition
    nodes: dict[str, CompiledNode]

    @property
    def start(self) -> CompiledNode:
        """The node every run starts at."""
        return self.nodes[self.definition.start]

    def node(self, node_id: str) -> CompiledNode:
        """The node called ``node_id`` (KeyError if absent: versions are validated)."""
        return self.nodes[node_id]
