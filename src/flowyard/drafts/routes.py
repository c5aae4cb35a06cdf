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

from flowyard.drafts.ops import ExpressionFinder, References, RouteFinder, basic_routes
from flowyard.expressions import ExpressionEngine
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


def _mentions(value: Any, text: str) -> bool:
    """Whether a string (key or value) anywhere in ``value`` contains ``text`` (a loop: a
    rename asks it of every node's config)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if text in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def registry_expressions(registry: NodeRegistry, engine: ExpressionEngine) -> ExpressionFinder:
    """An expression finder that asks each node's type which of its config strings are
    templates and which are conditions (as validation does); only configs that mention the
    text are parsed. A config that does not parse offers its template strings."""

    def expressions(node: Mapping[str, Any], text: str) -> list[tuple[str, str, bool]]:
        config = node.get("config")
        if not isinstance(config, dict) or not _mentions(config, text):
            return []
        node_type = registry.get(str(node.get("type")))
        if node_type is not None:
            try:
                parsed = node_type.parse_config(config)
            except (pydantic.ValidationError, ValueError, TypeError):
                pass
            else:
                found = node_type.expressions(parsed, config, engine)
                return [(ref.pointer, ref.source, ref.kind == "condition") for ref in found]
        return [("/config" + p, source, False) for p, source in engine.find_templates(config)]

    return expressions


def registry_references(registry: NodeRegistry, engine: ExpressionEngine) -> References:
    """Routes and expressions of nodes, as the registry's node types declare them."""
    return References(registry_routes(registry), registry_expressions(registry, engine))
