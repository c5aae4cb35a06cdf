"""Built-in node types."""

from __future__ import annotations

from flowyard.nodes.builtin.basic import (
    ConditionNode,
    EndNode,
    FailNode,
    LogNode,
    SetNode,
    TriggerNode,
)
from flowyard.nodes.builtin.flow import (
    DelayNode,
    MapNode,
    ParallelNode,
    SubworkflowNode,
    WaitForSignalNode,
)
from flowyard.nodes.builtin.http import HttpNode
from flowyard.nodes.builtin.state import StateNode
from flowyard.nodes.registry import NodeRegistry

BUILTIN_TYPES = (
    TriggerNode,
    ConditionNode,
    SetNode,
    HttpNode,
    LogNode,
    EndNode,
    FailNode,
    DelayNode,
    WaitForSignalNode,
    ParallelNode,
    MapNode,
    SubworkflowNode,
    StateNode,
)


def register_builtins(registry: NodeRegistry) -> None:
    """Register every built-in node type."""
    for node_type in BUILTIN_TYPES:
        registry.register(node_type)


__all__ = ["BUILTIN_TYPES", "register_builtins"]
