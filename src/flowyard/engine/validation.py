"""Definition validation: every problem at once, each with a JSON pointer; and compilation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from pydantic import ValidationError

from flowyard.domain.definition import NodeSpec, WorkflowDefinition
from flowyard.domain.errors import DefinitionError, Problem
from flowyard.engine.compiled import DEFAULT_RETRY, CompiledNode, CompiledWorkflow
from flowyard.expressions import ExpressionEngine, ExpressionError
from flowyard.nodes.base import NodeType, Route
from flowyard.nodes.registry import NodeRegistry


def escape_pointer(token: str | int) -> str:
    """Escape one JSON pointer reference token (RFC 6901)."""
    return str(token).replace("~", "~0").replace("/", "~1")


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


@dataclass(slots=True)
class _NodeInfo:
    index: int
    spec: NodeSpec
    node_type: NodeType[Any] | None = None
    config: Any = None
    routes: list[Route] = field(default_factory=list)


class DefinitionValidator:
    """Checks definitions against a registry and an expression engine."""

    def __init__(self, registry: NodeRegistry, expressions: ExpressionEngine) -> None:
        self.registry = registry
        self.expressions = expressions

    def validate(self, raw: Any) -> ValidationResult:
        """Validate ``raw`` (parsed JSON) and compile it when it has no problem."""
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
        nodes = definition.nodes if definition else self._salvage_nodes(raw)
        infos = self._check_nodes(nodes, result.problems)
        start = definition.start if definition else raw.get("start")
        self._check_graph(
            infos,
            start if isinstance(start, str) else None,
            result.problems,
            start_given="start" in raw,
        )
        if definition is not None and definition.input_schema is not None:
            self._check_input_schema(definition.input_schema, result.problems)
        if definition is not None and not result.problems:
            result.workflow = self._compile(definition, infos)
        result.problems.sort(key=lambda p: _pointer_key(p.pointer))
        return result

    def compile(self, raw: Any) -> CompiledWorkflow:
        """Validate and compile, raising :class:`DefinitionError` with every problem."""
        result = self.validate(raw)
        if result.workflow is None:
            count = len(result.problems)
            raise DefinitionError(
                f"the workflow definition has {count} problem{'s' if count != 1 else ''}",
                result.problems,
            )
        return result.workflow

    # -- pieces ---------------------------------------------------------------------------

    @staticmethod
    def _salvage_nodes(raw: Mapping[str, Any]) -> list[tuple[int, NodeSpec]] | list[NodeSpec]:
        """Nodes that parse on their own, so semantic problems are reported alongside
        structural ones (the whole document failed to parse)."""
        salvaged: list[tuple[int, NodeSpec]] = []
        raw_nodes = raw.get("nodes")
        if not isinstance(raw_nodes, list):
            return salvaged
        for index, item in enumerate(raw_nodes):
            try:
                salvaged.append((index, NodeSpec.model_validate(item)))
            except ValidationError:
                continue
        return salvaged

    def _check_nodes(
        self, nodes: list[tuple[int, NodeSpec]] | list[NodeSpec], problems: list[Problem]
    ) -> dict[str, _NodeInfo]:
        infos: dict[str, _NodeInfo] = {}
        for position, item in enumerate(nodes):
            index, spec = item if isinstance(item, tuple) else (position, item)
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
            for ref in node_type.expressions(info.config, spec.config, self.expressions):
                try:
                    if ref.kind == "condition":
                        self.expressions.check_condition(ref.source)
                    else:
                        self.expressions.check_template(ref.source)
                except ExpressionError as exc:
                    problems.append(
                        Problem(
                            base + ref.pointer, f"invalid expression: {exc.message}", "expression"
                        )
                    )
        return infos

    def _check_graph(
        self,
        infos: dict[str, _NodeInfo],
        start: str | None,
        problems: list[Problem],
        *,
        start_given: bool,
    ) -> None:
        edges: dict[str, list[str]] = {}
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
            for pointer, target in targets:
                if target in infos:
                    edges[node_id].append(target)
                else:
                    problems.append(Problem(pointer, f"no node has id {target!r}", "dangling_edge"))
        if start is None:
            if start_given:
                return  # structural problem already reported
            problems.append(Problem("/start", "the definition has no start node", "no_start"))
            return
        if start not in infos:
            problems.append(
                Problem("/start", f"start node {start!r} does not exist", "dangling_start")
            )
            return
        reachable = _reachable(start, edges)
        for node_id, info in infos.items():
            if node_id not in reachable:
                problems.append(
                    Problem(
                        f"/nodes/{info.index}",
                        f"node {node_id!r} is not reachable from start {start!r}",
                        "unreachable",
                    )
                )
        for component in _cycles(edges):
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

    @staticmethod
    def _check_input_schema(schema: dict[str, Any], problems: list[Problem]) -> None:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = pointer_from_loc("/input_schema", exc.path)
            problems.append(Problem(where, f"invalid JSON Schema: {exc.message}", "input_schema"))

    @staticmethod
    def _compile(definition: WorkflowDefinition, infos: dict[str, _NodeInfo]) -> CompiledWorkflow:
        edges = {
            node_id: [t for t in _targets(info) if t in infos] for node_id, info in infos.items()
        }
        in_cycle = {n for component in _cycles(edges) for n in component}
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
        return CompiledWorkflow(definition=definition, nodes=nodes)


def _targets(info: _NodeInfo) -> list[str]:
    targets = [info.spec.next] if info.spec.next else []
    targets.extend(route.target for route in info.routes)
    targets.extend(rule.next for rule in info.spec.catch)
    return targets


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


def _pointer_key(pointer: str) -> list[tuple[int, int | str]]:
    """Sort pointers in document order (numeric tokens as numbers)."""
    return [(0, int(t)) if t.isdigit() else (1, t) for t in pointer.split("/")]
