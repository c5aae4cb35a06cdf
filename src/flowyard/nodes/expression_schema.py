"""Marking a node type's expression fields in its config's JSON Schema.

A node type declares the config fields it renders as templates when a step runs
(``NodeType.template_fields``) and those it evaluates as conditions
(``NodeType.condition_fields``), as JSON pointers into its config (``/message``, ``*`` for
every item of a list: ``/cases/*/when``). ``GET /node-types`` serves the config schema with
those properties marked ``x-flowyard-expression: "template" | "condition"``, so an editor
highlights them without a list of field names of its own. A property inside a ``$defs``
entry is marked wherever that definition is used.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

#: The JSON Schema extension keyword (an OpenAPI-style ``x-`` keyword: validators ignore it).
EXPRESSION_KEYWORD = "x-flowyard-expression"

ExpressionKind = Literal["template", "condition"]


def mark_expressions(
    schema: dict[str, Any], pointers: Iterable[str], kind: ExpressionKind
) -> dict[str, Any]:
    """Mark the property each pointer names in ``schema`` (changed in place and returned);
    a pointer that names no property of the schema is a ``ValueError`` (a typo in a node
    type would otherwise leave its field silently unmarked)."""
    for pointer in pointers:
        _target(schema, pointer)[EXPRESSION_KEYWORD] = kind
    return schema


def _target(root: dict[str, Any], pointer: str) -> dict[str, Any]:
    if not pointer.startswith("/"):
        raise ValueError(f"expression field {pointer!r}: a JSON pointer starts with '/'")
    node = root
    for part in pointer[1:].split("/"):
        node = _object_of(root, node)
        if part == "*":
            items = node.get("items")
            if not isinstance(items, dict):
                raise ValueError(f"expression field {pointer!r}: {part!r} is not a list")
            node = items
            continue
        properties = node.get("properties", {})
        if part not in properties:
            raise ValueError(f"expression field {pointer!r}: no property {part!r}")
        node = properties[part]
    return node


def _object_of(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The schema a step goes into: a ``$ref`` followed into ``$defs``, an optional
    (``anyOf`` with null) unwrapped."""
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _object_of(root, root["$defs"][ref.removeprefix("#/$defs/")])
    options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        return _object_of(root, options[0])
    return node
