"""The checks of a definition's graph: dangling edges, reachability from the start, cycles
without a loop guard, and regions (a node reached from two branches of a fork). They work
on the parsed nodes (:class:`NodeInfo`) whatever parsed them: the whole-definition validator,
or the incremental one that re-parses only the nodes an edit touched."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowyard.domain.definition import NodeSpec
from flowyard.domain.errors import Problem
from flowyard.nodes.base import NodeType, Route


@dataclass(slots=True)
class NodeInfo:
    """A parsed node as the checks of the whole graph see it."""

    index: int
    spec: NodeSpec
    node_type: NodeType[Any] | None = None
    config: Any = None
    routes: list[Route] = field(default_factory=list)
    #: False when the type is unknown or the config did not parse: the node's own targets
    #: are then unknown, so the graph checks must not draw conclusions from their absence.
    routes_known: bool = True


@dataclass(frozen=True, slots=True)
class GraphFacts:
    """What a graph check found beyond its problems, for the incremental checks to derive
    the next edit's outcome from: the nodes reached from the start, every cyclic component
    (guarded or not, in :func:`find_cycles`' order), and whether a region problem was found."""

    reachable: frozenset[str]
    cycles: tuple[frozenset[str], ...]
    shared: bool


@dataclass(slots=True)
class BrokenNode:
    """A node whose id is readable but whose spec did not parse (reported structurally)."""

    index: int
    raw: Any


def check_graph(
    infos: dict[str, NodeInfo],
    broken: dict[str, BrokenNode],
    start: str | None,
    problems: list[Problem],
    facts: list[GraphFacts] | None = None,
) -> list[set[str]] | None:
    """Check edges, reachability, cycles and regions; the cycles of the parsed nodes
    (None when the start is missing: nothing was judged). ``facts``: where to append what
    was found beyond the problems (when the start exists)."""
    known = infos.keys() | broken.keys()
    # ``edges``: certain edges between parsed nodes (cycles are judged on these only);
    # ``maybe``: a superset for reachability, adding every node id named anywhere in a
    # node whose targets are unknown, so one broken node does not make others look
    # unreachable.
    edges: dict[str, list[str]] = {}
    maybe: dict[str, list[str]] = {}
    for node_id, info in infos.items():
        spec = info.spec
        # (pointer within the node, target): pointers are made only for a dangling one.
        targets: list[tuple[str, str]] = [("/next", spec.next)] if spec.next is not None else []
        targets += [(route.pointer, route.target) for route in info.routes]
        if spec.catch:
            targets += [(f"/catch/{j}/next", rule.next) for j, rule in enumerate(spec.catch)]
        certain: list[str] = []
        possible = [] if info.routes_known else _mentions(spec.config, known)
        for pointer, target in targets:
            if target not in known:
                problems.append(dangling_edge(f"/nodes/{info.index}{pointer}", target))
                continue
            possible.append(target)
            if target in infos:
                certain.append(target)
        edges[node_id] = certain
        maybe[node_id] = possible
    for node_id, node in broken.items():
        maybe[node_id] = _mentions(node.raw, known)
    if start is None:
        return None  # a structural problem at /start is already reported
    if start not in known:
        problems.append(Problem("/start", f"start node {start!r} does not exist", "dangling_start"))
        return None
    reachable = _reachable(start, maybe)
    indexes = {node_id: info.index for node_id, info in infos.items()}
    indexes.update((node_id, node.index) for node_id, node in broken.items())
    for node_id, index in indexes.items():
        if node_id not in reachable:
            problems.append(unreachable(index, node_id, start))
    cycles = find_cycles(edges)
    for component in cycles:
        if not any(infos[n].spec.max_iterations for n in component):
            problems.append(unguarded_cycle(component, indexes))
    found = len(problems)
    check_regions(infos, start, problems)
    if facts is not None:
        facts.append(
            GraphFacts(
                frozenset(reachable),
                tuple(frozenset(c) for c in cycles),
                len(problems) > found,
            )
        )
    return cycles


def unguarded_cycle(component: Collection[str], indexes: Mapping[str, int]) -> Problem:
    """The problem of a cycle without a loop guard (``indexes``: node id -> index)."""
    ordered = sorted(component, key=lambda n: indexes[n])
    loop = " -> ".join([*ordered, ordered[0]])
    return Problem(
        f"/nodes/{indexes[ordered[0]]}",
        f"cycle {loop} has no loop guard: set max_iterations on one of its nodes",
        "unguarded_cycle",
    )


def dangling_edge(pointer: str, target: str) -> Problem:
    """The problem of an edge (at ``pointer``) to a node that does not exist."""
    return Problem(pointer, f"no node has id {target!r}", "dangling_edge")


def unreachable(index: int, node_id: str, start: str) -> Problem:
    """The problem of a node no path from the start reaches."""
    return Problem(
        f"/nodes/{index}", f"node {node_id!r} is not reachable from start {start!r}", "unreachable"
    )


def node_targets(info: NodeInfo) -> list[str]:
    """Every node a parsed node may go to next (its ``next``, routes and catch routes)."""
    targets = [info.spec.next] if info.spec.next else []
    targets.extend(route.target for route in info.routes)
    targets.extend(rule.next for rule in info.spec.catch)
    return targets


def _mentions(value: Any, known: Collection[str]) -> list[str]:
    """Node ids named by any string inside ``value`` (nested dicts and lists)."""
    found: list[str] = []
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if item in known:
                found.append(item)
        elif isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return found


def _reachable(start: str, edges: Mapping[str, list[str]]) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for target in edges.get(stack.pop(), []):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def find_cycles(edges: Mapping[str, list[str]]) -> list[set[str]]:
    """Strongly connected components that form cycles (Tarjan, iterative so 10k-node
    definitions cannot hit the recursion limit), among the nodes that are not peeled off as
    acyclic first (most workflows are acyclic: peeling is one cheap pass)."""
    edges = _cyclic_core(edges)
    if not edges:
        return []
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[set[str]] = []
    counter = 0
    for root in edges:
        if root in index_of:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child_pos = work.pop()
            if child_pos == 0:
                index_of[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = edges.get(node, [])
            if child_pos < len(children):
                work.append((node, child_pos + 1))
                child = children[child_pos]
                if child not in index_of:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index_of[child])
                continue
            if low[node] == index_of[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, []):
                    result.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result


def _cyclic_core(edges: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The nodes left after repeatedly removing those with no incoming edge (Kahn): every
    cycle is among them, with the edges between them, in the order of ``edges``."""
    incoming = dict.fromkeys(edges, 0)
    for targets in edges.values():
        for target in targets:
            if target in incoming:
                incoming[target] += 1
    free = [node for node, count in incoming.items() if count == 0]
    while free:
        for target in edges[free.pop()]:
            if target in incoming:
                incoming[target] -= 1
                if incoming[target] == 0:
                    free.append(target)
    left = {node for node, count in incoming.items() if count > 0}
    return {
        node: [t for t in targets if t in left] for node, targets in edges.items() if node in left
    }


def check_regions(infos: dict[str, NodeInfo], start: str, problems: list[Problem]) -> None:
    """Every node belongs to one region: the main path, or one branch of one fork
    (``parallel`` branches, a ``map``'s per-item sub-graph). A node reached from two regions
    would run inside a branch and again after the join."""
    owner: dict[str, str] = {}
    reported: set[str] = set()
    regions = [(start, "the main path")]
    while regions:
        root, region = regions.pop(0)
        stack, seen = [root], set()
        while stack:
            node_id = stack.pop()
            if node_id in seen or node_id not in infos:
                continue
            seen.add(node_id)
            if owner.setdefault(node_id, region) != region:
                if node_id not in reported:
                    reported.add(node_id)
                    problems.append(
                        Problem(
                            f"/nodes/{infos[node_id].index}",
                            f"node {node_id!r} is reached from {owner[node_id]} and from "
                            f"{region}: a branch ends where its path ends, and the fork's "
                            "'next' continues after the join",
                            "shared_node",
                        )
                    )
                continue
            info = infos[node_id]
            spec = info.spec
            if info.routes:
                forks: set[str] = set()
                if info.node_type is not None and info.routes_known:
                    # (Branch routes are among the routes: a node without routes has none.)
                    for route in info.node_type.branch_routes(info.config):
                        forks.add(route.target)
                        regions.append((route.target, f"branch {route.target!r} of {node_id!r}"))
                stack += [r.target for r in info.routes if r.target not in forks]
            if spec.catch:
                stack += [rule.next for rule in spec.catch]
            if spec.next is not None:
                stack.append(spec.next)
