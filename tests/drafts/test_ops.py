"""Draft operations compiled to JSON Patches, applied and undone without a database."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flowyard.domain.errors import Conflict, InvalidInput, NotFound
from flowyard.drafts import ops
from flowyard.drafts.expressions import rename_step
from flowyard.drafts.ops import Edge, EdgeKind, EdgeMode
from flowyard.drafts.patching import (
    PatchFailed,
    Step,
    apply_patch,
    new_document,
    parse_patch,
)
from flowyard.drafts.routes import registry_references, registry_routes
from flowyard.engine.validation import DefinitionValidator
from flowyard.expressions import ExpressionEngine
from flowyard.nodes.registry import default_registry

REGISTRY = default_registry(load_plugins=False)
ROUTES = registry_routes(REGISTRY)
REFERENCES = registry_references(REGISTRY, ExpressionEngine())


def canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def lead_routing() -> dict[str, Any]:
    return new_document(
        {
            "name": "lead-routing",
            "start": "new_lead",
            "nodes": [
                {"id": "new_lead", "type": "trigger", "next": "is_east"},
                {
                    "id": "is_east",
                    "type": "condition",
                    "config": {
                        "cases": [{"when": "input.region == 'East'", "next": "east"}],
                        "default": "pool",
                    },
                },
                {
                    "id": "east",
                    "type": "log",
                    "config": {"message": "east"},
                    "catch": [{"errors": ["*"], "next": "pool"}],
                    "next": "notify",
                },
                {"id": "pool", "type": "log", "config": {"message": "general"}, "next": "notify"},
                {"id": "notify", "type": "log", "config": {"message": "done"}},
            ],
        },
        {"nodes": {"new_lead": {"x": 0, "y": 0}, "pool": {"x": 200, "y": 100}}},
    )


def apply(doc: dict[str, Any], edit: ops.Edit) -> Step:
    return apply_patch(doc, edit.ops, edit.summary)


def node(doc: dict[str, Any], node_id: str) -> dict[str, Any]:
    return ops.find_node(doc, node_id)[1]


def test_add_node_after_splices_into_the_edge() -> None:
    doc = lead_routing()
    apply(
        doc,
        ops.add_node(
            doc,
            {"id": "audit", "type": "log", "config": {"message": "a"}},
            after="east",
            position={"x": 5, "y": 6},
        ),
    )
    assert node(doc, "east")["next"] == "audit"
    assert node(doc, "audit")["next"] == "notify"
    assert doc["layout"]["nodes"]["audit"] == {"x": 5, "y": 6}


def test_first_node_of_an_empty_draft_becomes_the_start() -> None:
    doc = new_document({"name": "fresh"})
    apply(doc, ops.add_node(doc, {"id": "go", "type": "trigger"}))
    assert doc["definition"] == {
        "name": "fresh",
        "nodes": [{"id": "go", "type": "trigger"}],
        "start": "go",
    }


def test_update_node_is_a_merge_patch_and_positions_go_to_the_layout() -> None:
    doc = lead_routing()
    apply(
        doc,
        ops.update_node(
            doc,
            "east",
            {
                "config": {"message": "E", "level": "warning"},
                "timeout_s": 5,
                "catch": None,
                "position": {"x": 1, "y": 2},
            },
        ),
    )
    east = node(doc, "east")
    assert east["config"] == {"message": "E", "level": "warning"}
    assert east["timeout_s"] == 5
    assert "catch" not in east
    assert doc["layout"]["nodes"]["east"] == {"x": 1, "y": 2}


def test_update_refuses_an_id_change_and_unknown_fields() -> None:
    doc = lead_routing()
    with pytest.raises(InvalidInput, match="rename"):
        ops.update_node(doc, "east", {"id": "west"})
    with pytest.raises(InvalidInput, match="colour"):
        ops.update_node(doc, "east", {"colour": "red"})
    with pytest.raises(NotFound):
        ops.update_node(doc, "nowhere", {"name": "x"})


def test_rename_updates_every_reference() -> None:
    doc = lead_routing()
    apply(doc, ops.rename_node(doc, "pool", "general_pool", ROUTES))
    apply(doc, ops.rename_node(doc, "new_lead", "lead_in", ROUTES))
    text = canonical(doc)
    assert '"pool"' not in text and '"new_lead"' not in text
    assert node(doc, "is_east")["config"]["default"] == "general_pool"
    assert node(doc, "east")["catch"][0]["next"] == "general_pool"
    assert doc["definition"]["start"] == "lead_in"
    assert doc["layout"]["nodes"]["general_pool"] == {"x": 200, "y": 100}


def test_rename_passes_over_what_is_not_a_node() -> None:
    """A draft may hold anything in its node list (validation names it): a rename with
    expression rewriting leaves a string there alone (it was an AttributeError, a 500)."""
    doc = lead_routing()
    doc["definition"]["nodes"].append("junk")
    apply(doc, ops.rename_node(doc, "pool", "general_pool", ROUTES, REFERENCES.expressions))
    assert node(doc, "is_east")["config"]["default"] == "general_pool"
    assert doc["definition"]["nodes"][-1] == "junk"


def test_rename_rewrites_the_expressions_that_read_the_node_in_one_step() -> None:
    doc = lead_routing()
    east = node(doc, "east")
    east["config"]["message"] = (
        "{{ steps.pool.output.id }} {{ steps['pool'].x }} {{ steps.get(\"pool\") }} "
        "{{ vars.pool }} {{ x.steps.pool }} {{ steps.pool_x }} {# steps.pool #} pool"
    )
    cases = node(doc, "is_east")["config"]["cases"]
    cases.append({"when": "steps.pool.output.ok and steps [ 'pool' ].n > 1", "next": "east"})
    node(doc, "notify")["config"] = {"message": "{% for s in steps %}{{ steps.pool }}{% endfor %}"}
    before = canonical(doc)
    edit = ops.rename_node(doc, "pool", "general", REFERENCES.routes, REFERENCES.expressions)
    assert {"east", "is_east", "notify", "general"} <= edit.touched
    step = apply(doc, edit)
    assert node(doc, "east")["config"]["message"] == (
        "{{ steps.general.output.id }} {{ steps['general'].x }} {{ steps.get(\"general\") }} "
        "{{ vars.pool }} {{ x.steps.pool }} {{ steps.pool_x }} {# steps.pool #} pool"
    )
    assert cases[1]["when"] == "steps.general.output.ok and steps [ 'general' ].n > 1"
    assert node(doc, "notify")["config"]["message"].endswith("{{ steps.general }}{% endfor %}")
    apply_patch(doc, step.inverse, "undo")  # one step undoes the rename and every rewrite
    assert canonical(doc) == before


@pytest.mark.parametrize(
    ("source", "condition"),
    [
        ("{{ vars.pool }} pool {{ steps.poolside }}", False),  # never a read of steps.pool
        ("{{ steps.pool }\r\n", False),  # does not lex: left for the validator to report
        ("{{ steps.pool }}\r\n{{ steps.pool }}", False),  # CRLF would not survive the lexer
        ("input.pool == 'pool'", True),
    ],
)
def test_what_rename_leaves_alone(source: str, condition: bool) -> None:
    assert rename_step(source, "pool", "general", condition=condition) is None


def test_rename_follows_branch_starts_of_a_parallel_node() -> None:
    doc = lead_routing()
    apply(
        doc,
        ops.add_node(
            doc,
            {
                "id": "fan",
                "type": "parallel",
                "config": {
                    "branches": [{"name": "a", "start": "pool"}, {"name": "b", "start": "notify"}]
                },
            },
        ),
    )
    apply(doc, ops.rename_node(doc, "pool", "p2", ROUTES))
    assert node(doc, "fan")["config"]["branches"][0]["start"] == "p2"


def test_rename_refuses_a_taken_or_malformed_id() -> None:
    doc = lead_routing()
    with pytest.raises(Conflict):
        ops.rename_node(doc, "pool", "east", ROUTES)
    with pytest.raises(InvalidInput):
        ops.rename_node(doc, "pool", "9 lives", ROUTES)


def test_delete_with_remove_drops_the_routes_that_led_there() -> None:
    doc = lead_routing()
    apply(doc, ops.delete_node(doc, "pool", EdgeMode.REMOVE, ROUTES))
    assert "default" not in node(doc, "is_east")["config"]
    assert node(doc, "east")["catch"] == []
    assert "pool" not in doc["layout"]["nodes"]
    assert [n["id"] for n in ops.nodes_of(doc)] == ["new_lead", "is_east", "east", "notify"]


def test_delete_with_reconnect_points_routes_where_the_node_went() -> None:
    doc = lead_routing()
    apply(doc, ops.delete_node(doc, "east", EdgeMode.RECONNECT, ROUTES))
    assert node(doc, "is_east")["config"]["cases"][0]["next"] == "notify"
    apply(doc, ops.delete_node(doc, "new_lead", EdgeMode.RECONNECT, ROUTES))
    assert doc["definition"]["start"] == "is_east"


def test_delete_removes_several_cases_of_one_condition() -> None:
    doc = lead_routing()
    apply(doc, ops.connect(doc, Edge("is_east", EdgeKind.CASE, "pool", when="1 == 2")))
    apply(doc, ops.connect(doc, Edge("is_east", EdgeKind.CASE, "east", when="2 == 2")))
    apply(doc, ops.delete_node(doc, "east", EdgeMode.REMOVE, ROUTES))
    assert node(doc, "is_east")["config"]["cases"] == [{"when": "1 == 2", "next": "pool"}]


def test_connect_and_disconnect_each_kind() -> None:
    doc = lead_routing()
    apply(doc, ops.connect(doc, Edge("notify", EdgeKind.NEXT, "pool")))
    apply(doc, ops.connect(doc, Edge("pool", EdgeKind.CATCH, "notify", errors=("http.*",))))
    apply(doc, ops.connect(doc, Edge("is_east", EdgeKind.CASE, "notify", when="x", index=0)))
    assert node(doc, "notify")["next"] == "pool"
    assert node(doc, "pool")["catch"] == [{"errors": ["http.*"], "next": "notify"}]
    assert node(doc, "is_east")["config"]["cases"][0] == {"when": "x", "next": "notify"}
    apply(doc, ops.disconnect(doc, Edge("is_east", EdgeKind.CASE, target="notify")))
    apply(doc, ops.disconnect(doc, Edge("is_east", EdgeKind.DEFAULT)))
    apply(doc, ops.disconnect(doc, Edge("notify", EdgeKind.NEXT)))
    assert node(doc, "is_east")["config"] == {
        "cases": [{"when": "input.region == 'East'", "next": "east"}]
    }
    assert "next" not in node(doc, "notify")
    with pytest.raises(NotFound):
        ops.disconnect(doc, Edge("notify", EdgeKind.NEXT))
    with pytest.raises(NotFound):
        ops.connect(doc, Edge("notify", EdgeKind.NEXT, "ghost"))


def test_branches_of_a_parallel_node() -> None:
    doc = lead_routing()
    apply(doc, ops.add_node(doc, {"id": "fan", "type": "parallel"}))
    apply(doc, ops.connect(doc, Edge("fan", EdgeKind.BRANCH, "pool", name="left")))
    apply(doc, ops.connect(doc, Edge("fan", EdgeKind.BRANCH, "east", name="right")))
    apply(doc, ops.disconnect(doc, Edge("fan", EdgeKind.BRANCH, name="left")))
    assert node(doc, "fan")["config"] == {"branches": [{"name": "right", "start": "east"}]}


def test_a_patch_that_does_not_apply_names_the_operation_and_changes_nothing() -> None:
    doc = lead_routing()
    before = canonical(doc)
    patch = parse_patch(
        [
            {"op": "replace", "path": "/definition/nodes/0/name", "value": "x"},
            {"op": "add", "path": "/definition/nodes/0/name", "value": "first"},
            {"op": "remove", "path": "/definition/nodes/9"},
        ]
    )
    with pytest.raises(PatchFailed) as failed:
        apply_patch(doc, patch, "raw")
    assert failed.value.index == 0  # replace needs the member to exist
    patch = parse_patch(patch[1:])
    with pytest.raises(PatchFailed) as failed:
        apply_patch(doc, patch, "raw")
    assert failed.value.index == 1
    assert canonical(doc) == before


@pytest.mark.parametrize(
    ("raw", "index"),
    [
        ([{"op": "add", "path": "/definition/x"}], 0),  # no value
        (
            [
                {"op": "test", "path": "/definition/name", "value": "lead-routing"},
                {"op": "remove", "path": ""},
            ],
            1,
        ),
        ([{"op": "jump", "path": "/definition"}], 0),
        ([{"op": "remove", "path": "/elsewhere"}], 0),
    ],
)
def test_malformed_patches_are_refused(raw: list[dict[str, Any]], index: int) -> None:
    with pytest.raises(PatchFailed) as failed:
        parse_patch(raw)
    assert failed.value.index == index


def test_a_patch_may_not_break_the_document_frame() -> None:
    doc = lead_routing()
    with pytest.raises(PatchFailed, match="breaks"):
        apply_patch(doc, parse_patch([{"op": "replace", "path": "/layout", "value": 1}]), "x")
    assert doc["layout"]["nodes"]["pool"] == {"x": 200, "y": 100}


def test_move_and_copy_are_undone_exactly() -> None:
    doc = lead_routing()
    before = canonical(doc)
    step = apply_patch(
        doc,
        parse_patch(
            [
                {"op": "move", "from": "/definition/nodes/4", "path": "/definition/nodes/0"},
                {"op": "copy", "from": "/definition/nodes/1", "path": "/definition/nodes/-"},
                {"op": "test", "path": "/definition/nodes/0/id", "value": "notify"},
            ]
        ),
        "shuffle",
    )
    assert {op["op"] for op in step.forward} <= {"add", "remove", "test"}
    apply_patch(doc, step.inverse, "undo")
    assert canonical(doc) == before


def serialized(doc: Any) -> bytes:
    """The document's bytes as an API answer serialises it: keys in their order."""
    return json.dumps(doc).encode()


