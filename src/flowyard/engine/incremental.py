"""Validating a draft edit by edit: only the nodes an edit touched are checked again.

A definition's problems are what each node says about itself (its spec, type, config and
expressions: the same whatever the node's index) plus what the whole says (the frame: name,
start, signals, ...; duplicate ids; the graph). :class:`NodeCheck` keeps the first, per node,
with pointers relative to the node; :class:`DefinitionCheck` keeps them for one definition
with the graph checks' outcome. Given the previous check and the JSON Patch an edit applied,
:func:`reusable` tells which node checks still hold (an operation under ``/nodes/3`` makes
node 3's stale; adding or removing a node shifts the rest, which stay valid), so an edit of
one node of 1,000 parses one config and compiles its templates, not 1,000. The graph checks
(dangling edges, reachability, cycles, regions) run again only when an edge, an id, a loop
guard or the start changed: each node check carries its *graph signature*.

The answer is exactly :meth:`DefinitionValidator.validate`'s problems (a property test
replays random edit sequences against it). Whatever this module does not take apart is
validated whole: a state machine, a ``nodes`` that is not a list of 1 to 10,000 nodes, a
definition over its expression count, and a compile budget spent before the end.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from flowyard.domain.definition import MAX_NODES, NODE_ID_PATTERN, NodeSpec, WorkflowDefinition
from flowyard.domain.errors import Problem
from flowyard.domain.state_machine import is_state_machine
from flowyard.engine.declarations import correlation_expressions, signal_problems
from flowyard.engine.graph_checks import (
    BrokenNode,
    GraphFacts,
    NodeInfo,
    check_graph,
    dangling_edge,
    unguarded_cycle,
    unreachable,
)
from flowyard.engine.input_schema import schema_problems
from flowyard.engine.validation import (
    CompileBudget,
    DefinitionValidator,
    duplicate_id,
    pointer_key,
    pydantic_problems,
)
from flowyard.nodes.base import ExpressionRef, NodeType, Route

_NODE_ID = re.compile(NODE_ID_PATTERN)
#: Stands for the nodes when the frame (everything but the nodes) is parsed on its own.
_PLACEHOLDER = NodeSpec(id="placeholder", type="placeholder")


@dataclass(frozen=True, slots=True, eq=False)
class NodeCheck:
    """What one node says about itself, with pointers relative to the node."""

    #: The node as written (kept only for a node whose spec did not parse: the graph
    #: checks look for node ids in it).
    raw: Any
    #: None when the spec did not parse (``problems`` then says why).
    spec: NodeSpec | None
    problems: tuple[Problem, ...]
    #: The id of a node whose spec did not parse, when it is a valid id.
    broken_id: str | None = None
    node_type: NodeType[Any] | None = None
    config: Any = None
    routes: tuple[Route, ...] = ()
    routes_known: bool = False
    expressions: tuple[tuple[str, ExpressionRef], ...] = ()
    expression_problems: tuple[Problem, ...] = ()
    credentials: tuple[tuple[str, str], ...] = ()
    #: What the graph checks read of this node: equal signatures, equal graph outcome.
    graph: Any = None


@dataclass(frozen=True, slots=True)
class DefinitionCheck:
    """A definition's problems (sorted, pointers into the definition) and, when it has
    none, the credentials it references (pointer, name)."""

    problems: list[Problem]
    credentials: list[tuple[str, str]]
    #: The node checks, to reuse for the next edit (None: validated whole).
    nodes: tuple[NodeCheck, ...] | None = None
    graph_key: Any = None
    graph_problems: tuple[Problem, ...] = ()
    #: The ids of the nodes and every id their edges name, when every node's routes are
    #: known and the graph was judged from an existing start (None otherwise): what tells
    #: whether a node appended later can change anything but its own problems.
    graph_names: tuple[frozenset[str], frozenset[str]] | None = None
    #: What the graph checks found beyond their problems (with ``graph_names`` only): what
    #: lets an edit of some nodes' edges or a rename derive the graph's outcome.
    graph_facts: GraphFacts | None = None
    #: How many node checks were computed for this answer (the rest were reused).
    checked: int = 0


def _under(problems: Iterable[Problem], base: str) -> list[Problem]:
    return [Problem(base + p.pointer, p.message, p.code) for p in problems]


def _index(token: str, size: int, *, end_ok: bool) -> int | None:
    if token == "-" and end_ok:
        return size
    if not token.isascii() or not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        return None
    index = int(token)
    return index if index < size + (1 if end_ok else 0) else None


def reusable(
    previous: DefinitionCheck | None, patch: Sequence[Mapping[str, Any]], size: int
) -> list[NodeCheck | None] | None:
    """The previous node checks that still hold after ``patch`` (operations with paths
    relative to the definition, as applied: ``add``, ``remove``, ``replace``, ``test``),
    None where a node must be checked again; None when nothing can be reused."""
    if previous is None or previous.nodes is None:
        return None
    nodes: list[NodeCheck | None] = list(previous.nodes)
    for op in patch:
        kind, path = op.get("op"), op.get("path")
        if kind == "test":
            continue
        if not isinstance(path, str) or kind not in ("add", "remove", "replace"):
            return None
        parts = path.split("/")[1:]
        if not parts:
            return None  # the whole definition replaced
        if parts[0] != "nodes":
            continue  # the frame: checked on every edit
        if len(parts) == 1:
            return None  # the whole node list
        index = _index(parts[1], len(nodes), end_ok=kind == "add" and len(parts) == 2)
        if index is None:
            return None
        if len(parts) > 2 or kind == "replace":
            nodes[index] = None
        elif kind == "add":
            nodes.insert(index, None)
        else:
            del nodes[index]
    return nodes if len(nodes) == size else None


class IncrementalValidator:
    """Checks definitions node by node, reusing what a previous check found."""

    def __init__(self, validator: DefinitionValidator) -> None:
        self.validator = validator

    def check(
        self,
        raw: Any,
        *,
        previous: DefinitionCheck | None = None,
        reuse: Sequence[NodeCheck | None] | None = None,
        budget_s: float | None = None,
    ) -> DefinitionCheck:
        """The problems of ``raw``: node checks from ``reuse`` (see :func:`reusable`) where
        present, the graph outcome of ``previous`` when its signature did not change."""
        nodes = raw.get("nodes") if isinstance(raw, Mapping) else None
        if (
            not isinstance(raw, Mapping)
            or is_state_machine(raw)
            or not isinstance(nodes, list)
            or not 1 <= len(nodes) <= MAX_NODES
        ):
            return self.whole(raw, budget_s)
        limits = self.validator.expressions.limits
        budget = CompileBudget(
            limits.compile_budget_s if budget_s is None else budget_s, limits.max_templates
        )
        if reuse is None or len(reuse) != len(nodes):
            reuse = [None] * len(nodes)
        checks: list[NodeCheck] = []
        for item, kept in zip(nodes, reuse, strict=True):
            if kept is None:
                kept = self.check_node(item, budget)
                if budget.stopped:
                    return self.whole(raw, budget_s)
            checks.append(kept)
        checked = sum(1 for kept in reuse if kept is None)
        return self._assemble(raw, tuple(checks), budget, previous, checked) or self.whole(
            raw, budget_s
        )

    def whole(self, raw: Any, budget_s: float | None = None) -> DefinitionCheck:
        """Validate ``raw`` whole (nothing to reuse next time)."""
        result = self.validator.validate(raw, budget_s=budget_s)
        credentials = [] if result.workflow is None else result.workflow.credential_refs()
        return DefinitionCheck(result.problems, credentials)

    def check_node(self, item: Any, budget: CompileBudget) -> NodeCheck:
        """What one node says about itself (its expressions compiled within ``budget``)."""
        try:
            spec = NodeSpec.model_validate(item)
        except ValidationError as exc:
            node_id = item.get("id") if isinstance(item, Mapping) else None
            valid = isinstance(node_id, str) and _NODE_ID.match(node_id) is not None
            return NodeCheck(
                copy.deepcopy(item),
                None,
                tuple(pydantic_problems(exc, "")),
                broken_id=node_id if valid else None,
                graph=object(),
            )
        info = NodeInfo(0, spec)
        problems: list[Problem] = []
        expressions = self.validator.check_node(info, "", problems)
        failed: list[Problem] = []
        for done, (pointer, ref) in enumerate(expressions):
            problem = self.validator.check_expression(ref, pointer, budget, done)
            if budget.stopped:
                break
            if problem is not None:
                failed.append(problem)
        node_type, config = info.node_type, info.config
        credentials: tuple[tuple[str, str], ...] = ()
        # What the graph checks read of the node: its routes, or (when they are unknown)
        # its config too, which a fresh object stands for (equal to nothing else).
        graph: Any = object()
        if node_type is not None and info.routes_known:
            credentials = tuple(node_type.credential_refs(config))
            graph = (
                spec.id,
                spec.next,
                tuple((route.pointer, route.target) for route in info.routes),
                tuple(rule.next for rule in spec.catch),
                spec.max_iterations,
                tuple(route.target for route in node_type.branch_routes(config)),
            )
        return NodeCheck(
            None,
            spec,
            tuple(problems),
            node_type=node_type,
            config=config,
            routes=tuple(info.routes),
            routes_known=info.routes_known,
            expressions=tuple(expressions),
            expression_problems=tuple(failed),
            credentials=credentials,
            graph=graph,
        )

    def _assemble(
        self,
        raw: Mapping[str, Any],
        checks: tuple[NodeCheck, ...],
        budget: CompileBudget,
        previous: DefinitionCheck | None,
        checked: int,
    ) -> DefinitionCheck | None:
        """The definition's problems, in the order :meth:`DefinitionValidator.validate`
        finds them (then sorted the same way); None to validate whole instead."""
        problems: list[Problem] = []
        frame: WorkflowDefinition | None = None
        try:
            frame = WorkflowDefinition.model_validate({**raw, "nodes": [_PLACEHOLDER]})
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, ""))
        parsed = True
        for index, check in enumerate(checks):
            if check.spec is None:
                parsed = False
                problems.extend(_under(check.problems, f"/nodes/{index}"))
        definition = None
        if frame is not None and parsed:
            definition = frame.model_copy(update={"nodes": [c.spec for c in checks]})
        kept, broken, count = self._nodes(checks, problems)
        if count > budget.max_templates:
            return None
        if definition is not None:
            found = correlation_expressions(definition)
            problems.extend(self.validator.check_expressions(found, budget))
            if budget.stopped:
                return None
            typed = [
                (index, check.node_type, check.config)
                for index, _, check in kept.values()
                if check.node_type is not None and check.routes_known
            ]
            problems.extend(signal_problems(definition.signals, typed))
        broken = {node_id: b for node_id, b in broken.items() if node_id not in kept}
        start = definition.start if definition else raw.get("start")
        start = start if isinstance(start, str) else None
        graph_key = (start, tuple(check.graph for check in checks))
        graph_problems, names, facts = _graph(previous, graph_key, kept, broken)
        problems.extend(graph_problems)
        schema = definition.input_schema if definition else raw.get("input_schema")
        if isinstance(schema, dict):
            problems.extend(schema_problems(schema))
        problems.sort(key=lambda p: pointer_key(p.pointer))
        credentials: list[tuple[str, str]] = []
        if not problems:
            for index, _, check in kept.values():
                credentials += [(f"/nodes/{index}{p}", name) for p, name in check.credentials]
        return DefinitionCheck(
            problems,
            credentials,
            checks,
            graph_key,
            graph_problems,
            names,
            facts,
            checked=checked,
        )

    @staticmethod
    def _nodes(
        checks: tuple[NodeCheck, ...], problems: list[Problem]
    ) -> tuple[dict[str, tuple[int, NodeSpec, NodeCheck]], dict[str, BrokenNode], int]:
        """Add the nodes' own problems, then their expressions' (as the validator orders
        them); the first node of each id, the nodes that did not parse, and how many
        expressions the definition holds."""
        kept: dict[str, tuple[int, NodeSpec, NodeCheck]] = {}
        broken: dict[str, BrokenNode] = {}
        failed: list[Problem] = []
        count = 0
        for index, check in enumerate(checks):
            spec = check.spec
            if spec is None:
                if check.broken_id is not None:
                    broken.setdefault(check.broken_id, BrokenNode(index, check.raw))
                continue
            first = kept.get(spec.id)
            if first is not None:
                problems.append(duplicate_id(f"/nodes/{index}", spec.id, first[0]))
                continue
            kept[spec.id] = (index, spec, check)
            if check.problems:
                problems.extend(_under(check.problems, f"/nodes/{index}"))
            count += len(check.expressions)
            if check.expression_problems:
                failed.extend(_under(check.expression_problems, f"/nodes/{index}"))
        problems.extend(failed)
        return kept, broken, count


def _graph(
    previous: DefinitionCheck | None,
    graph_key: Any,
    kept: Mapping[str, tuple[int, NodeSpec, NodeCheck]],
    broken: dict[str, BrokenNode],
) -> tuple[tuple[Problem, ...], tuple[frozenset[str], frozenset[str]] | None, GraphFacts | None]:
    """The graph checks' outcome: kept from ``previous`` when no signature changed,
    derived from it when a node was appended or some edges or an id changed (where that
    is exact), else checked (the first node of each id, the nodes that did not parse)."""
    if previous is not None and previous.graph_key == graph_key:
        return previous.graph_problems, previous.graph_names, previous.graph_facts
    start, signatures = graph_key
    if (appended := _appended(previous, graph_key, len(signatures) - 1)) is not None:
        return (*appended, previous.graph_facts if previous is not None else None)
    if (derived := _edited(previous, graph_key, broken)) is not None:
        return derived
    if not kept and not broken:
        return (), None, None
    infos = {
        node_id: NodeInfo(
            index, spec, check.node_type, check.config, list(check.routes), check.routes_known
        )
        for node_id, (index, spec, check) in kept.items()
    }
    found: list[Problem] = []
    facts: list[GraphFacts] = []
    check_graph(infos, broken, start, found, facts)
    names = _names(graph_key, broken, found)
    if names is None or not facts or len(names[0]) != len(signatures):
        return tuple(found), names, None
    return tuple(found), names, facts[0]  # every node is in the graph, once


def _names(
    graph_key: Any, broken: Mapping[str, Any], problems: Sequence[Problem]
) -> tuple[frozenset[str], frozenset[str]] | None:
    """The node ids and the ids their edges name (see ``DefinitionCheck.graph_names``)."""
    start, signatures = graph_key
    if start is None or broken or any(p.code == "dangling_start" for p in problems):
        return None
    ids: set[str] = set()
    named: set[str] = set()
    for signature in signatures:
        if not isinstance(signature, tuple):
            return None  # a node whose routes are unknown: it may name anything
        node_id, following, routes, catch, _, _ = signature
        ids.add(node_id)
        if following is not None:
            named.add(following)
        named.update(target for _, target in routes)
        named.update(catch)
    return frozenset(ids), frozenset(named)


def _appended(
    previous: DefinitionCheck | None, graph_key: Any, index: int
) -> tuple[tuple[Problem, ...], tuple[frozenset[str], frozenset[str]]] | None:
    """The graph's problems when the only change is a node appended (at ``index``) that no
    node names and that does not name itself (an add without ``after``): it is then
    unreachable, in no cycle and in no region, and its dangling edges are its own; every
    other node's outcome stands. None when that is not the case."""
    if previous is None or previous.graph_names is None:
        return None
    start, signatures = graph_key
    before_start, before = previous.graph_key
    signature = signatures[-1] if signatures else None
    if (
        start != before_start
        or len(signatures) != len(before) + 1
        or not isinstance(signature, tuple)
        or signatures[:-1] != before
    ):
        return None
    ids, named = previous.graph_names
    node_id, following, routes, catch, _, _ = signature
    edges = [("/next", following)] if following is not None else []
    edges += list(routes)
    edges += [(f"/catch/{j}/next", target) for j, target in enumerate(catch)]
    if node_id in ids or node_id in named or node_id == start:
        return None
    if any(target == node_id for _, target in edges):
        return None  # a loop on itself: a cycle
    found = [
        dangling_edge(f"/nodes/{index}{pointer}", target)
        for pointer, target in edges
        if target not in ids
    ]
    found.append(unreachable(index, node_id, start))
    return (
        (*previous.graph_problems, *found),
        (ids | {node_id}, named | {target for _, target in edges}),
    )


