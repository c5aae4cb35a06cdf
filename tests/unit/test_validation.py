"""Acceptance tests of definition validation: every rule, each with its JSON pointer and code."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from flowyard.domain.errors import DefinitionError
from flowyard.engine.validation import DefinitionValidator
from flowyard.expressions import ExpressionEngine
from flowyard.nodes.registry import default_registry
from support.definitions import FIVE_MISTAKES, FIVE_PROBLEMS

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(scope="module")
def validator() -> DefinitionValidator:
    return DefinitionValidator(default_registry(load_plugins=False), ExpressionEngine())


def wf(*nodes: dict[str, Any], start: str = "a", **extra: Any) -> dict[str, Any]:
    """A definition with ``nodes``, starting at ``start``."""
    return {"name": "t", "start": start, "nodes": list(nodes), **extra}


def trigger(node_id: str = "a", next_: str = "z", **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "trigger", "next": next_, **extra}


def log(node_id: str, next_: str | None = None, **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"id": node_id, "type": "log", "config": {"message": "m"}, **extra}
    if next_ is not None:
        node["next"] = next_
    return node


def end(node_id: str = "z", **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "end", **extra}


def condition(
    node_id: str, cases: list[tuple[str, str]], default: str | None = None, **extra: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {"cases": [{"when": w, "next": n} for w, n in cases]}
    if default is not None:
        config["default"] = default
    return {"id": node_id, "type": "condition", "config": config, **extra}


def problems(validator: DefinitionValidator, raw: Any) -> list[tuple[str, str]]:
    """(pointer, code) of every problem, in the validator's order."""
    result = validator.validate(raw)
    assert (result.workflow is None) == bool(result.problems)
    return [(p.pointer, p.code) for p in result.problems]


# -- the baseline: valid definitions ----------------------------------------------------------


def test_minimal_definition_is_valid_and_compiles(validator: DefinitionValidator) -> None:
    result = validator.validate(wf(trigger(), end()))
    assert result.ok
    assert result.workflow is not None
    assert set(result.workflow.nodes) == {"a", "z"}


@pytest.mark.parametrize("sample", ["lead_routing.json", "approval.json"])
def test_samples_are_valid(validator: DefinitionValidator, sample: str) -> None:
    assert problems(validator, json.loads((EXAMPLES / sample).read_text())) == []


# -- node rules -------------------------------------------------------------------------------


def test_unknown_node_type(validator: DefinitionValidator) -> None:
    result = validator.validate(
        wf(trigger(next_="x"), {"id": "x", "type": "nope", "next": "z"}, end())
    )
    [problem] = result.problems
    assert (problem.pointer, problem.code) == ("/nodes/1/type", "unknown_type")
    assert "'nope'" in problem.message and "trigger" in problem.message


def test_duplicate_node_id(validator: DefinitionValidator) -> None:
    result = validator.validate(wf(trigger(), end(), end()))
    [problem] = result.problems
    assert (problem.pointer, problem.code) == ("/nodes/2/id", "duplicate_id")
    assert "/nodes/1" in problem.message


def test_dangling_next(validator: DefinitionValidator) -> None:
    assert problems(validator, wf(trigger(next_="b"), log("b", "ghost"), end())) == [
        ("/nodes/1/next", "dangling_edge"),
        ("/nodes/2", "unreachable"),
    ]


def test_dangling_condition_case_target(validator: DefinitionValidator) -> None:
    raw = wf(
        trigger(next_="c"),
        condition("c", [("input.x == 1", "z"), ("input.x == 2", "ghost")], default="z"),
        end(),
    )
    assert problems(validator, raw) == [("/nodes/1/config/cases/1/next", "dangling_edge")]


def test_dangling_condition_default(validator: DefinitionValidator) -> None:
    raw = wf(trigger(next_="c"), condition("c", [("true", "z")], default="ghost"), end())
    assert problems(validator, raw) == [("/nodes/1/config/default", "dangling_edge")]


def test_dangling_catch_target(validator: DefinitionValidator) -> None:
    raw = wf(
        trigger(next_="b"),
        log("b", "z", catch=[{"errors": ["http.*"], "next": "z"}, {"next": "ghost"}]),
        end(),
    )
    assert problems(validator, raw) == [("/nodes/1/catch/1/next", "dangling_edge")]


def test_catch_target_counts_as_reachable(validator: DefinitionValidator) -> None:
    raw = wf(trigger(next_="b"), log("b", "z", catch=[{"next": "handler"}]), end(), end("handler"))
    assert problems(validator, raw) == []


def test_missing_start(validator: DefinitionValidator) -> None:
    raw = wf(trigger(), end())
    del raw["start"]
    assert problems(validator, raw) == [("/start", "missing")]


def test_start_is_not_a_node(validator: DefinitionValidator) -> None:
    result = validator.validate(wf(trigger(), end(), start="ghost"))
    [problem] = result.problems
    assert (problem.pointer, problem.code) == ("/start", "dangling_start")
    assert "'ghost'" in problem.message


