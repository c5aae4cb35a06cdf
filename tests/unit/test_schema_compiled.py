"""The compiled input_schema check is one-sided: whenever it says yes, jsonschema (Draft
2020-12, as InputValidator runs it) says yes too; schemas outside its subset are not
compiled at all."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowyard.engine.input_schema import InputValidator
from flowyard.engine.schema_compiled import compile_schema

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.sampled_from(["", "a", "ab", "abc", "x"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    ),
    max_leaves=6,
)
TYPES = st.sampled_from(["string", "integer", "number", "boolean", "null", "object", "array"])


def _keywords(sub: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "type": st.one_of(TYPES, st.lists(TYPES, min_size=1, max_size=3, unique=True)),
            "enum": st.lists(st.one_of(st.none(), st.booleans(), st.sampled_from(["a", "b"]))),
            "const": st.one_of(st.none(), st.booleans(), st.sampled_from(["a", ""])),
            "minLength": st.integers(0, 3),
            "maxLength": st.integers(0, 3),
            "minimum": st.integers(-3, 3),
            "maximum": st.one_of(st.integers(-3, 3), st.floats(-3, 3, allow_nan=False)),
            "exclusiveMinimum": st.integers(-3, 3),
            "exclusiveMaximum": st.integers(-3, 3),
            "required": st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=2),
            "properties": st.dictionaries(st.sampled_from(["a", "b", "c"]), sub, max_size=2),
            "additionalProperties": st.one_of(st.booleans(), sub),
            "items": sub,
            "minItems": st.integers(0, 2),
            "maxItems": st.integers(0, 2),
            "minProperties": st.integers(0, 2),
            "maxProperties": st.integers(0, 2),
            "title": st.just("t"),
            "format": st.just("email"),
        },
    )


SCHEMAS = st.recursive(
    st.one_of(st.booleans(), _keywords(st.just({}))),
    _keywords,
    max_leaves=4,
)


@settings(max_examples=600, deadline=None)
@given(SCHEMAS, VALUES)
def test_a_compiled_yes_is_a_jsonschema_yes(schema: Any, instance: Any) -> None:
    check = compile_schema(schema)
    assert check is not None
    if check(instance):
        assert jsonschema.Draft202012Validator(schema).is_valid(instance), (schema, instance)


@settings(max_examples=300, deadline=None)
@given(SCHEMAS, VALUES)
def test_the_validator_answers_as_jsonschema(schema: Any, instance: Any) -> None:
    expected = jsonschema.Draft202012Validator(schema).is_valid(instance)
    assert InputValidator(schema).is_valid(instance) == expected


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^a"},
        {"$ref": "#/$defs/x", "$defs": {"x": {}}},
        {"anyOf": [{"type": "string"}]},
        {"properties": {"a": {"pattern": "b"}}},
        {"enum": [1, 2]},  # numbers: jsonschema takes 1 == 1.0
        {"type": "strnig"},
        {"minLength": -1},
        {"patternProperties": {"^a": {}}, "additionalProperties": False},
    ],
)
def test_schemas_outside_the_subset_are_left_to_jsonschema(schema: dict[str, Any]) -> None:
    assert compile_schema(schema) is None


def test_what_jsonschema_allows_beyond_the_check_is_still_allowed() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    validator = InputValidator(schema)
    assert compile_schema(schema) is not None
    assert not compile_schema(schema)({"n": 2.0})  # type: ignore[misc]
    assert validator.is_valid({"n": 2.0})  # jsonschema's integer
    assert not validator.is_valid({"n": "2"})
    assert not validator.is_valid({})
