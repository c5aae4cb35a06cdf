"""Node and edge operations on a draft, each compiled to one JSON Patch (one undo step).

Pure: a function reads the document and returns an :class:`Edit` (the forward patch and a
one-line summary); :func:`flowyard.drafts.patching.apply_patch` applies it and derives the
inverse. Where a node references another (``next``, catch routes, condition cases, branch
starts, ...) is asked of a :data:`RouteFinder`, so rename and delete follow references in
node types this module does not know (see :mod:`flowyard.drafts.routes`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, assert_never

from flowyard.domain.definition import NODE_ID_PATTERN
from flowyard.domain.errors import Conflict, InvalidInput, NotFound, Problem
from flowyard.drafts.expressions import rename_step
from flowyard.drafts.patching import Document, Operation, pointer

#: JSON pointers, relative to a node, of the node ids it routes to (``/next``,
#: ``/catch/0/next``, ``/config/cases/1/next``).
RouteFinder = Callable[[Mapping[str, Any]], Iterable[str]]
#: The expressions of a node that may mention a text: (pointer relative to the node, source,
#: True for a bare condition rather than a template).
ExpressionFinder = Callable[[Mapping[str, Any], str], Iterable[tuple[str, str, bool]]]


def no_expressions(node: Mapping[str, Any], text: str) -> list[tuple[str, str, bool]]:
    """An expression finder that finds none."""
    return []


@dataclass(frozen=True, slots=True)
class References:
    """How an edit finds what refers to a node: its routes, and the expressions that read
    its output (``steps.<id>``)."""

    routes: RouteFinder
    expressions: ExpressionFinder = no_expressions


_NODE_ID = re.compile(NODE_ID_PATTERN)
#: Node fields a merge patch may change (``id`` changes by rename: it moves references).
_MERGEABLE = frozenset(
    {"type", "name", "description", "config", "next", "retry", "timeout_s", "catch",
     "max_iterations", "position"}
)  # fmt: skip
_COORDINATE_LIMIT = 1e7


class EdgeMode(StrEnum):
    """What deleting a node does to the routes that led to it."""

    REMOVE = "remove"
    RECONNECT = "reconnect"


class EdgeKind(StrEnum):
    """The kinds of route between nodes an editor can draw."""

    NEXT = "next"
    CASE = "case"
    DEFAULT = "default"
    CATCH = "catch"
    BRANCH = "branch"


@dataclass(frozen=True, slots=True)
class Edge:
    """A route from ``source``: its kind, its target, and what a kind needs (a case's
    ``when``, a catch route's ``errors``, a branch's ``name``, a position ``index``)."""

    source: str
    kind: EdgeKind = EdgeKind.NEXT
    target: str | None = None
    when: str | None = None
    errors: tuple[str, ...] = ("*",)
    name: str | None = None
    index: int | None = None


@dataclass(frozen=True, slots=True)
class Edit:
    """A patch to apply as one step, and its summary."""

    ops: list[Operation]
    summary: str
    touched: frozenset[str] = field(default_factory=frozenset)


def basic_routes(node: Mapping[str, Any]) -> list[str]:
    """The routes every node has: ``next`` and its catch routes."""
    found = ["/next"] if isinstance(node.get("next"), str) else []
    catch = node.get("catch")
    if isinstance(catch, list):
        found += [
            f"/catch/{i}/next"
            for i, rule in enumerate(catch)
            if isinstance(rule, dict) and isinstance(rule.get("next"), str)
        ]
    return found


def nodes_of(doc: Document) -> list[Any]:
    """The draft's node list (empty for a new workflow): anything a client patched in, not
    only nodes."""
    nodes = doc["definition"].get("nodes")
    return nodes if isinstance(nodes, list) else []


def find_node(doc: Document, node_id: str) -> tuple[int, dict[str, Any]]:
    """The index and the node with ``node_id`` (NotFound)."""
    for index, node in enumerate(nodes_of(doc)):
        if isinstance(node, dict) and node.get("id") == node_id:
            return index, node
    raise NotFound(f"the draft has no node {node_id!r}")


def _check_id(node_id: Any, where: str) -> str:
    if not isinstance(node_id, str) or not _NODE_ID.match(node_id):
        raise InvalidInput(
            f"a node id is a letter or _ then letters, digits or _ (64 at most): {node_id!r}",
            [Problem(where, "not a node id", "pattern")],
        )
    return node_id


def _check_new_id(doc: Document, node_id: Any, where: str) -> str:
    _check_id(node_id, where)
    if any(isinstance(n, dict) and n.get("id") == node_id for n in nodes_of(doc)):
        raise Conflict(f"the draft already has a node {node_id!r}")
    return str(node_id)


def _position(raw: Any) -> dict[str, float]:
    if (
        not isinstance(raw, dict)
        or set(raw) != {"x", "y"}
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and abs(v) <= _COORDINATE_LIMIT
            for v in raw.values()
        )
    ):
        raise InvalidInput(
            'a position is {"x": number, "y": number} within ±1e7',
            [Problem("/position", "expected {x, y}", "position")],
        )
    return {"x": raw["x"], "y": raw["y"]}


def add_node(doc: Document, node: Any, *, after: str | None = None, position: Any = None) -> Edit:
    """Add ``node``; with ``after``, splice it into that node's ``next`` edge (the new
    node goes on to where ``after`` went, unless it names its own ``next``). The first
    node of an empty draft becomes its start."""
    if not isinstance(node, dict):
        raise InvalidInput("a node is a JSON object with an id and a type")
    node = dict(node)
    own_position = node.pop("position", None)
    position = own_position if position is None else position
    node_id = _check_new_id(doc, node.get("id"), "/id")
    ops: list[Operation] = []
    if "nodes" not in doc["definition"]:
        ops.append({"op": "add", "path": "/definition/nodes", "value": []})
    summary = f"add node {node_id}"
    if after is not None:
        index, previous = find_node(doc, after)
        old_next = previous.get("next")
        if isinstance(old_next, str) and "next" not in node:
            node["next"] = old_next
        ops.append(
            {"op": "add", "path": pointer("definition", "nodes", index, "next"), "value": node_id}
        )
        summary += f" after {after}"
    ops.append({"op": "add", "path": "/definition/nodes/-", "value": node})
    if not doc["definition"].get("start"):
        ops.append({"op": "add", "path": "/definition/start", "value": node_id})
    if position is not None:
        ops.append(
            {"op": "add", "path": pointer("layout", "nodes", node_id), "value": _position(position)}
        )
    return Edit(ops, summary, frozenset({node_id}))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: ``patch`` merged into ``target`` (neither is changed)."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def update_node(doc: Document, node_id: str, patch: Any) -> Edit:
    """Merge ``patch`` into the node (RFC 7386: ``null`` removes a field); ``position``
    goes to the layout. Each changed field is one operation of the step."""
    if not isinstance(patch, dict) or not patch:
        raise InvalidInput("a node update is a non-empty JSON object (RFC 7386 merge patch)")
    unknown = sorted(set(patch) - _MERGEABLE)
    if unknown:
        hint = " (rename a node with POST .../nodes/{id}/rename)" if "id" in unknown else ""
        raise InvalidInput(
            f"a node update may not change {', '.join(unknown)}{hint}",
            [Problem(f"/{key}", "not a field an update may change", "field") for key in unknown],
        )
    index, node = find_node(doc, node_id)
    ops: list[Operation] = []
    base = pointer("definition", "nodes", index)
    merged = merge_patch(node, {k: v for k, v in patch.items() if k != "position"})
    for key in patch:
        if key == "position":
            continue
        path = f"{base}/{pointer(key)[1:]}"
        if key not in merged:
            if key in node:
                ops.append({"op": "remove", "path": path})
        elif merged[key] != node.get(key) or key not in node:
            ops.append({"op": "add", "path": path, "value": merged[key]})
    if "position" in patch:
        ops += _position_ops(doc, node_id, patch["position"])
    return Edit(ops, f"update node {node_id} ({', '.join(sorted(patch))})", frozenset({node_id}))


def _position_ops(doc: Document, node_id: str, raw: Any) -> list[Operation]:
    path = pointer("layout", "nodes", node_id)
    present = node_id in doc["layout"]["nodes"]
    if raw is None:
        return [{"op": "remove", "path": path}] if present else []
    old = doc["layout"]["nodes"].get(node_id)
    position = _position(merge_patch(old, raw) if isinstance(old, dict) else raw)
    return [{"op": "add", "path": path, "value": position}]


def move_node(doc: Document, node_id: str, position: Any) -> Edit:
    """Place a node on the canvas (the layout only)."""
    find_node(doc, node_id)
    return Edit(_position_ops(doc, node_id, position), f"move node {node_id}", frozenset())


def replace_node(doc: Document, node_id: str, node: Any) -> Edit:
    """Replace a node whole (its id stays: rename moves references)."""
    if not isinstance(node, dict):
        raise InvalidInput("a node is a JSON object with an id and a type")
    node = dict(node)
    position = node.pop("position", None)
    if node.setdefault("id", node_id) != node_id:
        raise InvalidInput(
            f"replacing node {node_id!r} cannot change its id (rename it instead)",
            [Problem("/id", f"expected {node_id!r}", "id")],
        )
    index, _ = find_node(doc, node_id)
    ops: list[Operation] = [
        {"op": "replace", "path": pointer("definition", "nodes", index), "value": node}
    ]
    if position is not None:
        ops += _position_ops(doc, node_id, position)
    return Edit(ops, f"replace node {node_id}", frozenset({node_id}))


def _holds(value: Any, text: str) -> bool:
    """Whether ``text`` is a string value anywhere in ``value`` (keys are not values). A
    loop, not recursion: it runs over every node of a draft on a rename."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if item == text:
                return True
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _naming(doc: Document, text: str) -> list[int]:
    """The indexes of the nodes with a string (a key or a value, at any depth) that
    contains ``text``: the only ones that can route to a node of that id or hold an
    expression reading it. One walk over every node, for a rename's two searches."""
    found = []
    for index, node in enumerate(nodes_of(doc)):
        pending: list[Any] = [node]
        while pending:
            item = pending.pop()
            if isinstance(item, str):
                if text in item:
                    found.append(index)
                    break
            elif isinstance(item, dict):
                pending.extend(item)
                pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)
    return found


