"""A definition as the console draws it: its nodes, its labelled edges and the groups that
parallel and map nodes fork (``GET /workflows/{ref}/graph``).

The edges are what the node types declare, not a list of field names the console knows:
``next`` and ``catch`` of every node, plus :meth:`NodeType.routes` of its parsed config
(with the route's label), so a plugin type that routes is drawn with its edges. The routes
among :meth:`NodeType.branch_routes` start a fork's branches: every node they reach is
drawn inside the fork's group (the innermost one when forks nest). A definition that does
not validate is still drawn (drafts are often invalid): a node whose type is unknown or
whose config does not parse shows its ``next`` and ``catch`` only.

A state machine (the ``states``/``actions`` form) is drawn as states and actions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import pydantic

from flowyard.domain.state_machine import is_state_machine
from flowyard.nodes.base import NodeType, Route
from flowyard.nodes.registry import NodeRegistry


class EdgeKind(StrEnum):
    """Where an edge comes from (the console styles each kind its own way)."""

    NEXT = "next"
    ROUTE = "route"  # a route in the config: a condition's case, a wait's timeout
    BRANCH = "branch"  # a route that starts a fork's branch (parallel, map)
    CATCH = "catch"
    ACTION = "action"  # a state machine's action
    DISABLED_ACTION = "disabled_action"


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One element drawn: a node, or a state of a state machine."""

    id: str
    type: str
    name: str | None = None
    start: bool = False
    #: The group (its fork node's id) drawn around this node, the innermost one.
    group: str | None = None
    #: False when the type is unknown or the config did not parse: routes inside the
    #: config are then not drawn.
    known: bool = True
    disabled: bool = False
    final: bool = False
    #: A state's ``on_enter`` node ids, shown on hover.
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class GraphEdge:
    """One labelled edge; ``pointer`` (relative to the source node) is where it is set."""

    source: str
    target: str
    kind: EdgeKind
    label: str = ""
    pointer: str = ""


@dataclass(frozen=True, slots=True)
class GraphGroup:
    """The box drawn around the branches a parallel or map node forks."""

    id: str  # the fork node's id
    type: str
    label: str
    #: The group this one is drawn in, when the fork node itself sits in a branch.
    parent: str | None = None