def test_unreachable_node(validator: DefinitionValidator) -> None:
    result = validator.validate(wf(trigger(), end(), log("island", "z")))
    [problem] = result.problems
    assert (problem.pointer, problem.code) == ("/nodes/2", "unreachable")
    assert "'island'" in problem.message


@pytest.mark.parametrize(
    ("when", "fragment"),
    [("input.region ==", "unexpected"), ("().__class__.__mro__", "__mro__")],
    ids=["syntax", "sandbox-escape"],
)
def test_invalid_condition_expression(
    validator: DefinitionValidator, when: str, fragment: str
) -> None:
    raw = wf(trigger(next_="c"), condition("c", [("true", "z"), (when, "z")]), end())
    result = validator.validate(raw)
    [problem] = result.problems
    assert (problem.pointer, problem.code) == ("/nodes/1/config/cases/1/when", "expression")
    assert fragment in problem.message


@pytest.mark.parametrize(
    ("template", "fragment"),
    [("{{ input.x == }}", "unexpected"), ("{{ ().__class__.__mro__ }}", "__mro__")],
    ids=["syntax", "sandbox-escape"],
)
def test_invalid_template(validator: DefinitionValidator, template: str, fragment: str) -> None:
    raw = wf(
        trigger(next_="z"),
        end(config={"output": {"ok": "{{ input.x }}", "items": ["plain", template]}}),
    )
    result = validator.validate(raw)
    [problem] = result.problems
    assert (problem.pointer, problem.code) == ("/nodes/1/config/output/items/1", "expression")
    assert fragment in problem.message


def test_http_without_url(validator: DefinitionValidator) -> None:
    raw = wf(trigger(next_="h"), {"id": "h", "type": "http", "config": {}, "next": "z"}, end())
    assert problems(validator, raw) == [("/nodes/1/config/url", "missing")]


def test_unknown_config_key(validator: DefinitionValidator) -> None:
    raw = wf(trigger(next_="b"), log("b", "z", config={"message": "m", "colour": "red"}), end())
    assert problems(validator, raw) == [("/nodes/1/config/colour", "extra_forbidden")]


def test_config_value_of_wrong_type(validator: DefinitionValidator) -> None:
    raw = wf(trigger(next_="b"), log("b", "z", config={"message": "m", "level": "loud"}), end())
    assert problems(validator, raw) == [("/nodes/1/config/level", "literal_error")]


def test_invalid_config_does_not_make_its_targets_unreachable(
    validator: DefinitionValidator,
) -> None:
    # The condition's config is broken, so its targets are unknown: no cascade of
    # "unreachable" problems for the nodes it names.
    raw = wf(
        trigger(next_="c"),
        {"id": "c", "type": "condition", "config": {"cases": [{"next": "x"}], "default": "y"}},
        end("x"),
        end("y"),
    )
    assert problems(validator, raw) == [("/nodes/1/config/cases/0/when", "missing")]


@pytest.mark.parametrize("terminal", ["end", "fail"])
def test_terminal_node_with_next(validator: DefinitionValidator, terminal: str) -> None:
    raw = wf(trigger(next_="t"), {"id": "t", "type": terminal, "next": "z"}, end())
    result = validator.validate(raw)
    [problem] = result.problems
    assert (problem.pointer, problem.code) == ("/nodes/1/next", "terminal_next")
    assert terminal in problem.message


def _loop(guard: int | None) -> dict[str, Any]:
    extra = {"max_iterations": guard} if guard is not None else {}
    return wf(
        trigger(next_="work"),
        log("work", "check", **extra),
        condition("check", [("steps.work.output.message == 'again'", "work")], default="z"),
        end(),
    )


def test_cycle_without_guard(validator: DefinitionValidator) -> None:
    result = validator.validate(_loop(None))
    [problem] = result.problems
    assert (problem.pointer, problem.code) == ("/nodes/1", "unguarded_cycle")
    assert "work -> check -> work" in problem.message


def test_same_cycle_with_guard_validates(validator: DefinitionValidator) -> None:
    result = validator.validate(_loop(5))
    assert result.ok
    assert result.workflow is not None
    assert result.workflow.nodes["work"].in_cycle
    assert not result.workflow.nodes["z"].in_cycle


def test_self_loop_without_guard(validator: DefinitionValidator) -> None:
    raw = wf(trigger(next_="c"), condition("c", [("input.more", "c")], default="z"), end())
    assert problems(validator, raw) == [("/nodes/1", "unguarded_cycle")]
    raw["nodes"][1]["max_iterations"] = 10
    assert problems(validator, raw) == []


@pytest.mark.parametrize(
    ("schema", "pointer"),
    [
        ({"type": "nope"}, "/input_schema/type"),
        ({"type": "object", "properties": {"x": {"type": 5}}}, "/input_schema/properties/x/type"),
    ],
)
def test_bad_input_schema(validator: DefinitionValidator, schema: Any, pointer: str) -> None:
    assert problems(validator, wf(trigger(), end(), input_schema=schema)) == [
        (pointer, "input_schema")
    ]


