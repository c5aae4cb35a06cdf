"""Where a draft's nodes route to, asked of the node registry.

Rename and delete must find every reference to a node, including those inside configs of
node types a pack adds (a condition's cases, a parallel's branch starts, a state's action
targets). The node type knows: :meth:`NodeType.routes` of its parsed config. Parsing every
config of a 1,000-node draft would cost more than the edit, so only nodes whose config
holds the id as a string value are parsed; a config that does not parse (drafts may be
invalid) falls back to ``next`` and catch routes, and the validator reports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic

from flowyard.drafts.ops import RouteFinder, basic_routes
from flowyard.nodes.registry import NodeRegistry


def _holds(value: Any, text: str) -> bool:
    if isinstance(value, str):
        return value == text
    if isinstance(value, dict):
        return any(_holds(v, text) for v in value.values())
    if isinstance(value, list):
        return any(_holds(v, text) for v in value)
    return False


def registry_routes(registry: NodeRegistry, target: str | None = None) -> RouteFinder:
    """A route finder that asks each node's type; with ``target``, configs that do not
    mention it are not parsed (no route in them can lead there)."""

    def routes(node: Mapping[str, Any]) -> list[str]:
        found = basic_routes(node)
        config = node.get("config")
        node_type = registry.get(str(node.get("type")))
        if node_type is None or not isinstance(config, dict):
            return found
        if target is not None and not _holds(config, target):
            return found
        try:
            parsed = node_type.parse_config(config)
        except (pydantic.ValidationError, ValueError, TypeError):
            return found
        return found + [route.pointer for route in node_type.routes(parsed)]

    return routes