def _targets(signature: tuple[Any, ...]) -> list[str]:
    """Every node a node's graph signature goes to (``next``, routes, catch routes)."""
    _, following, routes, catch, _, _ = signature
    found = [following] if following is not None else []
    found += [target for _, target in routes]
    found += catch
    return found


def _dangling(signatures: Sequence[tuple[Any, ...]], ids: frozenset[str]) -> list[Problem]:
    """The dangling edges of every node, in the graph checks' order (node by node: next,
    routes, catch routes)."""
    found: list[Problem] = []
    for index, (_, following, routes, catch, _, _) in enumerate(signatures):
        if following is not None and following not in ids:
            found.append(dangling_edge(f"/nodes/{index}/next", following))
        for pointer, target in routes:
            if target not in ids:
                found.append(dangling_edge(f"/nodes/{index}{pointer}", target))
        for j, target in enumerate(catch):
            if target not in ids:
                found.append(dangling_edge(f"/nodes/{index}/catch/{j}/next", target))
    return found


def _relabel(signature: tuple[Any, ...], old: str, new: str) -> tuple[Any, ...]:
    """A graph signature with node id ``old`` written ``new`` wherever it appears."""

    def swap(name: Any) -> Any:
        return new if name == old else name

    node_id, following, routes, catch, guard, branches = signature
    return (
        swap(node_id),
        swap(following),
        tuple((pointer, swap(target)) for pointer, target in routes),
        tuple(swap(target) for target in catch),
        guard,
        tuple(swap(target) for target in branches),
    )


