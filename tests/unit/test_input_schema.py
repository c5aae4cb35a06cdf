"""A workflow's input_schema is checked with bounded regular expressions: a pattern that
backtracks without bound is a 422-style problem in milliseconds, not a stalled process."""

from __future__ import annotations

import time

import pytest

from flowyard.engine.input_schema import (
    PATTERN_BUDGET_S,
    InputValidator,
    input_problems,
    schema_problems,
)

EVIL = "^(a|a)+$"  # exponential even for `regex` (it handles ^(a+)+$ by itself)
ATTACK = "a" * 40 + "!"  # with Python's re: hours


def timed(schema: dict[str, object], instance: object) -> tuple[list[str], float]:
    started = time.perf_counter()
    problems = input_problems(schema, instance)
    return [p.code for p in problems], time.perf_counter() - started


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ({"type": "string", "pattern": EVIL}, ATTACK),
        ({"type": "object", "properties": {"name": {"pattern": EVIL}}}, {"name": ATTACK}),
        ({"type": "object", "patternProperties": {EVIL: {}}}, {ATTACK: 1}),
        (
            {"type": "object", "patternProperties": {EVIL: {}}, "additionalProperties": False},
            {ATTACK: 1},
        ),
        ({"type": "array", "items": {"pattern": EVIL}}, [ATTACK] * 50),
    ],
    ids=["pattern", "nested", "patternProperties", "additionalProperties", "many"],
)
def test_a_catastrophic_pattern_is_a_problem_within_its_budget(
    schema: dict[str, object], instance: object
) -> None:
    codes, took = timed(schema, instance)
    assert codes == ["pattern_timeout"]
    # Unbounded, this match takes hours; bounded, a budget (0.1 s) per pattern. The bound
    # here only has to tell the two apart, on a CI machine running other tests at once.
    assert took < PATTERN_BUDGET_S * 50


def test_patterns_still_validate() -> None:
    schema = {
        "type": "object",
        "properties": {"email": {"type": "string", "pattern": r"^[^@\s]+@[^@\s]+$"}},
        "patternProperties": {"^x-": {"type": "string"}},
        "additionalProperties": False,
    }
    assert timed(schema, {"email": "ada@example.com", "x-tag": "a"})[0] == []
    problems = input_problems(schema, {"email": "nope", "x-n": 1, "other": True})
    assert sorted((p.pointer, p.code) for p in problems) == [
        ("/input", "schema"),
        ("/input/email", "schema"),
        ("/input/x-n", "schema"),
    ]
    assert "'other' does not match any of the regexes: '^x-'" in {p.message for p in problems}


def test_schemas_whose_patterns_cannot_be_bounded_are_refused_when_saved() -> None:
    assert schema_problems({"type": "string", "pattern": "(unclosed"})[0].pointer == (
        "/input_schema/pattern"
    )
    mixed = {"patternProperties": {"^a": {}}, "unevaluatedProperties": False}
    assert "unevaluatedProperties" in schema_problems(mixed)[0].message
    assert schema_problems({"type": "object", "unevaluatedProperties": False}) == []
    assert schema_problems({"type": "string", "pattern": EVIL}) == []  # bounded when used


def test_pattern_pointers_escape_the_schema_authors_keys() -> None:
    from flowyard.engine.input_schema import _patterns

    schema = {"patternProperties": {"a/b": {"properties": {"x~y": {"pattern": "^z"}}}}}
    found = list(_patterns(schema, "/input_schema", set()))
    assert found == [
        ("/input_schema/patternProperties/a~1b", "a/b"),
        ("/input_schema/patternProperties/a~1b/properties/x~0y/pattern", "^z"),
    ]


def test_a_compiled_schema_gives_every_input_its_own_budget() -> None:
    validator = InputValidator({"type": "string", "pattern": EVIL})
    assert validator.is_valid(ATTACK) is False  # ran out of its budget: not accepted
    assert validator.is_valid("aaaa") is True  # the next input starts with a full budget
    assert [p.code for p in validator.problems(ATTACK)] == ["pattern_timeout"]
    assert validator.problems("aaaa") == []
    assert validator.is_valid(3) is False
    assert [p.pointer for p in validator.problems(3, prefix="/items/2")] == ["/items/2"]
