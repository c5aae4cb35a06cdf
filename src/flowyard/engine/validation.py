"""Definition validation: every problem at once, each with a JSON pointer; and compilation."""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from flowyard.domain import jsonvalue
from flowyard.domain.definition import NODE_ID_PATTERN, NodeSpec, WorkflowDefinition
from flowyard.domain.errors import DefinitionError, Problem
from flowyard.domain.state_machine import is_state_machine
from flowyard.engine.compiled import DEFAULT_RETRY, CompiledNode, CompiledWorkflow, guard_vars
from flowyard.engine.declarations import correlation_expressions, signal_problems
from flowyard.engine.input_schema import schema_problems
from flowyard.engine.state_machine import compile_state_machine
from flowyard.expressions import ExpressionEngine, ExpressionError
from flowyard.expressions.errors import CompileBudgetExceeded
from flowyard.nodes.base import ExpressionRef, NodeType, Route
from flowyard.nodes.registry import NodeRegistry

_NODE_ID = re.compile(NODE_ID_PATTERN)


def escape_pointer(token: str | int) -> str:
    """Escape one JSON pointer reference token (RFC 6901; printable, see
    :func:`~flowyard.domain.jsonvalue.escape_token`)."""
    return jsonvalue.escape_token(token)


def pointer_from_loc(prefix: str, loc: Iterable[str | int]) -> str:
    """A JSON pointer from a pydantic error location."""
    return prefix + "".join("/" + escape_pointer(part) for part in loc)


def _pydantic_problems(exc: ValidationError, prefix: str) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = [
            part
            for part in err["loc"]
            if not (isinstance(part, str) and part.startswith("function-"))
        ]
        problems.append(Problem(pointer_from_loc(prefix, loc), err["msg"], code=str(err["type"])))
    return problems


@dataclass(slots=True)
class ValidationResult:
    """Outcome of validating a raw definition."""

    problems: list[Problem] = field(default_factory=list)
    workflow: CompiledWorkflow | None = None

    @property
    def ok(self) -> bool:
        """True when there is no problem."""
        return not self.problems

    def compiled(self) -> CompiledWorkflow:
        """The compiled workflow; :class:`DefinitionError` with every problem if invalid."""
        if self.workflow is None:
            count = len(self.problems)
            raise DefinitionError(
                f"the workflow definition has {count} problem{'s' if count != 1 else ''}",
                self.problems,
            )
        return self.workflow


@dataclass(slots=True)
class _CompileBudget:
    """What compiling one definition's expressions may take: a deadline and a count."""

    budget_s: float
    max_templates: int
    deadline: float = 0.0
    #: Set once the deadline passed: the remaining expressions are not compiled.
    stopped: bool = False

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.budget_s


@dataclass(slots=True)
class _NodeInfo:
    index: int
    spec: NodeSpec
    node_type: NodeType[Any] | None = None
    config: Any = None
    routes: list[Route] = field(default_factory=list)
    #: False when the type is unknown or the config did not parse: the node's own targets
    #: are then unknown, so the graph checks must not draw conclusions from their absence.
    routes_known: bool = True


@dataclass(slots=True)
class _Broken:
    """A node whose id is readable but whose spec did not parse (reported structurally)."""

    index: int
    raw: Any