def _edited(
    previous: DefinitionCheck | None, graph_key: Any, broken: Mapping[str, Any]
) -> tuple[tuple[Problem, ...], tuple[frozenset[str], frozenset[str]], GraphFacts] | None:
    """The graph's problems derived from the previous check's, without walking the graph,
    for the two edits that change edges of a large draft (decision 0037):

    - *edges of unreached nodes*: the nodes whose signature changed keep their ids and
      none was reachable or in a cycle before. What is reachable cannot change (the walk
      from the start never met them, and every edge it followed is as it was), so neither
      can the unreachable nodes nor the regions; a new cycle would have to run through a
      changed node's edge back to a changed node, which a walk from their targets rules
      out (skipped when nothing names a changed node). Only the dangling edges are
      recomputed (a pass over the signatures, no walk).
    - *edges gained by reached nodes* in a graph without forks (so without regions): the
      changed nodes keep every target and their guard, no cycle closes (the same walk):
      what their new targets reach joins the reached nodes, nothing leaves.
    - *a rename*: one node's id changed from ``old`` to ``new``, the new graph is the old
      one with ``old`` written ``new`` everywhere (every signature that changed is the old
      one relabelled; ``old`` is named nowhere now and ``new`` was named nowhere before),
      and there was no region problem. The graph is the same graph: the reachable nodes
      and the cycles are relabelled, and the problems are made again from them.

    Where every node is in the graph once (no broken node, no duplicate id, every node's
    routes known) and the start exists, before and after. None otherwise: walk the graph."""
    if previous is None or previous.graph_facts is None or previous.graph_names is None:
        return None
    start, signatures = graph_key
    before_start, before = previous.graph_key
    if len(signatures) != len(before) or start is None:
        return None
    names = _names(graph_key, broken, ())
    if names is None:
        return None
    ids, named = names
    if len(ids) != len(signatures) or start not in ids:
        return None
    facts = previous.graph_facts
    changed = [i for i, (a, b) in enumerate(zip(before, signatures, strict=True)) if a != b]
    renamed = [i for i in changed if before[i][0] != signatures[i][0]]
    if not renamed:
        if start != before_start:
            return None
        return _edges_edited(previous, signatures, changed, names)
    if len(renamed) != 1 or facts.shared:
        return None
    old, new = before[renamed[0]][0], signatures[renamed[0]][0]
    old_ids, old_named = previous.graph_names
    if new in old_ids or new in old_named or old in named or new == before_start:
        return None
    if start != (new if before_start == old else before_start):
        return None
    if any(_relabel(before[i], old, new) != signatures[i] for i in changed):
        return None
    reachable = facts.reachable
    if old in reachable:
        reachable = (reachable - {old}) | {new}
    cycles = tuple(
        (component - {old}) | {new} if old in component else component for component in facts.cycles
    )
    problems = _assembled(signatures, ids, start, reachable, cycles)
    return problems, names, GraphFacts(reachable, cycles, False)


