"""Node types' expression fields marked in their config schema (``x-flowyard-expression``)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import Field

from flowyard.nodes.base import NodeConfig
from flowyard.nodes.expression_schema import EXPRESSION_KEYWORD, mark_expressions
from flowyard.nodes.registry import default_registry


class Inner(NodeConfig):
    when: str
    next: str


class Outer(NodeConfig):
    message: str
    cases: list[Inner] = Field(default_factory=list)
    maybe: Inner | None = None
    level: str = "info"


def schema() -> dict[str, Any]:
    return Outer.model_json_schema()


def test_marks_properties_through_lists_refs_and_optionals() -> None:
    marked = mark_expressions(schema(), ["/message", "/maybe/next"], "template")
    mark_expressions(marked, ["/cases/*/when"], "condition")
    assert marked["properties"]["message"][EXPRESSION_KEYWORD] == "template"
    assert EXPRESSION_KEYWORD not in marked["properties"]["level"]
    inner = marked["$defs"]["Inner"]["properties"]
    assert inner["when"][EXPRESSION_KEYWORD] == "condition"
    assert inner["next"][EXPRESSION_KEYWORD] == "template"


@pytest.mark.parametrize("pointer", ["message", "/nope", "/message/x", "/level/*", "/cases/when"])
def test_a_pointer_to_no_property_is_refused(pointer: str) -> None:
    with pytest.raises(ValueError, match="expression field"):
        mark_expressions(schema(), [pointer], "template")


def test_every_registered_type_declares_fields_its_schema_has() -> None:
    """describe() marks them (a typo would raise); the condition's cases are conditions."""
    described = {d["type"]: d for d in default_registry().describe()}
    case = described["condition"]["config_schema"]["$defs"]["Case"]["properties"]
    assert case["when"][EXPRESSION_KEYWORD] == "condition"
    for kind in ("log", "http", "email", "salesforce", "set", "end"):
        schema = described[kind]["config_schema"]
        assert any(
            p.get(EXPRESSION_KEYWORD) == "template" for p in schema["properties"].values()
        ), kind
