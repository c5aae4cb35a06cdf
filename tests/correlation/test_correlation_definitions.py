"""What a definition declares about correlation and signals, checked by the validator in
both forms (graph and states/actions), without a database."""

from __future__ import annotations

from typing import Any

import pytest

from flowyard.engine.validation import DefinitionValidator
from flowyard.expressions import ExpressionEngine
from flowyard.nodes.registry import default_registry


@pytest.fixture(scope="module")
def validator() -> DefinitionValidator:
    return DefinitionValidator(default_registry(load_plugins=False), ExpressionEngine())


def problems(validator: DefinitionValidator, definition: dict[str, Any]) -> dict[str, str]:
    return {p.pointer: p.code for p in validator.validate(definition).problems}


def machine(**extra: Any) -> dict[str, Any]:
    return {
        "name": "approval",
        "states": [
            {
                "id": "draft",
                "is_initial": True,
                "on_enter": [
                    {"id": "ask", "type": "wait_for_signal", "config": {"signal": "answer"}}
                ],
            },
            {"id": "done", "is_final": True},
        ],
        "actions": [{"id": "finish", "from_states": ["draft"], "to_state": "done"}],
        **extra,
    }


def test_the_state_machine_form_declares_them_too(validator: DefinitionValidator) -> None:
    assert problems(validator, machine(signals=["reply"])) == {
        "/states/0/on_enter/0/config/signal": "undeclared_signal"
    }
    assert problems(validator, machine(correlation={"key": "{{ input.order"})) == {
        "/correlation/key": "expression"
    }
    compiled = validator.compile(
        machine(signals=["answer"], correlation={"key": "{{ input.order }}", "unique": True})
    )
    assert compiled.definition.signals == ["answer"]
    assert compiled.definition.correlation is not None
    assert compiled.definition.correlation.unique


def test_a_key_given_only_at_start_may_still_be_unique(validator: DefinitionValidator) -> None:
    graph = {
        "name": "g",
        "start": "a",
        "correlation": {"unique": True},
        "signals": [],
        "nodes": [{"id": "a", "type": "end"}],
    }
    assert problems(validator, graph) == {}
    graph["signals"] = ["@action"]  # reserved for state-machine actions
    assert problems(validator, graph) == {"/signals/0": "string_pattern_mismatch"}
    graph["signals"] = [f"s{i}" for i in range(101)]
    assert problems(validator, graph) == {"/signals": "too_long"}
    graph["signals"] = None
    graph["correlation"] = {"key": ""}
    assert problems(validator, graph) == {"/correlation/key": "string_too_short"}
