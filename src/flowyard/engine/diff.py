"""What changed between two versions of a definition (either form).

Lists of objects with an ``id`` (``nodes``; ``states`` and ``actions``) are compared by id:
added, removed, and changed with the fields that differ; a changed field holding an object
or a list (a node's ``config``, its ``catch``) also names the leaves that differ, as JSON
pointers inside it. Every other top-level field is compared as a whole.
"""

from __future__ import annotations

from typing import Any

from flowyard.domain.jsonvalue import escape_token

_KEYED = ("nodes", "states", "actions")
#: Pointers listed per changed field at most (a rewritten config names its first ones).
MAX_POINTERS = 50


def diff_definitions(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``{"fields": {name: {"from", "to"}}, "<list>": {"added", "removed", "changed"}}``;
    an empty ``fields`` and empty lists mean the definitions are the same."""
    result: dict[str, Any] = {"fields": {}}
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if key in _KEYED and _keyed(before) and _keyed(after):
            result[key] = _diff_keyed(before or [], after or [])
        elif before != after:
            result["fields"][key] = {"from": before, "to": after}
    for key in _KEYED:
        if key in old or key in new:
            result.setdefault(key, {"added": [], "removed": [], "changed": {}})
    return result


def is_empty(diff: dict[str, Any]) -> bool:
    """True when the diff found no change."""
    return not diff["fields"] and not any(
        diff[k]["added"] or diff[k]["removed"] or diff[k]["changed"] for k in _KEYED if k in diff
    )


def _keyed(value: Any) -> bool:
    return value is None or (
        isinstance(value, list) and all(isinstance(v, dict) and "id" in v for v in value)
    )


def _diff_keyed(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    old = {item["id"]: item for item in before}
    new = {item["id"]: item for item in after}
    changed: dict[str, dict[str, Any]] = {}
    for item_id in old.keys() & new.keys():
        fields = {
            field: _change(old[item_id].get(field), new[item_id].get(field))
            for field in sorted(set(old[item_id]) | set(new[item_id]))
            if old[item_id].get(field) != new[item_id].get(field)
        }
        if fields:
            changed[item_id] = fields
    return {
        "added": [i for i in new if i not in old],
        "removed": [i for i in old if i not in new],
        "changed": dict(sorted(changed.items())),
    }


def _change(before: Any, after: Any) -> dict[str, Any]:
    change: dict[str, Any] = {"from": before, "to": after}
    if isinstance(before, dict | list) and isinstance(after, dict | list):
        pointers: list[str] = []
        _leaves(before, after, "", pointers)
        change["pointers"] = pointers
    return change


def _leaves(before: Any, after: Any, at: str, out: list[str]) -> None:
    """Append to ``out`` the pointers (below ``at``) where ``before`` and ``after`` differ:
    the deepest object keys or list positions present in both, else the first that is
    not."""
    if len(out) >= MAX_POINTERS or before == after:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after)):
            here = f"{at}/{escape_token(key)}"
            if key in before and key in after:
                _leaves(before[key], after[key], here, out)
            elif len(out) < MAX_POINTERS:
                out.append(here)
    elif isinstance(before, list) and isinstance(after, list):
        for i in range(max(len(before), len(after))):
            if i < len(before) and i < len(after):
                _leaves(before[i], after[i], f"{at}/{i}", out)
            elif len(out) < MAX_POINTERS:
                out.append(f"{at}/{i}")
    else:
        out.append(at)
