"""Built-in node types. The registry registers them (``default_registry``); nothing here
knows the registry, so the two never import each other."""

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


__all__ = ["BUILTIN_TYPES"]