def references(
    doc: Document, target: str, routes: RouteFinder, among: Sequence[int] | None = None
) -> list[tuple[int, str]]:
    """Every route to ``target``: (index of the node holding it, pointer within it);
    ``among``: the indexes of the only nodes that can hold one (default: every node)."""
    found = []
    nodes = nodes_of(doc)
    for index in range(len(nodes)) if among is None else among:
        node = nodes[index]
        # A route counts only where it resolves to the target: a node that holds no such
        # string has none, and its config need not be parsed (most of a rename's time at
        # 1,000 nodes).
        if not isinstance(node, dict) or node.get("id") == target or not _holds(node, target):
            continue
        for route in routes(node):
            if _resolve(node, route) == target:
                found.append((index, route))
    return found


def _resolve(node: Mapping[str, Any], route: str) -> Any:
    value: Any = node
    for part in route.split("/")[1:]:
        if isinstance(value, dict):
            value = value.get(part.replace("~1", "/").replace("~0", "~"))
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _removal(route: str) -> tuple[str, int]:
    """What removing a route removes: the element a route is the target of (a case, a
    catch rule, a branch: the route's parent is an array element), else the field."""
    parts = route.split("/")
    if len(parts) >= 3 and parts[-2].isdigit():
        return "/".join(parts[:-1]), int(parts[-2])
    return route, -1