def _assembled(
    signatures: Sequence[tuple[Any, ...]],
    ids: frozenset[str],
    start: str,
    reachable: frozenset[str],
    cycles: tuple[frozenset[str], ...],
) -> tuple[Problem, ...]:
    """The graph's problems, in the graph checks' order, from what is reached and the
    cyclic components (a graph without region problems)."""
    problems = _dangling(signatures, ids)
    problems += [
        unreachable(index, signature[0], start)
        for index, signature in enumerate(signatures)
        if signature[0] not in reachable
    ]
    if cycles:
        indexes = {signature[0]: index for index, signature in enumerate(signatures)}
        guarded = {signature[0] for signature in signatures if signature[4]}
        problems += [
            unguarded_cycle(component, indexes)
            for component in cycles
            if component.isdisjoint(guarded)
        ]
    return tuple(problems)


def _only_gained(
    before: Sequence[tuple[Any, ...]], after: Sequence[tuple[Any, ...]], changed: Sequence[int]
) -> bool:
    """Whether each changed node kept its guard and every node it went to (it may go to
    more)."""
    return all(
        before[i][4] == after[i][4] and set(_targets(before[i])) <= set(_targets(after[i]))
        for i in changed
    )


def _grown(
    reachable: frozenset[str], signatures: Sequence[tuple[Any, ...]], changed: Sequence[int]
) -> frozenset[str]:
    """``reachable`` and what the reached changed nodes' targets reach."""
    indexes = {signature[0]: index for index, signature in enumerate(signatures)}
    seen = set(reachable)
    pending = [
        target
        for i in changed
        if signatures[i][0] in reachable
        for target in _targets(signatures[i])
        if target not in seen
    ]
    while pending:
        node_id = pending.pop()
        if node_id in seen or node_id not in indexes:
            continue
        seen.add(node_id)
        pending += [t for t in _targets(signatures[indexes[node_id]]) if t not in seen]
    return frozenset(seen)


