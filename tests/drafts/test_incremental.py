"""Incremental validation of drafts gives exactly the problems of a whole validation.

Random edit sequences (node and edge operations, raw JSON Patches, undo) run on a draft; after
each edit the draft is checked incrementally from the previous check and the patch the edit
applied, as the service does, and whole by :class:`DefinitionValidator`: both must give the
same problems in the same order (and the same credential references when it is valid).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowyard.domain.errors import FlowyardError
from flowyard.drafts import ops
from flowyard.drafts.ops import Edge, EdgeKind, EdgeMode
from flowyard.drafts.patching import Step, apply_patch, definition_operations, new_document
from flowyard.drafts.routes import registry_references
from flowyard.engine import incremental
from flowyard.engine.incremental import DefinitionCheck, IncrementalValidator, reusable
from flowyard.engine.validation import DefinitionValidator
from flowyard.expressions import ExpressionEngine
from flowyard.nodes.registry import default_registry

REGISTRY = default_registry(load_plugins=False)
ENGINE = ExpressionEngine()
VALIDATOR = DefinitionValidator(REGISTRY, ENGINE)
INCREMENTAL = IncrementalValidator(VALIDATOR)
REFERENCES = registry_references(REGISTRY, ENGINE)

IDS = ["a", "b", "c", "d", "e", "f", "loop", "x"]
TARGETS = [*IDS, "nowhere"]


def start_document() -> dict[str, Any]:
    return new_document(
        {
            "name": "incremental",
            "start": "a",
            "nodes": [
                {"id": "a", "type": "trigger", "next": "b"},
                {
                    "id": "b",
                    "type": "condition",
                    "config": {
                        "cases": [{"when": "input.n > 1", "next": "c"}],
                        "default": "d",
                    },
                },
                {"id": "c", "type": "log", "config": {"message": "{{ steps.a.output }}"}},
                {
                    "id": "d",
                    "type": "http",
                    "config": {"url": "https://crm.example.com/leads", "credential": "crm"},
                    "next": "e",
                },
                {
                    "id": "e",
                    "type": "parallel",
                    "config": {"branches": [{"name": "one", "start": "f"}]},
                },
                {"id": "f", "type": "log", "config": {"message": "f"}},
            ],
        }
    )


configs = st.sampled_from(
    [
        {"message": "hi"},
        {"message": "{{ steps.b.output }}"},
        {"message": "{{ broken"},  # an expression problem
        {"message": 3},  # a config problem
        {"cases": [{"when": "input.x == 1", "next": "c"}], "default": "nowhere"},
        {"cases": [{"when": "input.x ==", "next": "d"}]},
        {"branches": [{"name": "p", "start": "f"}, {"name": "q", "start": "x"}]},
        {"url": "https://crm.example.com/leads", "credential": "crm"},  # a credential
        {},
    ]
)
types = st.sampled_from(["log", "condition", "trigger", "parallel", "http", "no_such_type"])
node_ids = st.sampled_from(IDS)
targets = st.sampled_from(TARGETS)


@st.composite
def nodes(draw: st.DrawFn) -> dict[str, Any]:
    node: dict[str, Any] = {"id": draw(node_ids), "type": draw(types), "config": draw(configs)}
    if draw(st.booleans()):
        node["next"] = draw(targets)
    if draw(st.booleans()):
        node["max_iterations"] = draw(st.sampled_from([1, 5, 0]))  # 0: a spec problem
    if draw(st.integers(0, 9)) == 0:
        node["catch"] = [{"next": draw(targets)}]
    return node


def _index(doc: dict[str, Any], draw: st.DrawFn) -> int:
    return draw(st.integers(0, max(0, len(ops.nodes_of(doc)) - 1)))


@st.composite
def edits(draw: st.DrawFn) -> Any:
    """An edit: a function of the document giving its operations (or "undo")."""
    kinds = ["add", "update", "replace", "delete", "rename", "connect", "disconnect"]
    kind = draw(st.sampled_from([*kinds, "raw", "undo"]))
    node, target, other = draw(node_ids), draw(targets), draw(node_ids)
    if kind == "add":
        new = draw(nodes())
        after = draw(st.one_of(st.none(), node_ids))
        return lambda doc: ops.add_node(doc, new, after=after).ops
    if kind == "update":
        patch = draw(
            st.sampled_from(
                [
                    {"config": draw(configs)},
                    {"next": target},
                    {"next": None},
                    {"type": draw(types)},
                    {"max_iterations": 3},
                    {"timeout_s": -1},  # a spec problem: the node no longer parses
                    {"name": "renamed", "timeout_s": None},
                ]
            )
        )
        return lambda doc: ops.update_node(doc, node, patch).ops
    if kind == "replace":
        new = draw(nodes())
        return lambda doc: ops.replace_node(doc, node, {**new, "id": node}).ops
    if kind == "delete":
        mode = draw(st.sampled_from(list(EdgeMode)))
        return lambda doc: ops.delete_node(doc, node, mode, REFERENCES.routes).ops
    if kind == "rename":
        return lambda doc: (
            ops.rename_node(doc, node, other, REFERENCES.routes, REFERENCES.expressions).ops
        )
    if kind in ("connect", "disconnect"):
        edge_kind = draw(st.sampled_from(list(EdgeKind)))
        edge = Edge(node, edge_kind, target, when="input.y > 2", name="br")
        build = ops.connect if kind == "connect" else ops.disconnect
        return lambda doc: build(doc, edge).ops
    if kind == "raw":
        return draw(raw_patches())
    return "undo"


@st.composite
def raw_patches(draw: st.DrawFn) -> Any:
    choice = draw(st.integers(0, 8))
    if choice == 0:
        target = draw(st.sampled_from([*TARGETS, 7]))
        return lambda doc: [{"op": "replace", "path": "/definition/start", "value": target}]
    if choice == 1:  # a node that does not parse, with or without a readable id
        junk = draw(st.sampled_from([{"id": "x"}, {"id": "b", "next": 4}, "junk", {"type": 1}]))
        return lambda doc: [
            {"op": "add", "path": f"/definition/nodes/{_index(doc, draw)}", "value": junk}
        ]
    if choice == 2:
        return lambda doc: [{"op": "remove", "path": f"/definition/nodes/{_index(doc, draw)}"}]
    if choice == 3:
        value = draw(st.sampled_from([["go", "stop"], ["go", "go"], "nope"]))
        return lambda doc: [{"op": "add", "path": "/definition/signals", "value": value}]
    if choice == 4:
        value = draw(st.sampled_from(["Bad Name", "incremental", 3]))
        return lambda doc: [{"op": "replace", "path": "/definition/name", "value": value}]
    if choice == 5:
        value = draw(st.sampled_from([{"type": "object"}, {"type": "nonsense"}, []]))
        return lambda doc: [{"op": "add", "path": "/definition/input_schema", "value": value}]
    if choice == 6:  # the whole node list at once
        value = draw(st.lists(nodes(), max_size=4))
        return lambda doc: [{"op": "replace", "path": "/definition/nodes", "value": value}]
    if choice == 7:  # move a node (a remove and an add: indexes shift)
        return lambda doc: [
            {
                "op": "move",
                "from": f"/definition/nodes/{_index(doc, draw)}",
                "path": f"/definition/nodes/{_index(doc, draw)}",
            }
        ]
    key = draw(st.sampled_from(["correlation", "unknown_field"]))
    value = {"key": "{{ input.id"} if key == "correlation" else 1
    return lambda doc: [{"op": "add", "path": f"/definition/{key}", "value": value}]


def assert_same(check: DefinitionCheck, definition: Any) -> None:
    whole = VALIDATOR.validate(definition)
    assert check.problems == whole.problems
    refs = [] if whole.workflow is None else whole.workflow.credential_refs()
    assert check.credentials == refs


def advance(previous: DefinitionCheck, doc: dict[str, Any], step: Step) -> DefinitionCheck:
    definition = doc["definition"]
    nodes_ = definition.get("nodes")
    reuse = None
    if isinstance(nodes_, list):
        reuse = reusable(previous, definition_operations(step.forward), len(nodes_))
    return INCREMENTAL.check(definition, previous=previous, reuse=reuse)


def chain_document() -> dict[str, Any]:
    """A graph without forks (no regions): a reached chain a -> b -> c, an island x -> loop
    -> x (an unguarded cycle the start does not reach) and c2 going nowhere — where a
    reached node's gained edge is derived rather than walked."""
    doc = island_document()
    nodes_ = doc["definition"]["nodes"]
    doc["definition"]["nodes"] = [
        {"id": "a", "type": "trigger", "next": "b"},
        {"id": "b", "type": "log", "config": {"message": "{{ steps.a.output }}"}, "next": "c"},
        {"id": "c", "type": "log", "config": {"message": "c"}},
        *[n for n in nodes_ if n["id"] in ("x", "loop", "c2")],
    ]
    return doc