def delete_node(doc: Document, node_id: str, edges: EdgeMode, routes: RouteFinder) -> Edit:
    """Remove a node, its layout, and the routes to it: removed (a ``next`` field, a whole
    case, catch rule or branch), or with ``reconnect`` pointed at where the node went (its
    ``next``; removed when it had none). A deleted start node is replaced by its ``next``
    when reconnecting; otherwise the draft reports the dangling start."""
    index, node = find_node(doc, node_id)
    onward = node.get("next") if isinstance(node.get("next"), str) else None
    replace_with = onward if edges is EdgeMode.RECONNECT and onward != node_id else None
    ops: list[Operation] = []
    touched = set()
    removals: list[tuple[int, str, int]] = []
    for holder, route in references(doc, node_id, routes):
        touched.add(str(nodes_of(doc)[holder].get("id")))
        base = pointer("definition", "nodes", holder)
        if replace_with is not None:
            ops.append({"op": "replace", "path": base + route, "value": replace_with})
        else:
            path, element = _removal(route)
            removals.append((holder, path, element))
    # Several elements of one array: highest index first, so the others keep theirs.
    for holder, path, _ in sorted(removals, key=lambda r: (r[0], r[1].rsplit("/", 1)[0], -r[2])):
        ops.append({"op": "remove", "path": pointer("definition", "nodes", holder) + path})
    if doc["definition"].get("start") == node_id and replace_with is not None:
        ops.append({"op": "replace", "path": "/definition/start", "value": replace_with})
    ops.append({"op": "remove", "path": pointer("definition", "nodes", index)})
    if node_id in doc["layout"]["nodes"]:
        ops.append({"op": "remove", "path": pointer("layout", "nodes", node_id)})
    how = "reconnecting" if replace_with is not None else "removing"
    summary = f"delete node {node_id}" + (f" ({how} {len(touched)} routes)" if touched else "")
    return Edit(ops, summary, frozenset(touched))