class DefinitionValidator:
    """Checks definitions against a registry and an expression engine."""

    def __init__(self, registry: NodeRegistry, expressions: ExpressionEngine) -> None:
        self.registry = registry
        self.expressions = expressions

    def validate(self, raw: Any, *, budget_s: float | None = None) -> ValidationResult:
        """Validate ``raw`` (parsed JSON) and compile it when it has no problem.

        Compiling its expressions may take ``budget_s`` seconds (default: the engine's
        ``compile_budget_s``) and the definition may hold ``max_templates`` of them; past
        either, compiling stops, with a problem located at the expression where it did."""
        limits = self.expressions.limits
        budget = _CompileBudget(
            limits.compile_budget_s if budget_s is None else budget_s, limits.max_templates
        )
        return self._validate(raw, budget)

    def _validate(self, raw: Any, budget: _CompileBudget) -> ValidationResult:
        if is_state_machine(raw):
            return self._validate_state_machine(raw, budget)
        result = ValidationResult()
        if not isinstance(raw, Mapping):
            result.problems.append(
                Problem("", "a workflow definition must be a JSON object", "type")
            )
            return result
        definition: WorkflowDefinition | None = None
        try:
            definition = WorkflowDefinition.model_validate(dict(raw))
        except ValidationError as exc:
            result.problems.extend(_pydantic_problems(exc, ""))
        broken: dict[str, _Broken] = {}
        if definition is not None:
            nodes = list(enumerate(definition.nodes))
        else:
            nodes, broken = self._salvage_nodes(raw)
        infos = self._check_nodes(nodes, result.problems, budget)
        if definition is not None:
            if not budget.stopped:
                found = correlation_expressions(definition)
                result.problems.extend(self._check_expressions(found, budget))
            typed = [
                (i.index, i.node_type, i.config)
                for i in infos.values()
                if i.node_type is not None and i.routes_known
            ]
            result.problems.extend(signal_problems(definition.signals, typed))
        broken = {node_id: b for node_id, b in broken.items() if node_id not in infos}
        start = definition.start if definition else raw.get("start")
        cycles: list[set[str]] | None = None
        if infos or broken:  # without any node the graph checks would only add noise
            cycles = self._check_graph(
                infos, broken, start if isinstance(start, str) else None, result.problems
            )
        schema = definition.input_schema if definition else raw.get("input_schema")
        if isinstance(schema, dict):  # (a non-object is already a structural problem)
            self._check_input_schema(schema, result.problems)
        if definition is not None and not result.problems:
            result.workflow = self._compile(definition, infos, cycles)
        result.problems.sort(key=lambda p: _pointer_key(p.pointer))
        return result

    def _validate_state_machine(
        self, raw: dict[str, Any], budget: _CompileBudget
    ) -> ValidationResult:
        """Check the states/actions form, then its compiled graph (problems point into the
        states/actions form either way)."""
        compiled = compile_state_machine(raw)
        if compiled.graph is None:
            compiled.problems.sort(key=lambda p: _pointer_key(p.pointer))
            return ValidationResult(problems=compiled.problems)
        result = self._validate(compiled.graph, budget)
        result.problems = [compiled.locate(p) for p in result.problems]
        return result

    def compile(self, raw: Any, *, budget_s: float | None = None) -> CompiledWorkflow:
        """Validate and compile, raising :class:`DefinitionError` with every problem."""
        return self.validate(raw, budget_s=budget_s).compiled()

    # -- pieces ---------------------------------------------------------------------------

    @staticmethod
    def _salvage_nodes(
        raw: Mapping[str, Any],
    ) -> tuple[list[tuple[int, NodeSpec]], dict[str, _Broken]]:
        """Nodes that parse on their own, so semantic problems are reported alongside
        structural ones (the whole document failed to parse), and the ids of those that do
        not, so that edges to them are not reported as dangling."""
        salvaged: list[tuple[int, NodeSpec]] = []
        broken: dict[str, _Broken] = {}
        raw_nodes = raw.get("nodes")
        if not isinstance(raw_nodes, list):
            return salvaged, broken
        for index, item in enumerate(raw_nodes):
            try:
                salvaged.append((index, NodeSpec.model_validate(item)))
            except ValidationError:
                node_id = item.get("id") if isinstance(item, Mapping) else None
                if isinstance(node_id, str) and _NODE_ID.match(node_id):
                    broken.setdefault(node_id, _Broken(index, item))
        return salvaged, broken

    def _check_nodes(
        self, nodes: list[tuple[int, NodeSpec]], problems: list[Problem], budget: _CompileBudget
    ) -> dict[str, _NodeInfo]:
        infos: dict[str, _NodeInfo] = {}
        expressions: list[tuple[str, ExpressionRef]] = []
        for index, spec in nodes:
            base = f"/nodes/{index}"
            if spec.id in infos:
                first = infos[spec.id].index
                problems.append(
                    Problem(
                        f"{base}/id",
                        f"duplicate node id {spec.id!r} (first at /nodes/{first})",
                        "duplicate_id",
                    )
                )
                continue
            info = _NodeInfo(index, spec)
            infos[spec.id] = info
            node_type = self.registry.get(spec.type)
            if node_type is None:
                info.routes_known = False
                known = ", ".join(self.registry.names())
                problems.append(
                    Problem(
                        f"{base}/type",
                        f"unknown node type {spec.type!r} (known: {known})",
                        "unknown_type",
                    )
                )
                continue
            info.node_type = node_type
            try:
                info.config = node_type.parse_config(spec.config)
            except ValidationError as exc:
                info.routes_known = False
                problems.extend(_pydantic_problems(exc, f"{base}/config"))
                continue
            info.routes = node_type.routes(info.config)
            if node_type.terminal and spec.next is not None:
                problems.append(
                    Problem(
                        f"{base}/next",
                        f"a {spec.type!r} node ends the run; it cannot have next",
                        "terminal_next",
                    )
                )
            expressions.extend(
                (base + ref.pointer, ref)
                for ref in node_type.expressions(info.config, spec.config, self.expressions)
            )
        problems.extend(self._check_expressions(expressions, budget))
        return infos

    def _check_expressions(
        self, expressions: list[tuple[str, ExpressionRef]], budget: _CompileBudget
    ) -> list[Problem]:
        """Compile every expression within the definition's budget. Over the count limit
        none is compiled (the definition is refused either way)."""
        if len(expressions) > budget.max_templates:
            return [
                Problem(
                    expressions[budget.max_templates][0],
                    f"the definition holds {len(expressions)} expressions and templates, "
                    f"more than the limit of {budget.max_templates} (this is the first one "
                    "over it); move parts of it into sub-workflows",
                    "too_many_expressions",
                )
            ]
        problems = []
        for done, (pointer, ref) in enumerate(expressions):
            problem = self._check_expression(ref, pointer, budget, done)
            if problem is not None:
                problems.append(problem)
            if budget.stopped:
                break
        return problems

    def _check_expression(
        self, ref: ExpressionRef, pointer: str, budget: _CompileBudget, done: int
    ) -> Problem | None:
        """Compile one expression within the definition's budget."""
        try:
            if ref.kind == "condition":
                self.expressions.check_condition(ref.source, deadline=budget.deadline)
            else:
                self.expressions.check_template(ref.source, deadline=budget.deadline)
        except CompileBudgetExceeded:
            budget.stopped = True
            return Problem(
                pointer,
                f"compiling the definition's expressions took longer than its budget of "
                f"{budget.budget_s:g}s: compilation stopped here, after {done} "
                "expressions; simplify them or split the workflow",
                "compile_budget",
            )
        except ExpressionError as exc:
            return Problem(pointer, f"invalid expression: {exc.message}", "expression")
        return None

    def _check_graph(
        self,
        infos: dict[str, _NodeInfo],
        broken: dict[str, _Broken],
        start: str | None,
        problems: list[Problem],
    ) -> list[set[str]] | None:
        """Check edges, reachability, cycles and regions; the cycles of the parsed nodes
        (None when the start is missing: nothing was judged)."""
        known = infos.keys() | broken.keys()
        # ``edges``: certain edges between parsed nodes (cycles are judged on these only);
        # ``maybe``: a superset for reachability, adding every node id named anywhere in a
        # node whose targets are unknown, so one broken node does not make others look
        # unreachable.
        edges: dict[str, list[str]] = {}
        maybe: dict[str, list[str]] = {}
        for node_id, info in infos.items():
            base = f"/nodes/{info.index}"
            targets: list[tuple[str, str]] = []
            if info.spec.next is not None:
                targets.append((f"{base}/next", info.spec.next))
            targets.extend((base + route.pointer, route.target) for route in info.routes)
            targets.extend(
                (f"{base}/catch/{j}/next", rule.next) for j, rule in enumerate(info.spec.catch)
            )
            edges[node_id] = []
            maybe[node_id] = [] if info.routes_known else _mentions(info.spec.config, known)
            for pointer, target in targets:
                if target not in known:
                    problems.append(Problem(pointer, f"no node has id {target!r}", "dangling_edge"))
                    continue
                maybe[node_id].append(target)
                if target in infos:
                    edges[node_id].append(target)
        for node_id, node in broken.items():
            maybe[node_id] = _mentions(node.raw, known)
        if start is None:
            return None  # a structural problem at /start is already reported
        if start not in known:
            problems.append(
                Problem("/start", f"start node {start!r} does not exist", "dangling_start")
            )
            return None
        reachable = _reachable(start, maybe)
        indexes = {node_id: info.index for node_id, info in infos.items()}
        indexes.update((node_id, node.index) for node_id, node in broken.items())
        for node_id, index in indexes.items():
            if node_id not in reachable:
                problems.append(
                    Problem(
                        f"/nodes/{index}",
                        f"node {node_id!r} is not reachable from start {start!r}",
                        "unreachable",
                    )
                )
        cycles = _cycles(edges)
        for component in cycles:
            if not any(infos[n].spec.max_iterations for n in component):
                first = min(component, key=lambda n: infos[n].index)
                loop = " -> ".join([*sorted(component, key=lambda n: infos[n].index), first])
                problems.append(
                    Problem(
                        f"/nodes/{infos[first].index}",
                        f"cycle {loop} has no loop guard: set max_iterations on one of its nodes",
                        "unguarded_cycle",
                    )
                )
        _check_regions(infos, start, problems)
        return cycles

    @staticmethod
    def _check_input_schema(schema: dict[str, Any], problems: list[Problem]) -> None:
        problems.extend(schema_problems(schema))

    def _compile(
        self,
        definition: WorkflowDefinition,
        infos: dict[str, _NodeInfo],
        cycles: list[set[str]] | None = None,
    ) -> CompiledWorkflow:
        if cycles is None:
            edges = {
                node_id: [t for t in _targets(info) if t in infos]
                for node_id, info in infos.items()
            }
            cycles = _cycles(edges)
        # (The graph check found the same cycles: its edges are these when nothing is wrong.)
        in_cycle = {n for component in cycles for n in component}
        default_retry = definition.defaults.retry or DEFAULT_RETRY
        nodes: dict[str, CompiledNode] = {}
        for node_id, info in infos.items():
            assert info.node_type is not None
            nodes[node_id] = CompiledNode(
                spec=info.spec,
                node_type=info.node_type,
                config=info.config,
                retry=info.spec.retry or default_retry,
                timeout_s=info.spec.timeout_s or definition.defaults.timeout_s,
                in_cycle=node_id in in_cycle,
            )
        return CompiledWorkflow(
            definition=definition, nodes=nodes, var_guard=guard_vars(nodes, self.expressions)
        )


def _targets(info: _NodeInfo) -> list[str]:
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


def _cycles(edges: Mapping[str, list[str]]) -> list[set[str]]:
    """Strongly connected components that form cycles (Tarjan, iterative so 10k-node
    definitions cannot hit the recursion limit)."""
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


def _check_regions(infos: dict[str, _NodeInfo], start: str, problems: list[Problem]) -> None:
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
            forks: set[str] = set()
            if info.node_type is not None and info.routes_known:
                for route in info.node_type.branch_routes(info.config):
                    forks.add(route.target)
                    regions.append((route.target, f"branch {route.target!r} of {node_id!r}"))
            stack.extend(r.target for r in info.routes if r.target not in forks)
            stack.extend(rule.next for rule in info.spec.catch)
            if info.spec.next is not None:
                stack.append(info.spec.next)


def _pointer_key(pointer: str) -> list[tuple[int, int | str]]:
    """Sort pointers in document order (numeric tokens as numbers)."""
    return [(0, int(t)) if t.isascii() and t.isdigit() else (1, t) for t in pointer.split("/")]
