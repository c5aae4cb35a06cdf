"""Definition validation: every problem at once, each with a JSON pointer; and compilation."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from flowyard.domain import jsonvalue
from flowyard.domain.definition import NODE_ID_PATTERN, NodeSpec, WorkflowDefinition
from flowyard.domain.errors import DefinitionError, Problem
from flowyard.domain.state_machine import is_state_machine
from flowyard.engine.compiled import DEFAULT_RETRY, CompiledNode, CompiledWorkflow, guard_vars
from flowyard.engine.declarations import correlation_expressions, signal_problems
from flowyard.engine.graph_checks import (
    BrokenNode,
    NodeInfo,
    check_graph,
    find_cycles,
    node_targets,
)
from flowyard.engine.input_schema import schema_problems
from flowyard.engine.state_machine import compile_state_machine
from flowyard.expressions import ExpressionEngine, ExpressionError
from flowyard.expressions.errors import CompileBudgetExceeded
from flowyard.nodes.base import ExpressionRef
from flowyard.nodes.registry import NodeRegistry

_NODE_ID = re.compile(NODE_ID_PATTERN)


def escape_pointer(token: str | int) -> str:
    """Escape one JSON pointer reference token (RFC 6901; printable, see
    :func:`~flowyard.domain.jsonvalue.escape_token`)."""
    return jsonvalue.escape_token(token)


def pointer_from_loc(prefix: str, loc: Iterable[str | int]) -> str:
    """A JSON pointer from a pydantic error location."""
    return prefix + "".join("/" + escape_pointer(part) for part in loc)


def pydantic_problems(exc: ValidationError, prefix: str) -> list[Problem]:
    """A problem per pydantic error, located under ``prefix``."""
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
class CompileBudget:
    """What compiling one definition's expressions may take: a deadline and a count."""

    budget_s: float
    max_templates: int
    deadline: float = 0.0
    #: Set once the deadline passed: the remaining expressions are not compiled.
    stopped: bool = False

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.budget_s


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
        budget = CompileBudget(
            limits.compile_budget_s if budget_s is None else budget_s, limits.max_templates
        )
        return self._validate(raw, budget)

    def _validate(self, raw: Any, budget: CompileBudget) -> ValidationResult:
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
            result.problems.extend(pydantic_problems(exc, ""))
        broken: dict[str, BrokenNode] = {}
        if definition is not None:
            nodes = list(enumerate(definition.nodes))
        else:
            nodes, broken = self._salvage_nodes(raw)
        infos = self._check_nodes(nodes, result.problems, budget)
        if definition is not None:
            if not budget.stopped:
                found = correlation_expressions(definition)
                result.problems.extend(self.check_expressions(found, budget))
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
            cycles = check_graph(
                infos, broken, start if isinstance(start, str) else None, result.problems
            )
        schema = definition.input_schema if definition else raw.get("input_schema")
        if isinstance(schema, dict):  # (a non-object is already a structural problem)
            self._check_input_schema(schema, result.problems)
        if definition is not None and not result.problems:
            result.workflow = self._compile(definition, infos, cycles)
        result.problems.sort(key=lambda p: pointer_key(p.pointer))
        return result

    def _validate_state_machine(
        self, raw: dict[str, Any], budget: CompileBudget
    ) -> ValidationResult:
        """Check the states/actions form, then its compiled graph (problems point into the
        states/actions form either way)."""
        compiled = compile_state_machine(raw)
        if compiled.graph is None:
            compiled.problems.sort(key=lambda p: pointer_key(p.pointer))
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
    ) -> tuple[list[tuple[int, NodeSpec]], dict[str, BrokenNode]]:
        """Nodes that parse on their own, so semantic problems are reported alongside
        structural ones (the whole document failed to parse), and the ids of those that do
        not, so that edges to them are not reported as dangling."""
        salvaged: list[tuple[int, NodeSpec]] = []
        broken: dict[str, BrokenNode] = {}
        raw_nodes = raw.get("nodes")
        if not isinstance(raw_nodes, list):
            return salvaged, broken
        for index, item in enumerate(raw_nodes):
            try:
                salvaged.append((index, NodeSpec.model_validate(item)))
            except ValidationError:
                node_id = item.get("id") if isinstance(item, Mapping) else None
                if isinstance(node_id, str) and _NODE_ID.match(node_id):
                    broken.setdefault(node_id, BrokenNode(index, item))
        return salvaged, broken

    def _check_nodes(
        self, nodes: list[tuple[int, NodeSpec]], problems: list[Problem], budget: CompileBudget
    ) -> dict[str, NodeInfo]:
        infos: dict[str, NodeInfo] = {}
        expressions: list[tuple[str, ExpressionRef]] = []
        for index, spec in nodes:
            base = f"/nodes/{index}"
            if spec.id in infos:
                problems.append(duplicate_id(base, spec.id, infos[spec.id].index))
                continue
            info = infos[spec.id] = NodeInfo(index, spec)
            expressions.extend(self.check_node(info, base, problems))
        problems.extend(self.check_expressions(expressions, budget))
        return infos

    def check_node(
        self, info: NodeInfo, base: str, problems: list[Problem]
    ) -> list[tuple[str, ExpressionRef]]:
        """Fill ``info`` (type, parsed config, routes) from its spec, adding its own problems
        (pointers under ``base``); its expressions, to be compiled with the definition's."""
        spec = info.spec
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
            return []
        info.node_type = node_type
        try:
            info.config = node_type.parse_config(spec.config)
        except ValidationError as exc:
            info.routes_known = False
            problems.extend(pydantic_problems(exc, f"{base}/config"))
            return []
        info.routes = node_type.routes(info.config)
        if node_type.terminal and spec.next is not None:
            problems.append(
                Problem(
                    f"{base}/next",
                    f"a {spec.type!r} node ends the run; it cannot have next",
                    "terminal_next",
                )
            )
        return [
            (base + ref.pointer, ref)
            for ref in node_type.expressions(info.config, spec.config, self.expressions)
        ]

    def check_expressions(
        self, expressions: list[tuple[str, ExpressionRef]], budget: CompileBudget
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
            problem = self.check_expression(ref, pointer, budget, done)
            if problem is not None:
                problems.append(problem)
            if budget.stopped:
                break
        return problems

    def check_expression(
        self, ref: ExpressionRef, pointer: str, budget: CompileBudget, done: int
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

    @staticmethod
    def _check_input_schema(schema: dict[str, Any], problems: list[Problem]) -> None:
        problems.extend(schema_problems(schema))

    def _compile(
        self,
        definition: WorkflowDefinition,
        infos: dict[str, NodeInfo],
        cycles: list[set[str]] | None = None,
    ) -> CompiledWorkflow:
        if cycles is None:
            edges = {
                node_id: [t for t in node_targets(info) if t in infos]
                for node_id, info in infos.items()
            }
            cycles = find_cycles(edges)
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


def duplicate_id(base: str, node_id: str, first: int) -> Problem:
    """The problem of a node (at ``base``) reusing the id of the node at index ``first``."""
    return Problem(
        f"{base}/id", f"duplicate node id {node_id!r} (first at /nodes/{first})", "duplicate_id"
    )


def pointer_key(pointer: str) -> list[tuple[int, int | str]]:
    """Sort pointers in document order (numeric tokens as numbers)."""
    return [(0, int(t)) if t.isascii() and t.isdigit() else (1, t) for t in pointer.split("/")]
