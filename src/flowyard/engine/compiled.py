"""A definition compiled for execution: node types resolved, configs parsed, defaults applied."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from flowyard.domain.definition import CatchRule, NodeSpec, RetryPolicy, WorkflowDefinition
from flowyard.domain.errors import Problem
from flowyard.expressions import ExpressionEngine
from flowyard.expressions.references import keys_read
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
class VarGuard:
    """The definition ``vars`` a run start may not set: those read by the templates that
    decide where a credentialed request goes (its URL, headers, query). ``names`` maps each
    to the node reading it; ``every`` names a node whose templates use ``vars`` in a way that
    could read any key (then no var may be set at run start)."""

    names: Mapping[str, str] = field(default_factory=dict)
    every: str | None = None

    def problems(self, run_vars: Mapping[str, Any] | None) -> list[Problem]:
        """One problem per run-start var this guard refuses, at ``/vars/<name>``."""
        problems: list[Problem] = []
        for name in run_vars or {}:
            node = self.every if self.every is not None else self.names.get(name)
            if node is None:
                continue
            token = str(name).replace("~", "~0").replace("/", "~1")
            problems.append(
                Problem(
                    f"/vars/{token}",
                    f"var {name!r} feeds where node {node!r} sends its credential (URL, "
                    "headers or query); a run start may not set it: change it in the "
                    "definition",
                    "protected_var",
                )
            )
        return problems


def guard_vars(nodes: Mapping[str, CompiledNode], expressions: ExpressionEngine) -> VarGuard:
    """The :class:`VarGuard` of compiled nodes (each node type names the config fields that
    decide where its credential goes: ``request_target_pointers``)."""
    names: dict[str, str] = {}
    for node_id, node in nodes.items():
        for pointer in node.node_type.request_target_pointers(node.config):
            for _, source in expressions.find_templates(_at(node.spec.config, pointer)):
                read = keys_read(source, "vars")
                if read is None:
                    return VarGuard(names, every=node_id)
                for name in read:
                    names.setdefault(name, node_id)
    return VarGuard(names)


def _at(config: Mapping[str, Any], pointer: str) -> Any:
    """The raw config value at a node-relative ``/config/...`` pointer (None if absent)."""
    value: Any = config
    for token in pointer.removeprefix("/config").split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


@dataclass(frozen=True, slots=True)
class CompiledWorkflow:
    """A validated definition with everything resolved; immutable and cacheable per version."""

    definition: WorkflowDefinition
    nodes: dict[str, CompiledNode]
    #: Run-start vars that may not be set (see :class:`VarGuard`).
    var_guard: VarGuard = field(default_factory=VarGuard)

    @property
    def start(self) -> CompiledNode:
        """The node every run starts at."""
        return self.nodes[self.definition.start]

    def node(self, node_id: str) -> CompiledNode:
        """The node called ``node_id`` (KeyError if absent: versions are validated)."""
        return self.nodes[node_id]

    def credential_refs(self) -> list[tuple[str, str]]:
        """``(pointer into the definition, credential name)`` of every credential its
        nodes reference, in node order."""
        refs: list[tuple[str, str]] = []
        for index, spec in enumerate(self.definition.nodes):
            node = self.nodes.get(spec.id)
            if node is not None:
                refs += [
                    (f"/nodes/{index}{pointer}", name)
                    for pointer, name in node.node_type.credential_refs(node.config)
                ]
        return refs