def rename_node(
    doc: Document,
    node_id: str,
    new_id: str,
    routes: RouteFinder,
    expressions: ExpressionFinder = no_expressions,
) -> Edit:
    """Change a node's id and every reference to it: routes, the start, the layout, and
    the expressions that read its output (``steps.<id>``), all in one step."""
    index, _ = find_node(doc, node_id)
    _check_new_id(doc, new_id, "/id")
    ops: list[Operation] = [
        {"op": "replace", "path": pointer("definition", "nodes", index, "id"), "value": new_id}
    ]
    touched = {new_id}
    naming = _naming(doc, node_id)
    for holder, route in references(doc, node_id, routes, naming):
        touched.add(str(nodes_of(doc)[holder].get("id")))
        path = pointer("definition", "nodes", holder) + route
        ops.append({"op": "replace", "path": path, "value": new_id})
    # A node routing to itself (a loop guard's retry path).
    _, node = find_node(doc, node_id)
    for route in routes(node):
        if _resolve(node, route) == node_id:
            ops.append(
                {
                    "op": "replace",
                    "path": pointer("definition", "nodes", index) + route,
                    "value": new_id,
                }
            )
    if doc["definition"].get("start") == node_id:
        ops.append({"op": "replace", "path": "/definition/start", "value": new_id})
    for holder, path, source in _expressions_reading(doc, node_id, new_id, expressions, naming):
        touched.add(str(nodes_of(doc)[holder].get("id")) if holder != index else new_id)
        ops.append({"op": "replace", "path": pointer("definition", "nodes", holder) + path,
                    "value": source})  # fmt: skip
    layout = doc["layout"]["nodes"]
    if node_id in layout:
        ops.append({"op": "remove", "path": pointer("layout", "nodes", node_id)})
        ops.append(
            {"op": "add", "path": pointer("layout", "nodes", new_id), "value": layout[node_id]}
        )
    return Edit(ops, f"rename node {node_id} to {new_id}", frozenset(touched))


def _expressions_reading(
    doc: Document, old: str, new: str, expressions: ExpressionFinder, among: Sequence[int]
) -> list[tuple[int, str, str]]:
    """(node index, pointer within it, rewritten source) of every expression that reads
    ``steps.<old>``. Only a pointer that resolves to that very string is rewritten (a
    template found in an object's key has no pointer of its own). ``among``: the nodes that
    can hold one (see :func:`_naming`)."""
    found = []
    nodes = nodes_of(doc)
    for index in among:
        node = nodes[index]
        if not isinstance(node, dict):
            continue  # a draft may hold anything there: validation names it
        for path, source, condition in expressions(node, old):
            if _resolve(node, path) != source:
                continue
            rewritten = rename_step(source, old, new, condition=condition)
            if rewritten is not None:
                found.append((index, path, rewritten))
    return found