@dataclass(slots=True)
class Graph:
    """What :func:`definition_graph` answers."""

    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)
    groups: list[GraphGroup] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form served by the API."""
        return {
            "nodes": [asdict(n) for n in self.nodes],
            "edges": [asdict(e) for e in self.edges],
            "groups": [asdict(g) for g in self.groups],
        }


def definition_graph(definition: Mapping[str, Any], registry: NodeRegistry) -> Graph:
    """The graph of ``definition`` (either form; need not be valid)."""
    if is_state_machine(definition):
        return _machine_graph(definition)
    raw_nodes = [n for n in _dicts(definition.get("nodes")) if isinstance(n.get("id"), str)]
    ids = {n["id"] for n in raw_nodes}
    start = definition.get("start")
    edges: list[GraphEdge] = []
    forks: dict[str, list[str]] = {}  # fork node id -> its branch starts
    known: dict[str, bool] = {}
    for raw in raw_nodes:
        routes, branches, known[raw["id"]] = _config_routes(raw, registry)
        edges.extend(_node_edges(raw, routes, branches, ids))
        if branches:
            forks[raw["id"]] = [r.target for r in branches if r.target in ids]
    innermost, parents = _groups(forks, edges)
    by_id = {n["id"]: n for n in raw_nodes}
    nodes = [
        GraphNode(
            id=n["id"],
            type=str(n.get("type", "")),
            name=_text(n.get("name")),
            start=n["id"] == start,
            group=innermost.get(n["id"]),
            known=known[n["id"]],
        )
        for n in raw_nodes
    ]
    groups = [
        GraphGroup(
            id=fork,
            type=str(by_id[fork].get("type", "")),
            label=f"{by_id[fork].get('type')} {_text(by_id[fork].get('name')) or fork}",
            parent=parents.get(fork),
        )
        for fork in forks
    ]
    return Graph(nodes, edges, groups)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _config_routes(
    raw: Mapping[str, Any], registry: NodeRegistry
) -> tuple[list[Route], list[Route], bool]:
    """(routes, the branch-starting ones among them, whether the config was understood)."""
    node_type: NodeType[Any] | None = registry.get(str(raw.get("type")))
    config = raw.get("config", {})
    if node_type is None or not isinstance(config, dict):
        return [], [], False
    try:
        parsed = node_type.parse_config(config)
    except (pydantic.ValidationError, ValueError, TypeError):
        return [], [], False
    return node_type.routes(parsed), node_type.branch_routes(parsed), True


def _node_edges(
    raw: Mapping[str, Any], routes: list[Route], branches: list[Route], ids: set[str]
) -> Iterable[GraphEdge]:
    source = raw["id"]
    starting = {r.pointer for r in branches}
    for route in routes:
        if route.target in ids:
            kind = EdgeKind.BRANCH if route.pointer in starting else EdgeKind.ROUTE
            label = route.label or route.pointer.removeprefix("/config/")
            yield GraphEdge(source, route.target, kind, label, route.pointer)
    target = raw.get("next")
    if isinstance(target, str) and target in ids:
        yield GraphEdge(source, target, EdgeKind.NEXT, "", "/next")
    for i, rule in enumerate(_dicts(raw.get("catch"))):
        target = rule.get("next")
        if isinstance(target, str) and target in ids:
            errors = rule.get("errors")
            names = [e for e in errors if isinstance(e, str)] if isinstance(errors, list) else []
            label = "catch " + ", ".join(names or ["*"])
            yield GraphEdge(source, target, EdgeKind.CATCH, label, f"/catch/{i}/next")


def _groups(
    forks: Mapping[str, list[str]], edges: list[GraphEdge]
) -> tuple[dict[str, str], dict[str, str]]:
    """Each node's innermost fork group, and each fork's parent group: a branch is every
    node reachable from its start without passing through its fork node."""
    out: dict[str, list[str]] = {}
    for edge in edges:
        out.setdefault(edge.source, []).append(edge.target)
    members: dict[str, set[str]] = {}
    for fork, starts in forks.items():
        seen: set[str] = set()
        stack = list(starts)
        while stack:
            node = stack.pop()
            if node == fork or node in seen:
                continue
            seen.add(node)
            stack.extend(out.get(node, ()))
        members[fork] = seen
    # Smallest first: the first group holding a node is its innermost.
    order = sorted(members, key=lambda f: len(members[f]))
    innermost: dict[str, str] = {}
    for fork in order:
        for node in members[fork]:
            innermost.setdefault(node, fork)
    parents = {fork: innermost[fork] for fork in forks if fork in innermost}
    return innermost, parents


def _machine_graph(definition: Mapping[str, Any]) -> Graph:
    states = [s for s in _dicts(definition.get("states")) if isinstance(s.get("id"), str)]
    ids = {s["id"] for s in states}
    nodes = [
        GraphNode(
            id=s["id"],
            type="final state" if s.get("is_final") else "state",
            name=_text(s.get("name")),
            start=s.get("is_initial") is True,
            disabled=s.get("enabled") is False,
            final=s.get("is_final") is True,
            detail=", ".join(n["id"] for n in _dicts(s.get("on_enter")) if "id" in n) or None,
        )
        for s in states
    ]
    edges: list[GraphEdge] = []
    for i, action in enumerate(_dicts(definition.get("actions"))):
        target, origins = action.get("to_state"), action.get("from_states")
        if not isinstance(target, str) or target not in ids or not isinstance(origins, list):
            continue
        kind = EdgeKind.DISABLED_ACTION if action.get("enabled") is False else EdgeKind.ACTION
        label = _text(action.get("name")) or str(action.get("id", ""))
        for origin in origins:
            if isinstance(origin, str) and origin in ids:
                edges.append(GraphEdge(origin, target, kind, label, f"/actions/{i}"))
    return Graph(nodes, edges)


def edge_changes(old: Graph, new: Graph) -> dict[str, list[dict[str, Any]]]:
    """Edges (source, target, kind, label) in ``new`` and not in ``old``, and the other
    way round, each list in the order its graph has them."""

    def key(e: GraphEdge) -> tuple[str, str, str, str]:
        return (e.source, e.target, e.kind, e.label)

    before = {key(e) for e in old.edges}
    after = {key(e) for e in new.edges}
    return {
        "added": [asdict(e) for e in new.edges if key(e) not in before],
        "removed": [asdict(e) for e in old.edges if key(e) not in after],
    }
