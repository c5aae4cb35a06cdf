"""Applying RFC 6902 JSON Patches to a draft document, recording the inverse of each.

A draft document is ``{"definition": {...}, "layout": {"nodes": {id: {"x": .., "y": ..}}}}``.
Every edit is a JSON Patch on it. Undo needs the patch that takes the new document back to
the old one; computing it with a diff of two 1,000-node documents would cost more than the
edit, so the inverse is derived operation by operation from the value each one overwrites
or removes, just before it is applied (``move`` and ``copy`` are first rewritten as the
``remove``/``add`` they mean, so every stored patch has only ``add``, ``remove``,
``replace`` and ``test``).

Undo restores the document byte for byte, key order included: the inverse of removing an
object member re-adds it with ``member_index``, the position the key had (an extension
member: RFC 6902 section 4 says appliers ignore members they do not know, so a stored
inverse still means the same JSON value to any other applier). ``replace`` and an ``add``
over an existing member keep the key where it is.

Documents are mutated in place: the caller owns the one it passes (the service parses a
fresh copy from the store for every edit). A patch that fails part-way is rolled back with
the inverses gathered so far, so the document is as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer

from flowyard.domain.errors import InvalidInput, Problem

Document = dict[str, Any]
Operation = dict[str, Any]

#: Most operations in one patch (one undo step).
MAX_PATCH_OPERATIONS = 5_000
#: Edits may touch only these parts of the document; its root and shape are fixed.
_EDITABLE = ("/definition", "/layout")
#: The member each operation needs besides ``path`` (RFC 6902 section 4).
_MEMBERS = {"add": "value", "replace": "value", "test": "value", "move": "from", "copy": "from"}
#: On an ``add`` into an object: where the key goes among the object's keys (inverses only).
MEMBER_INDEX = "member_index"


class PatchFailed(InvalidInput):
    """A JSON Patch does not apply to the draft; ``index`` is the failing operation's."""

    code = "patch-failed"
    title = "JSON Patch does not apply"

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message, [Problem(f"/{index}", message, "patch")])
        self.index = index
        self.detail = {"operation": index}


@dataclass(frozen=True, slots=True)
class Step:
    """One undoable step: the patch that made it, the patch that undoes it, and what it
    did in one line."""

    forward: list[Operation]
    inverse: list[Operation]
    summary: str


def new_document(definition: dict[str, Any], layout: dict[str, Any] | None = None) -> Document:
    """A draft document from a definition and its layout (positions of nodes)."""
    nodes = (layout or {}).get("nodes")
    return {"definition": definition, "layout": {"nodes": dict(nodes or {})}}


def check_shape(doc: Any) -> None:
    """Refuse a document whose frame the node operations rely on is broken."""
    if not isinstance(doc, dict) or set(doc) != {"definition", "layout"}:
        raise InvalidInput("a draft is an object with exactly 'definition' and 'layout'")
    if not isinstance(doc["definition"], dict):
        raise InvalidInput("the draft's 'definition' must be an object")
    nodes = doc["definition"].get("nodes")
    if nodes is not None and not isinstance(nodes, list):
        raise InvalidInput("the draft's 'definition.nodes' must be an array")
    layout = doc["layout"]
    if not isinstance(layout, dict) or not isinstance(layout.get("nodes"), dict):
        raise InvalidInput("the draft's 'layout' must be {\"nodes\": {...}}")


def parse_patch(raw: Any) -> list[Operation]:
    """A client's JSON Patch, checked for form (PatchFailed names the bad operation)."""
    if not isinstance(raw, list):
        raise InvalidInput("a JSON Patch is an array of operations (RFC 6902)")
    if not raw:
        raise InvalidInput("the JSON Patch is empty: nothing to do")
    if len(raw) > MAX_PATCH_OPERATIONS:
        raise InvalidInput(f"a JSON Patch may have at most {MAX_PATCH_OPERATIONS} operations")
    for index, op in enumerate(raw):
        try:
            jsonpatch.JsonPatch([op])  # validates op, path, from and value
        except (jsonpatch.InvalidJsonPatch, jsonpointer.JsonPointerException, TypeError) as exc:
            raise PatchFailed(f"operation {index} is malformed: {exc}", index) from None
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise PatchFailed(f"operation {index} needs a 'path' (a JSON pointer)", index)
        needs = _MEMBERS.get(op.get("op", ""), "")
        if needs and needs not in op:
            raise PatchFailed(f"operation {index} ({op['op']}) needs '{needs}'", index)
        for key in ("path", "from"):
            path = op.get(key)
            if path is not None and not any(
                path == prefix or path.startswith(prefix + "/") for prefix in _EDITABLE
            ):
                raise PatchFailed(
                    f"operation {index}: {key} {path!r} is outside /definition and /layout",
                    index,
                )
    # member_index is ours to write (in inverses): a client's is ignored, as RFC 6902 says.
    return [{k: v for k, v in op.items() if k != MEMBER_INDEX} for op in raw]