def _edges_edited(
    previous: DefinitionCheck,
    signatures: Sequence[tuple[Any, ...]],
    changed: Sequence[int],
    names: tuple[frozenset[str], frozenset[str]],
) -> tuple[tuple[Problem, ...], tuple[frozenset[str], frozenset[str]], GraphFacts] | None:
    """Edges changed, ids and start kept (see :func:`_edited`): derived when the changed
    nodes were not reached, or were reached and only gained edges in a graph without forks;
    None otherwise (or when a new cycle may have closed)."""
    facts = previous.graph_facts
    assert facts is not None
    ids, named = names
    start, before = previous.graph_key[0], previous.graph_key[1]
    moved = {signatures[i][0] for i in changed}
    if any(not moved.isdisjoint(component) for component in facts.cycles):
        return None
    if not moved.isdisjoint(named) and _reaches(signatures, changed, moved):
        return None
    if moved.isdisjoint(facts.reachable):
        kept = [p for p in previous.graph_problems if p.code != "dangling_edge"]
        return (*_dangling(signatures, ids), *kept), names, facts
    # Reached nodes that only gained edges, in a graph without forks (so without regions):
    # nothing reached before stops being reached, what the new targets reach joins, and no
    # cycle closed (ruled out above).
    if facts.shared or not _only_gained(before, signatures, changed):
        return None
    if any(signature[5] for signature in (*signatures, *before)):
        return None
    reachable = _grown(facts.reachable, signatures, changed)
    problems = _assembled(signatures, ids, start, reachable, facts.cycles)
    return problems, names, GraphFacts(reachable, facts.cycles, False)


def _reaches(
    signatures: Sequence[tuple[Any, ...]], changed: Sequence[int], moved: set[str]
) -> bool:
    """Whether a walk along the edges from the changed nodes' targets meets a changed node
    (their edges may close a cycle)."""
    indexes = {signature[0]: index for index, signature in enumerate(signatures)}
    seen: set[str] = set()
    pending = [target for i in changed for target in _targets(signatures[i])]
    while pending:
        node_id = pending.pop()
        if node_id in moved:
            return True
        if node_id in seen or node_id not in indexes:
            continue
        seen.add(node_id)
        pending += _targets(signatures[indexes[node_id]])
    return False