def connect(doc: Document, edge: Edge) -> Edit:
    """Add a route from ``edge.source`` to ``edge.target``: set ``next`` or the default,
    or add a case, a catch route or a branch (at ``index``, else last)."""
    index, node = find_node(doc, edge.source)
    target = _check_id(edge.target, "/target")
    find_node(doc, target)
    base = pointer("definition", "nodes", index)
    config = node.get("config")
    ops: list[Operation] = []
    if edge.kind in (EdgeKind.CASE, EdgeKind.DEFAULT, EdgeKind.BRANCH) and not isinstance(
        config, dict
    ):
        ops.append({"op": "add", "path": f"{base}/config", "value": {}})
        config = {}
    assert isinstance(config, dict) or edge.kind in (EdgeKind.NEXT, EdgeKind.CATCH)
    match edge.kind:
        case EdgeKind.NEXT:
            ops.append({"op": "add", "path": f"{base}/next", "value": target})
        case EdgeKind.DEFAULT:
            ops.append({"op": "add", "path": f"{base}/config/default", "value": target})
        case EdgeKind.CASE:
            if not edge.when:
                raise InvalidInput("a condition case needs 'when' (an expression)")
            ops += _append(
                config, f"{base}/config", "cases", {"when": edge.when, "next": target}, edge.index
            )
        case EdgeKind.CATCH:
            rule = {"errors": list(edge.errors), "next": target}
            ops += _append(node, base, "catch", rule, edge.index)
        case EdgeKind.BRANCH:
            if not edge.name:
                raise InvalidInput("a parallel branch needs a 'name'")
            ops += _append(
                config,
                f"{base}/config",
                "branches",
                {"name": edge.name, "start": target},
                edge.index,
            )
        case _:
            assert_never(edge.kind)
    return Edit(ops, f"connect {edge.source} -{edge.kind}-> {target}", frozenset({edge.source}))


def _append(
    holder: Any, base: str, key: str, value: dict[str, Any], index: int | None
) -> list[Operation]:
    items = holder.get(key) if isinstance(holder, dict) else None
    if not isinstance(items, list):
        return [{"op": "add", "path": f"{base}/{key}", "value": [value]}]
    if index is None or index >= len(items):
        return [{"op": "add", "path": f"{base}/{key}/-", "value": value}]
    return [{"op": "add", "path": f"{base}/{key}/{max(index, 0)}", "value": value}]


def disconnect(doc: Document, edge: Edge) -> Edit:
    """Remove a route from ``edge.source``: its ``next`` or default, or a case, catch route
    or branch chosen by ``index``, ``name`` (branches) or ``target`` (NotFound)."""
    index, node = find_node(doc, edge.source)
    base = pointer("definition", "nodes", index)
    raw_config = node.get("config")
    config: dict[str, Any] = raw_config if isinstance(raw_config, dict) else {}
    match edge.kind:
        case EdgeKind.NEXT:
            path = f"{base}/next" if "next" in node else None
        case EdgeKind.DEFAULT:
            path = f"{base}/config/default" if "default" in config else None
        case EdgeKind.CASE:
            path = _element(config.get("cases"), f"{base}/config/cases", edge, "next")
        case EdgeKind.CATCH:
            path = _element(node.get("catch"), f"{base}/catch", edge, "next")
        case EdgeKind.BRANCH:
            path = _element(config.get("branches"), f"{base}/config/branches", edge, "start")
        case _:
            assert_never(edge.kind)
    if path is None:
        raise NotFound(f"node {edge.source!r} has no such {edge.kind} route")
    return Edit(
        [{"op": "remove", "path": path}],
        f"disconnect {edge.source} -{edge.kind}->",
        frozenset({edge.source}),
    )


def _element(items: Any, base: str, edge: Edge, target_key: str) -> str | None:
    if not isinstance(items, list):
        return None
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        if (
            (edge.index is not None and i == edge.index)
            or (edge.name is not None and item.get("name") == edge.name)
            or (edge.index is None and edge.name is None and item.get(target_key) == edge.target)
        ):
            return f"{base}/{i}"
    return None


def raw(ops: list[Operation]) -> Edit:
    """A client's own JSON Patch as one step."""
    count = len(ops)
    return Edit(ops, f"patch ({count} operation{'s' if count != 1 else ''})")
