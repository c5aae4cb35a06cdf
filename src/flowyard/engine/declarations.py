"""What a definition declares about how the outside reaches its runs: the correlation key
(checked like the node configs' templates) and the signal names it accepts (every
``wait_for_signal`` must wait for a declared one). Used by the validator."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from flowyard.domain.definition import WorkflowDefinition
from flowyard.domain.errors import Problem
from flowyard.nodes.base import ExpressionRef, NodeType

#: Where the correlation key's template sits in a definition.
CORRELATION_KEY_POINTER = "/correlation/key"


def correlation_expressions(definition: WorkflowDefinition) -> list[tuple[str, ExpressionRef]]:
    """The correlation key's template, to be compiled with the nodes' expressions."""
    spec = definition.correlation
    if spec is None or spec.key is None:
        return []
    return [(CORRELATION_KEY_POINTER, ExpressionRef(CORRELATION_KEY_POINTER, spec.key, "template"))]


def signal_problems(
    declared: Sequence[str] | None,
    nodes: Iterable[tuple[int, NodeType[Any], Any]],
) -> list[Problem]:
    """Duplicates in ``/signals``, and nodes (``(index, type, parsed config)``) waiting for
    a signal the list does not name. Without a list every name is accepted: no problem."""
    if declared is None:
        return []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, name in enumerate(declared):
        if name in seen:
            problems.append(
                Problem(
                    f"/signals/{i}",
                    f"signal {name!r} is declared twice (first at /signals/{seen[name]})",
                    "duplicate_signal",
                )
            )
        seen.setdefault(name, i)
    names = ", ".join(repr(n) for n in seen) or "none"
    for index, node_type, config in nodes:
        for pointer, name in node_type.signal_refs(config):
            if name not in seen:
                problems.append(
                    Problem(
                        f"/nodes/{index}{pointer}",
                        f"signal {name!r} is not declared in /signals (declared: {names})",
                        "undeclared_signal",
                    )
                )
    return problems
