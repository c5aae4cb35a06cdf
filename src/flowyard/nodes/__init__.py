"""Node types: the plugin protocol, the registry and the built-in types."""

from flowyard.nodes.base import NodeOutcome, NodeType, StepContext
from flowyard.nodes.registry import NodeRegistry, default_registry

__all__ = ["NodeOutcome", "NodeRegistry", "NodeType", "StepContext", "default_registry"]
