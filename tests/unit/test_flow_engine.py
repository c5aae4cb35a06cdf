"""Pure flow-control logic: durations, join policies, branch keys, state-machine compilation
and version diffs (no database)."""

from __future__ import annotations

import pytest

from flowyard.domain.commands import JoinPolicy
from flowyard.domain.durations import parse_duration, parse_timestamp
from flowyard.domain.errors import Problem
from flowyard.engine.diff import diff_definitions, is_empty
from flowyard.engine.state_machine import compile_state_machine
from flowyard.store.forks import ancestors, fork_prefix


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90),
        ("30s", 30),
        ("15m", 900),
        ("24h", 86400),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("PT24H", 86400),
        ("P2DT3H", 183600),
        ("PT0.5S", 0.5),
        ("1.5h", 5400),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "P", "PT", "P1DT", "1x", "h", "-5", "soon", True, None, [1]])
def test_bad_durations_say_why(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(bad)


def test_timestamps_are_aware_utc() -> None:
    assert parse_timestamp("2030-01-02T03:04:05Z").isoformat() == "2030-01-02T03:04:05+00:00"
    assert parse_timestamp("2030-01-02T05:04:05+02:00").hour == 3
    assert parse_timestamp("2030-01-02T03:04:05").tzinfo is not None
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_timestamp("tomorrow")


@pytest.mark.parametrize(
    ("policy", "succeeded", "failed", "unfinished", "done"),
    [
        (JoinPolicy(), 2, 0, 1, False),
        (JoinPolicy(), 3, 0, 0, True),
        (JoinPolicy(), 1, 1, 1, True),  # a failure ends it early
        (JoinPolicy(continue_on_error=True), 1, 1, 1, False),
        (JoinPolicy(tolerated_failures=2), 1, 2, 5, False),
        (JoinPolicy(tolerated_failures=2), 1, 3, 5, True),
        (JoinPolicy(mode="any"), 0, 0, 3, False),
        (JoinPolicy(mode="any"), 1, 0, 2, True),
        (JoinPolicy(mode="any", continue_on_error=True), 0, 2, 1, False),
        (JoinPolicy(mode="n_of", n=2, continue_on_error=True), 1, 0, 2, False),
        (JoinPolicy(mode="n_of", n=2, continue_on_error=True), 2, 0, 1, True),
        (JoinPolicy(mode="n_of", n=3, continue_on_error=True), 1, 2, 1, True),  # impossible
    ],
)
def test_join_policies(
    policy: JoinPolicy, succeeded: int, failed: int, unfinished: int, done: bool
) -> None:
    assert policy.done(succeeded=succeeded, failed=failed, unfinished=unfinished) is done
    assert JoinPolicy.of(policy.as_dict()) == policy


def test_branch_keys_nest_under_their_fork() -> None:
    assert fork_prefix("", 12) == "/12."
    assert ancestors("") == [""]
    assert ancestors("/12.a") == ["", "/12.a"]
    assert ancestors("/12.a/40.3") == ["", "/12.a", "/12.a/40.3"]
    assert "/12.a/40.3".startswith(fork_prefix("/12.a", 40))


MACHINE = {
    "name": "m",
    "states": [
        {"id": "open", "is_initial": True, "on_enter": [{"id": "hi", "type": "log"}]},
        {"id": "done", "is_final": True},
    ],
    "actions": [{"id": "close", "from_states": ["open"], "to_state": "done"}],
}


def test_a_state_machine_compiles_to_state_nodes_after_their_on_enter_nodes() -> None:
    compiled = compile_state_machine(MACHINE)
    assert compiled.graph is not None and not compiled.problems
    nodes = {n["id"]: n for n in compiled.graph["nodes"]}
    assert compiled.graph["start"] == "open__hi"
    assert nodes["open__hi"]["next"] == "open"
    assert nodes["open"]["config"]["actions"] == [
        {"id": "close", "name": "close", "to_state": "done", "to": "done", "enabled": True}
    ]
    assert nodes["done"]["config"]["final"] is True
    # Graph pointers map back into the states/actions form.
    located = compiled.locate(Problem("/nodes/0/config/message", "bad", "code"))
    assert located.pointer == "/states/0/on_enter/0/config/message"
    assert compiled.locate(Problem("/nodes/1/config/actions", "x", "c")).pointer == "/states/0"


def test_a_version_diff_lists_nodes_added_removed_and_changed() -> None:
    old = {
        "name": "w",
        "start": "a",
        "nodes": [{"id": "a", "type": "trigger", "next": "b"}, {"id": "b", "type": "end"}],
    }
    new = {
        "name": "w",
        "start": "a",
        "description": "now documented",
        "nodes": [
            {"id": "a", "type": "trigger", "next": "c"},
            {"id": "c", "type": "log", "config": {"message": "x"}},
        ],
    }
    diff = diff_definitions(old, new)
    assert diff["fields"] == {"description": {"from": None, "to": "now documented"}}
    assert diff["nodes"] == {
        "added": ["c"],
        "removed": ["b"],
        "changed": {"a": {"next": {"from": "b", "to": "c"}}},
    }
    assert not is_empty(diff)
    assert is_empty(diff_definitions(old, old))


def test_a_node_shared_by_a_branch_and_the_main_path_is_a_problem() -> None:
    from flowyard.engine.validation import DefinitionValidator
    from flowyard.expressions import ExpressionEngine
    from flowyard.nodes.registry import default_registry

    validator = DefinitionValidator(default_registry(load_plugins=False), ExpressionEngine())
    leaky = {
        "name": "leaky",
        "start": "s",
        "nodes": [
            {"id": "s", "type": "trigger", "next": "p"},
            {
                "id": "p",
                "type": "parallel",
                "config": {
                    "branches": [{"name": "a", "start": "a1"}, {"name": "b", "start": "b1"}]
                },
                "next": "after",
            },
            {"id": "a1", "type": "set", "config": {"values": {"x": 1}}, "next": "after"},
            {"id": "b1", "type": "set", "config": {"values": {"x": 2}}},
            {"id": "after", "type": "end"},
        ],
    }
    problems = validator.validate(leaky).problems
    assert [(p.pointer, p.code) for p in problems] == [("/nodes/4", "shared_node")]
    del leaky["nodes"][2]["next"]
    assert validator.validate(leaky).ok


def test_problem_pointers_with_unicode_digits_sort_without_error() -> None:
    from flowyard.engine.validation import DefinitionValidator
    from flowyard.expressions import ExpressionEngine
    from flowyard.nodes.registry import default_registry

    validator = DefinitionValidator(default_registry(load_plugins=False), ExpressionEngine())
    result = validator.validate({"¹": 1, "²": 2, "name": "x"})  # found by schemathesis
    assert {p.pointer for p in result.problems} >= {"/¹", "/²"}