def test_undo_to_the_start_and_redo_to_the_end_are_byte_identical_at_every_step() -> None:
    doc = lead_routing()
    states = [serialized(doc)]
    steps: list[Step] = []
    for index in range(SESSION_LENGTH):
        steps.append(apply(doc, _nth_edit(doc, index)))
        states.append(serialized(doc))
    for index in range(len(steps) - 1, -1, -1):
        apply_patch(doc, steps[index].inverse, "undo")
        assert serialized(doc) == states[index], f"undo of step {index}"
    for index, step in enumerate(steps):
        apply_patch(doc, step.forward, "redo")
        assert serialized(doc) == states[index + 1], f"redo of step {index}"


def test_removing_a_member_and_undoing_puts_the_key_back_where_it_was() -> None:
    doc = lead_routing()
    before = serialized(doc)
    step = apply(doc, ops.update_node(doc, "east", {"config": None}))
    assert list(node(doc, "east")) == ["id", "type", "catch", "next"]
    apply_patch(doc, step.inverse, "undo")
    assert list(node(doc, "east")) == ["id", "type", "config", "catch", "next"]
    assert serialized(doc) == before


def test_a_client_cannot_place_keys_with_member_index() -> None:
    """``member_index`` is written only into inverses; in a client's patch it is ignored
    (RFC 6902: unknown members are)."""
    patch = parse_patch(
        [{"op": "add", "path": "/definition/description", "value": "d", "member_index": 0}]
    )
    assert patch == [{"op": "add", "path": "/definition/description", "value": "d"}]


