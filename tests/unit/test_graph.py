"""A definition's graph as the console draws it (``engine/graph.py``) and the diff's edges
and changed config pointers (no database)."""

from __future__ import annotations

import json
from typing import Any

from flowyard.engine.diff import diff_definitions
from flowyard.engine.graph import EdgeKind, definition_graph, edge_changes
from flowyard.nodes.registry import NodeRegistry, default_registry
from support.acme_pack import Pick
from support.samples import EXAMPLES

REGISTRY = default_registry(load_plugins=False)


def edges(definition: dict[str, Any], registry: NodeRegistry = REGISTRY) -> set[tuple[str, ...]]:
    graph = definition_graph(definition, registry)
    return {(e.source, e.target, e.kind.value, e.label) for e in graph.edges}


def test_edges_come_from_next_catch_and_the_routes_types_declare() -> None:
    definition = json.loads((EXAMPLES / "lead_routing.json").read_text())
    found = edges(definition)
    assert ("is_east", "create_lead", "route", "input.region == 'East Coast'") in found
    assert ("is_east", "assign_pool", "route", "default") in found
    assert ("create_lead", "notify_failure", "catch", "catch *") in found
    assert ("new_lead", "is_east", "next", "") in found
    graph = definition_graph(definition, REGISTRY)
    assert [n.id for n in graph.nodes if n.start] == [definition["start"]]
    assert graph.groups == []


def test_parallel_branches_and_a_map_body_are_groups_nested_innermost() -> None:
    definition = {
        "name": "g",
        "start": "fan",
        "nodes": [
            {
                "id": "fan",
                "type": "parallel",
                "config": {
                    "branches": [{"name": "a", "start": "a1"}, {"name": "b", "start": "each"}]
                },
                "next": "done",
            },
            {"id": "a1", "type": "log", "config": {"message": "x"}, "next": "a2"},
            {"id": "a2", "type": "log", "config": {"message": "x"}},
            {"id": "each", "type": "map", "config": {"items": "{{ input.xs }}", "start": "body"}},
            {"id": "body", "type": "log", "config": {"message": "x"}},
            {"id": "done", "type": "end"},
        ],
    }
    graph = definition_graph(definition, REGISTRY)
    group = {n.id: n.group for n in graph.nodes}
    assert group == {
        "fan": None,
        "a1": "fan",
        "a2": "fan",
        "each": "fan",
        "body": "each",
        "done": None,
    }
    assert {(g.id, g.type, g.parent) for g in graph.groups} == {
        ("fan", "parallel", None),
        ("each", "map", "fan"),
    }
    kinds = {(e.source, e.target): e.kind for e in graph.edges}
    assert kinds[("fan", "a1")] == EdgeKind.BRANCH
    assert kinds[("each", "body")] == EdgeKind.BRANCH
    assert kinds[("fan", "done")] == EdgeKind.NEXT


def test_a_plugin_types_routes_are_edges_labelled_by_label_or_pointer() -> None:
    registry = default_registry(load_plugins=False)
    registry.register(Pick)
    definition = {
        "name": "p",
        "start": "pick",
        "nodes": [
            {
                "id": "pick",
                "type": "acme.pick",
                "config": {"routes": {"yes": "a", "no": "b"}, "otherwise": "b"},
            },
            {"id": "a", "type": "end"},
            {"id": "b", "type": "end"},
        ],
    }
    assert edges(definition, registry) == {
        ("pick", "a", "route", "routes/yes"),
        ("pick", "b", "route", "routes/no"),
        ("pick", "b", "route", "otherwise"),
    }
    # Without the pack the node is drawn, unknown, with no config edges.
    [pick, *_] = definition_graph(definition, REGISTRY).nodes
    assert not pick.known
    assert edges(definition) == set()


def test_an_invalid_draft_is_still_drawn() -> None:
    definition = {
        "start": "x",
        "nodes": [
            {"id": "x", "type": "condition", "config": {"cases": "nope"}, "next": "y"},
            {
                "id": "y",
                "type": "log",
                "config": {"message": "m"},
                "next": "missing",
                "catch": [{"next": "x"}],
            },
            "not a node",
            {"type": "log"},
        ],
    }
    assert edges(definition) == {("x", "y", "next", ""), ("y", "x", "catch", "catch *")}
    assert [n.known for n in definition_graph(definition, REGISTRY).nodes] == [False, True]


def test_a_state_machine_is_drawn_as_states_and_actions() -> None:
    definition = json.loads((EXAMPLES / "approval_state_machine.json").read_text())
    graph = definition_graph(definition, REGISTRY)
    assert [n.id for n in graph.nodes] == [s["id"] for s in definition["states"]]
    kinds = {e.kind for e in graph.edges}
    assert kinds == {EdgeKind.ACTION, EdgeKind.DISABLED_ACTION}


def test_a_diff_names_changed_config_pointers_and_edges_added_and_removed() -> None:
    old = {
        "name": "w",
        "start": "c",
        "nodes": [
            {
                "id": "c",
                "type": "condition",
                "config": {"cases": [{"when": "input.a", "next": "x"}], "default": "y"},
            },
            {"id": "x", "type": "end"},
            {"id": "y", "type": "end"},
        ],
    }
    new = json.loads(json.dumps(old))
    new["nodes"][0]["config"]["cases"][0] = {"when": "input.b", "next": "y"}
    new["nodes"][0]["config"]["default"] = "x"
    diff = diff_definitions(old, new)
    config = diff["nodes"]["changed"]["c"]["config"]
    assert config["pointers"] == ["/cases/0/next", "/cases/0/when", "/default"]
    changes = edge_changes(definition_graph(old, REGISTRY), definition_graph(new, REGISTRY))
    assert {(e["source"], e["target"], e["label"]) for e in changes["added"]} == {
        ("c", "y", "input.b"),
        ("c", "x", "default"),
    }
    assert {(e["source"], e["target"], e["label"]) for e in changes["removed"]} == {
        ("c", "x", "input.a"),
        ("c", "y", "default"),
    }
    assert edge_changes(definition_graph(old, REGISTRY), definition_graph(old, REGISTRY)) == {
        "added": [],
        "removed": [],
    }