@settings(
    max_examples=int(os.environ.get("FLOWYARD_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.sampled_from(["start_document", "island_document", "chain_document"]),
    st.lists(edits(), min_size=1, max_size=12),
    st.data(),
)
def test_random_edits_give_the_problems_of_a_whole_validation(
    first: str, sequence: list[Any], data: st.DataObject
) -> None:
    doc = globals()[first]()
    check = INCREMENTAL.check(doc["definition"])
    assert_same(check, doc["definition"])
    history: list[Step] = []
    for edit in sequence:
        if edit == "undo":
            if not history:
                continue
            done = history.pop()
            step = apply_patch(doc, copy.deepcopy(done.inverse), "undo")
        else:
            try:
                step = apply_patch(doc, edit(doc), "edit")
            except FlowyardError:
                continue  # refused (the document is as it was)
            history.append(step)
        check = advance(check, doc, step)
        assert_same(check, doc["definition"])


def test_an_edit_of_one_node_checks_one_node_and_keeps_the_graph() -> None:
    doc = start_document()
    check = INCREMENTAL.check(doc["definition"])
    step = apply_patch(doc, ops.update_node(doc, "d", {"config": {"message": "x"}}).ops, "e")
    after = advance(check, doc, step)
    assert after.checked == 1
    assert after.graph_problems is check.graph_problems  # reused, not recomputed
    assert_same(after, doc["definition"])
    step = apply_patch(doc, ops.update_node(doc, "d", {"next": "nowhere"}).ops, "e")
    moved = advance(after, doc, step)
    assert moved.checked == 1
    assert "dangling_edge" in [p.code for p in moved.graph_problems]
    assert_same(moved, doc["definition"])


@pytest.mark.parametrize(
    "patch",
    [
        [{"op": "replace", "path": "", "value": {}}],
        [{"op": "add", "path": "/nodes", "value": []}],
        [{"op": "remove", "path": "/nodes/9"}],
        [{"op": "add", "path": "/nodes/01", "value": {}}],
        [{"op": "copy", "from": "/nodes/0", "path": "/nodes/1"}],
    ],
)
def test_a_patch_it_cannot_follow_reuses_nothing(patch: list[dict[str, Any]]) -> None:
    doc = start_document()
    check = INCREMENTAL.check(doc["definition"])
    assert reusable(check, patch, 6) is None


@pytest.mark.parametrize(
    "node",
    [
        {"id": "x", "type": "log", "config": {"message": "m"}},
        {"id": "x", "type": "log", "config": {"message": "m"}, "next": "nowhere"},
        {"id": "x", "type": "log", "config": {"message": "m"}, "next": "c"},
        {"id": "x", "type": "log", "config": {"message": "m"}, "next": "x"},  # a loop on itself
        {"id": "x", "type": "log", "catch": [{"next": "d"}, {"next": "gone"}]},
        {"id": "x", "type": "condition", "config": {"cases": [{"when": "1", "next": "q"}]}},
        {"id": "x", "type": "parallel", "config": {"branches": [{"name": "p", "start": "f"}]}},
        {"id": "b", "type": "log", "config": {"message": "a duplicate id"}},
        {"id": "x", "type": "no_such_type"},
        {"id": "x"},  # does not parse
    ],
)
def test_an_appended_node_gives_the_problems_of_a_whole_validation(node: dict[str, Any]) -> None:
    doc = start_document()
    check = INCREMENTAL.check(doc["definition"])
    for _ in range(2):  # the second: appended after a node the first appended
        step = apply_patch(doc, [{"op": "add", "path": "/definition/nodes/-", "value": node}], "a")
        check = advance(check, doc, step)
        assert_same(check, doc["definition"])
        node = {**node, "id": "y"} if node.get("id") == "x" else node


def island_document() -> dict[str, Any]:
    """The start document with nodes the start does not reach: ``x`` and ``loop`` (a cycle
    without a loop guard) and ``c2`` going nowhere."""
    doc = start_document()
    doc["definition"]["nodes"] += [
        {
            "id": "x",
            "type": "log",
            "config": {"message": "{{ steps.loop.output }}"},
            "next": "loop",
        },
        {"id": "loop", "type": "log", "config": {"message": "l"}, "next": "x"},
        {"id": "c2", "type": "log", "config": {"message": "c"}, "next": "nowhere"},
    ]
    return doc


def derived(monkeypatch: pytest.MonkeyPatch, doc: dict[str, Any], edit: Any) -> DefinitionCheck:
    """The check after ``edit``, which must be derived from the previous one without
    walking the graph (the graph checks fail if called), and equal a whole validation's."""
    check = INCREMENTAL.check(doc["definition"])
    assert check.graph_facts is not None
    step = apply_patch(doc, edit(doc), "edit")

    def walked(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the graph was walked")

    monkeypatch.setattr("flowyard.engine.incremental.check_graph", walked)
    after = advance(check, doc, step)
    assert_same(after, doc["definition"])
    return after


def walked(doc: dict[str, Any], edit: Any) -> DefinitionCheck:
    """The check after an edit the derivations must leave to the graph checks."""
    check = INCREMENTAL.check(doc["definition"])
    step = apply_patch(doc, edit(doc), "edit")
    calls: list[Any] = []
    real = incremental.check_graph

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr("flowyard.engine.incremental.check_graph", counted)
        after = advance(check, doc, step)
    assert calls, "derived, not walked"
    assert_same(after, doc["definition"])
    return after


def codes(check: DefinitionCheck) -> list[str]:
    return [p.code for p in check.problems]


def rename(node: str, new: str) -> Any:
    return lambda doc: (
        ops.rename_node(doc, node, new, REFERENCES.routes, REFERENCES.expressions).ops
    )


def connect(source: str, target: str) -> Any:
    return lambda doc: ops.connect(doc, Edge(source, EdgeKind.NEXT, target)).ops


def test_a_rename_in_an_unguarded_cycle_names_the_new_id(monkeypatch: pytest.MonkeyPatch) -> None:
    after = derived(monkeypatch, island_document(), rename("loop", "spin"))
    assert any("spin" in p.message for p in after.problems if p.code == "unguarded_cycle")
    assert any("'spin' is not reachable" in p.message for p in after.problems)


def test_a_rename_of_the_start_renames_it_in_every_unreachable_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    after = derived(monkeypatch, island_document(), rename("a", "begin"))
    assert any("from start 'begin'" in p.message for p in after.problems)


def test_a_rename_of_a_reached_node_keeps_it_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    after = derived(monkeypatch, island_document(), rename("d", "dd"))
    assert not any("'dd'" in p.message for p in after.problems)


def test_a_rename_to_a_dangling_target_removes_the_dangling_edge() -> None:
    doc = island_document()
    assert "dangling_edge" in codes(INCREMENTAL.check(doc["definition"]))
    after = walked(doc, rename("f", "nowhere"))
    assert "dangling_edge" not in codes(after)


def test_a_rename_of_a_node_something_still_names_after_it_is_walked() -> None:
    doc = island_document()

    # c2 routes to the renamed node's old id through a raw patch: a dangling edge appears.
    def edit(doc: dict[str, Any]) -> list[dict[str, Any]]:
        renaming = rename("f", "g")(doc)
        return [*renaming, {"op": "replace", "path": "/definition/nodes/8/next", "value": "f"}]

    after = walked(doc, edit)
    assert "dangling_edge" in codes(after)


def test_an_edge_between_unreached_nodes_keeps_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    after = derived(monkeypatch, island_document(), connect("c2", "x"))
    assert "dangling_edge" not in codes(after)  # c2's next no longer goes nowhere
    assert codes(after).count("unreachable") == 3


def test_an_edge_that_closes_a_cycle_is_walked() -> None:
    doc = island_document()
    # Unreached and in no cycle: p -> q; q -> p closes one (q is named: the walk from p
    # meets q again).
    doc["definition"]["nodes"] += [
        {"id": "p", "type": "log", "config": {"message": "p"}, "next": "q"},
        {"id": "q", "type": "log", "config": {"message": "q"}},
    ]
    after = walked(doc, connect("q", "p"))
    assert any("cycle p -> q -> p" in problem.message for problem in after.problems)


def test_an_edge_from_a_reached_node_that_reaches_another_is_walked() -> None:
    doc = island_document()
    after = walked(doc, connect("f", "c2"))
    assert codes(after).count("unreachable") == 2  # c2 is reached now
    after = walked(doc, lambda doc: ops.disconnect(doc, Edge("f", EdgeKind.NEXT)).ops)
    assert codes(after).count("unreachable") == 3


def test_an_edge_from_a_reached_node_without_forks_grows_the_reached_graph(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = chain_document()
    assert codes(INCREMENTAL.check(doc["definition"])).count("unreachable") == 3
    after = derived(monkeypatch, doc, connect("c", "c2"))  # c had no next: a gained edge
    assert codes(after).count("unreachable") == 2  # c2 is reached now
    assert "dangling_edge" in codes(after)  # c2 still goes nowhere
    monkeypatch.undo()  # the next derivation starts from a whole check
    catch = derived(
        monkeypatch,
        chain_document(),
        lambda doc: ops.connect(doc, Edge("b", EdgeKind.CATCH, "x")).ops,
    )
    assert codes(catch).count("unreachable") == 1  # x and loop through b's catch route: c2 left
    assert "unguarded_cycle" in codes(catch)  # the island's cycle is reached, still unguarded


def test_a_reached_node_that_loses_an_edge_or_closes_a_cycle_is_walked() -> None:
    doc = chain_document()
    after = walked(doc, lambda doc: ops.update_node(doc, "b", {"next": "c2"}).ops)
    assert codes(after).count("unreachable") == 3  # c is no longer reached, c2 is
    doc = chain_document()
    after = walked(doc, connect("c", "a"))  # c -> a closes a -> b -> c -> a
    assert "unguarded_cycle" in codes(after)


def test_an_edge_out_of_a_cycle_is_walked() -> None:
    doc = island_document()
    after = walked(doc, lambda doc: ops.update_node(doc, "loop", {"next": "c2"}).ops)
    assert "unguarded_cycle" not in codes(after)