SESSION_EDITS: list[Any] = [
    lambda d: ops.add_node(
        d, {"id": "audit", "type": "log", "config": {"message": "a"}}, after="east"
    ),
    lambda d: ops.update_node(
        d, "audit", {"config": {"message": "b"}, "position": {"x": 9, "y": 9}}
    ),
    # A member removed from the middle of a node, then one added back (at the end).
    lambda d: ops.update_node(d, "east", {"config": None, "name": "East"}),
    lambda d: ops.update_node(d, "east", {"config": {"message": "east again"}}),
    lambda d: ops.rename_node(d, "pool", "general_pool", ROUTES),
    lambda d: ops.connect(d, Edge("is_east", EdgeKind.CASE, "audit", when="input.vip")),
    lambda d: ops.connect(d, Edge("general_pool", EdgeKind.CATCH, "notify", errors=("http.*",))),
    lambda d: ops.disconnect(d, Edge("east", EdgeKind.CATCH, target="general_pool")),
    lambda d: ops.disconnect(d, Edge("east", EdgeKind.NEXT)),
    lambda d: ops.connect(d, Edge("east", EdgeKind.NEXT, "notify")),
    lambda d: ops.add_node(d, {"id": "fan", "type": "parallel"}),
    lambda d: ops.connect(d, Edge("fan", EdgeKind.BRANCH, "audit", name="left")),
    lambda d: ops.connect(d, Edge("fan", EdgeKind.BRANCH, "notify", name="right")),
    lambda d: ops.disconnect(d, Edge("fan", EdgeKind.BRANCH, name="left")),
    lambda d: ops.replace_node(d, "notify", {"type": "log", "config": {"message": "bye"}}),
    lambda d: ops.move_node(d, "new_lead", {"x": 50, "y": 60}),
    lambda d: ops.update_node(d, "new_lead", {"position": None}),  # the first layout key
    lambda d: ops.delete_node(d, "east", EdgeMode.RECONNECT, ROUTES),
    lambda d: ops.disconnect(d, Edge("is_east", EdgeKind.DEFAULT)),
    lambda d: ops.raw(
        parse_patch(
            [
                {"op": "add", "path": "/definition/description", "value": "d"},
                # the name moved to the end of the definition, and a key moved in the layout
                {"op": "move", "from": "/definition/name", "path": "/definition/name"},
                {"op": "remove", "path": "/definition/name"},
                {"op": "add", "path": "/definition/name", "value": "lead-routing"},
                {"op": "move", "from": "/layout/nodes/audit", "path": "/layout/nodes/audit2"},
            ]
        )
    ),
    lambda d: ops.delete_node(d, "general_pool", EdgeMode.REMOVE, ROUTES),
    lambda d: ops.delete_node(d, "fan", EdgeMode.REMOVE, ROUTES),
]
SESSION_LENGTH = len(SESSION_EDITS)


def _nth_edit(doc: dict[str, Any], index: int) -> ops.Edit:
    # Each edit is built on the document as it is after the ones before.
    edit: ops.Edit = SESSION_EDITS[index](doc)
    return edit


def test_the_edited_session_still_validates() -> None:
    doc = lead_routing()
    for index in range(SESSION_LENGTH):
        apply(doc, _nth_edit(doc, index))
    validator = DefinitionValidator(REGISTRY, ExpressionEngine())
    result = validator.validate(doc["definition"])
    assert result.ok, result.problems