def apply_patch(doc: Document, ops: list[Operation], summary: str) -> Step:
    """Apply ``ops`` to ``doc`` in place and return the step with its inverse. On failure
    the document is restored and PatchFailed names the operation."""
    forward: list[Operation] = []
    inverse: list[Operation] = []
    for index, op in enumerate(ops):
        try:
            for simple in _simplify(doc, op):
                undo = _inverse_of(doc, simple)
                _apply_one(doc, simple)
                forward.append(simple)
                inverse[:0] = undo
        except (
            jsonpatch.JsonPatchException,
            jsonpointer.JsonPointerException,
            KeyError,
            IndexError,
            TypeError,
        ) as exc:
            _rollback(doc, inverse)
            raise PatchFailed(
                f"operation {index} ({op.get('op')} {op.get('path')}): {exc}", index
            ) from None
    try:
        check_shape(doc)
    except InvalidInput as exc:
        _rollback(doc, inverse)
        raise PatchFailed(f"the patch breaks the draft: {exc.message}", len(ops) - 1) from None
    return Step(forward, inverse, summary)


def _rollback(doc: Document, inverse: list[Operation]) -> None:
    for op in inverse:
        _apply_one(doc, op)


def _apply_one(doc: Document, op: Operation) -> None:
    jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
    index = op.get(MEMBER_INDEX)
    if op["op"] == "add" and isinstance(index, int):
        pointer = jsonpointer.JsonPointer(op["path"])
        if pointer.parts:
            parent = jsonpointer.JsonPointer.from_parts(pointer.parts[:-1]).resolve(doc)
            if isinstance(parent, dict):
                _place(parent, pointer.parts[-1], index)


def _place(obj: dict[str, Any], key: str, index: int) -> None:
    """Move ``key`` to position ``index`` among ``obj``'s keys, in place (the object is
    referenced from its parent)."""
    keys = list(obj)
    if keys.index(key) == index:
        return
    keys.remove(key)
    keys.insert(index, key)
    items = [(k, obj[k]) for k in keys]
    obj.clear()
    obj.update(items)


def _simplify(doc: Document, op: Operation) -> list[Operation]:
    """``move`` and ``copy`` as the ``remove``/``add`` they mean (RFC 6902 4.4, 4.5)."""
    kind = op["op"]
    if kind == "move":
        if op["path"].startswith(op["from"] + "/"):
            raise jsonpatch.JsonPatchConflict("cannot move a value into one of its children")
        value = jsonpointer.resolve_pointer(doc, op["from"])
        return [
            {"op": "remove", "path": op["from"]},
            {"op": "add", "path": op["path"], "value": value},
        ]
    if kind == "copy":
        value = copy.deepcopy(jsonpointer.resolve_pointer(doc, op["from"]))
        return [{"op": "add", "path": op["path"], "value": value}]
    return [op]


def _inverse_of(doc: Document, op: Operation) -> list[Operation]:
    """The operations that undo ``op`` on ``doc`` as it is now (before ``op``)."""
    kind, path = op["op"], op["path"]
    if kind == "test":
        return []
    if kind == "replace":
        old = copy.deepcopy(jsonpointer.resolve_pointer(doc, path))
        return [{"op": "replace", "path": path, "value": old}]
    if kind == "remove":
        pointer = jsonpointer.JsonPointer(path)
        parent = jsonpointer.JsonPointer.from_parts(pointer.parts[:-1]).resolve(doc)
        old = copy.deepcopy(pointer.resolve(doc))
        undo = {"op": "add", "path": path, "value": old}
        if isinstance(parent, dict):  # put the key back where it was, not last
            undo[MEMBER_INDEX] = list(parent).index(pointer.parts[-1])
        return [undo]
    # add: into an array it inserts (undo removes that index); into an object it creates
    # the member or replaces it.
    pointer = jsonpointer.JsonPointer(path)
    parent = jsonpointer.JsonPointer.from_parts(pointer.parts[:-1]).resolve(doc)
    key = pointer.parts[-1]
    if isinstance(parent, list):
        index = len(parent) if key == "-" else int(key)
        where = jsonpointer.JsonPointer.from_parts([*pointer.parts[:-1], str(index)]).path
        return [{"op": "remove", "path": where}]
    if isinstance(parent, dict) and key in parent:
        return [{"op": "replace", "path": path, "value": copy.deepcopy(parent[key])}]
    return [{"op": "remove", "path": path}]


def definition_operations(patch: Sequence[Operation]) -> list[Operation]:
    """The operations of a draft patch on its definition, their paths relative to it (a
    path of ``/definition`` itself becomes the root: everything changed)."""
    found: list[Operation] = []
    for op in patch:
        path = op.get("path")
        if isinstance(path, str) and (path == "/definition" or path.startswith("/definition/")):
            found.append({**op, "path": path[len("/definition") :]})
    return found


def pointer(*parts: str | int) -> str:
    """A JSON pointer from its unescaped parts."""
    return jsonpointer.JsonPointer.from_parts([str(p) for p in parts]).path