def test_good_input_schema(validator: DefinitionValidator) -> None:
    schema = {"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}}
    assert problems(validator, wf(trigger(), end(), input_schema=schema)) == []


# -- structural errors --------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [[], "text", 3, None], ids=["list", "str", "int", "null"])
def test_definition_must_be_an_object(validator: DefinitionValidator, raw: Any) -> None:
    assert problems(validator, raw) == [("", "type")]


def test_missing_nodes(validator: DefinitionValidator) -> None:
    assert problems(validator, {"name": "t", "start": "a"}) == [("/nodes", "missing")]


def test_empty_nodes(validator: DefinitionValidator) -> None:
    assert problems(validator, wf()) == [("/nodes", "too_short")]


def test_bad_node_id_pattern(validator: DefinitionValidator) -> None:
    raw = wf(trigger(next_="z"), end("9lives"), end())
    assert problems(validator, raw) == [("/nodes/1/id", "string_pattern_mismatch")]


def test_bad_workflow_name_and_unknown_top_level_key(validator: DefinitionValidator) -> None:
    raw = wf(trigger(), end(), colour="red")
    raw["name"] = "Not A Slug"
    assert problems(validator, raw) == [
        ("/colour", "extra_forbidden"),
        ("/name", "string_pattern_mismatch"),
    ]


def test_structural_and_semantic_problems_together(validator: DefinitionValidator) -> None:
    # The document as a whole does not parse (bad name, a bad node id), yet the nodes that
    # parse on their own are still checked: unknown type, dangling edge, unreachable node.
    raw = wf(
        trigger(next_="b"),
        {"id": "b", "type": "teleport", "next": "z"},
        log("c", "ghost"),
        {"id": "bad id", "type": "end"},
        end(),
    )
    raw["name"] = "Bad Name"
    assert problems(validator, raw) == [
        ("/name", "string_pattern_mismatch"),
        ("/nodes/1/type", "unknown_type"),
        ("/nodes/2", "unreachable"),
        ("/nodes/2/next", "dangling_edge"),
        ("/nodes/3/id", "string_pattern_mismatch"),
    ]


def test_bad_input_schema_is_reported_with_structural_problems(
    validator: DefinitionValidator,
) -> None:
    raw = wf(trigger(), end(), input_schema={"type": "nope"})
    raw["name"] = "Bad Name"
    assert problems(validator, raw) == [
        ("/input_schema/type", "input_schema"),
        ("/name", "string_pattern_mismatch"),
    ]


def test_edge_to_a_structurally_broken_node_is_not_dangling(
    validator: DefinitionValidator,
) -> None:
    # Node "b" has a bad timeout: that is its one problem; "a -> b" is not dangling and
    # "z" (named only by b) is not unreachable.
    raw = wf(trigger(next_="b"), log("b", "z", timeout_s=-1), end())
    assert problems(validator, raw) == [("/nodes/1/timeout_s", "greater_than")]


def test_five_mistakes_in_one_pass(validator: DefinitionValidator) -> None:
    result = validator.validate(copy.deepcopy(FIVE_MISTAKES))
    assert [(p.pointer, p.code) for p in result.problems] == FIVE_PROBLEMS
    assert result.workflow is None
    with pytest.raises(DefinitionError) as caught:
        validator.compile(copy.deepcopy(FIVE_MISTAKES))
    assert [(p.pointer, p.code) for p in caught.value.problems] == FIVE_PROBLEMS
    assert "5 problems" in caught.value.message


def test_pointers_escape_slash_and_tilde(validator: DefinitionValidator) -> None:
    raw = wf(trigger(next_="z"), end(config={"output": {"a/b~c": "{{ ).( }}"}}))
    assert problems(validator, raw) == [("/nodes/1/config/output/a~1b~0c", "expression")]


# -- scale ----------------------------------------------------------------------------------------


def test_thousand_node_linear_definition(validator: DefinitionValidator) -> None:
    count = 1000
    nodes = [trigger("n0", "n1")]
    nodes += [log(f"n{i}", f"n{i + 1}") for i in range(1, count - 1)]
    nodes.append(end(f"n{count - 1}"))
    result = validator.validate(wf(*nodes, start="n0"))
    assert result.problems == []
    assert result.workflow is not None
    assert len(result.workflow.nodes) == count
    assert not any(node.in_cycle for node in result.workflow.nodes.values())


def test_thousand_node_ring_is_one_cycle(validator: DefinitionValidator) -> None:
    count = 1000
    nodes = [trigger("n0", "n1")]
    nodes += [log(f"n{i}", f"n{i + 1}") for i in range(1, count - 1)]
    nodes.append(log(f"n{count - 1}", "n1"))
    result = validator.validate(wf(*nodes, start="n0"))
    assert [(p.pointer, p.code) for p in result.problems] == [("/nodes/1", "unguarded_cycle")]
