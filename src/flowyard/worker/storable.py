"""What a step may store: its results made storable before the worker commits them.

A node hands back whatever the outside world sent (an HTTP response parsed as JSON, a
plugin's output, an error with the upstream body in its details). Every transition passes
through :func:`storable` once, in the executor, so no step row, run row or event ever holds
a value the API cannot serve (see :mod:`flowyard.domain.jsonvalue`). The rule:

- a lone surrogate or U+0000 in any string or key becomes U+FFFD: the text around it is
  kept, and nothing a reader could use is lost (PostgreSQL cannot store U+0000 at all);
- a non-finite number (NaN, Infinity, an overflowing ``1e999``) or an integer of more than
  4,300 digits (which Python cannot convert to text) in what a step produces
  (its output, a child run's input, a map item, wait data) fails the step with the
  permanent error ``output.invalid``; nesting deeper than 64 levels there fails it with
  ``output.too_deep``. Both name the place with a JSON pointer in ``details.pointer``; a
  node's ``catch`` may route them like any other error. Replacing a number by null would
  change what later steps decide on, so it is not done silently;
- in an error (type, message, details) and in event data, which describe a failure that is
  being recorded anyway, the same problems are repaired instead: such numbers become
  null and too deep containers the string ``[truncated: nested deeper than 64 levels]``.

- what a step stores (those same values, each counted once) is at most
  ``max_output_bytes`` as JSON text; larger fails the step with the permanent error
  ``output.too_large`` (``details``: ``size`` and ``limit``).

Checking and measuring megabytes takes milliseconds: :func:`is_large` says, from a bounded
look, when the executor should call :func:`storable` in a thread. A result is measured only
when its estimate could reach the limit: under the default limit, never below
:data:`OFF_LOOP_BYTES` (estimated); under a small limit (down to :data:`MIN_OUTPUT_BYTES`,
for operators who keep run rows small: decision 0031), from a 24th of the limit up, which
costs well under a millisecond.

Types JSON does not have (a set, bytes) are left to the store: the database refuses them
and the worker fails the step with ``engine.commit`` (``Worker._uncommittable``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from flowyard.domain import jsonvalue
from flowyard.domain.commands import Transition
from flowyard.domain.errors import ErrorInfo

OUTPUT_INVALID = "output.invalid"
OUTPUT_TOO_DEEP = "output.too_deep"
OUTPUT_TOO_LARGE = "output.too_large"

#: A result estimated at least this large is checked in a thread and measured.
OFF_LOOP_BYTES = 64 * 1024
#: JSON text is at most 12 times the estimate of :func:`is_large` (a character written as two
#: ``\\uXXXX`` escapes; a float's 24 characters count 3): a result estimated under a 12th of
#: a limit is under it and needs no measuring (tests/unit/test_storable.py tries the worst
#: cases). A 24th leaves room for the brackets and separators around small values.
ESTIMATE_MARGIN = 24
#: The smallest ``max_output_bytes`` allowed.
MIN_OUTPUT_BYTES = 64 * 1024
#: ``Settings.max_output_bytes`` by default: above the http node's default response limit
#: (10 MiB) with room for JSON escaping, so a response it accepts by default is stored.
DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024

#: Event data holds an error as ``{"error": {"details": ...}}``: two levels more than the
#: error's own details, which are cut at :data:`~flowyard.domain.jsonvalue.MAX_DEPTH`.
_EVENT_DEPTH = jsonvalue.MAX_DEPTH + 2


def _value(value: Any) -> Any | jsonvalue.JsonProblem:
    """``value`` with its characters repaired, or the problem that makes it unstorable."""
    if not jsonvalue.problems(value, limit=1):
        return value  # the common case: one walk, no copy
    fatal = jsonvalue.problems(value, limit=1, ignore=jsonvalue.CHARACTER_PROBLEMS)
    if fatal:
        return fatal[0]
    return jsonvalue.repair(value)


def _repaired(value: Any, max_depth: int = jsonvalue.MAX_DEPTH) -> Any:
    if not jsonvalue.problems(value, max_depth=max_depth, limit=1):
        return value
    return jsonvalue.repair(value, max_depth=max_depth)


def _error(error: ErrorInfo | None) -> ErrorInfo | None:
    if error is None:
        return None
    type_, message = jsonvalue.clean_text(error.type), jsonvalue.clean_text(error.message)
    details = _repaired(error.details)
    if type_ is error.type and message is error.message and details is error.details:
        return error
    return ErrorInfo(type_, message, error.transient, details)


def _refusal(where: str, problem: jsonvalue.JsonProblem) -> ErrorInfo:
    pointer = where + problem.pointer
    too_deep = problem.code == jsonvalue.TOO_DEEP
    return ErrorInfo(
        OUTPUT_TOO_DEEP if too_deep else OUTPUT_INVALID,
        f"the step's result cannot be stored: {problem.message} at {pointer}",
        False,
        {"pointer": pointer, "problem": problem.code},
    )


def _stored(transition: Transition) -> list[Any]:
    """The values a transition stores as a step's results, each object once (an end node's
    output is often the run's output too)."""
    values = [transition.output, transition.run_output]
    if transition.child is not None:
        values.append(transition.child.input)
    if transition.fork is not None:
        values.extend(branch.item for branch in transition.fork.branches)
    if transition.wait is not None:
        values.append(transition.wait.data)
    unique = {id(v): v for v in values if v is not None}
    return list(unique.values())


def _estimate(values: list[Any], enough: int) -> int:
    """A lower bound of the JSON size of ``values``, counted until it reaches ``enough``:
    one byte per value (its separator) plus a string's or a key's characters, an integer's
    digits (from its bit length: they cannot be counted as text), 3 for a float (``0.0``)."""
    size = 0
    stack = list(values)
    while stack and size < enough:
        value = stack.pop()
        size += 1
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, float):
            size += 3
        elif isinstance(value, int):
            size += value.bit_length() * 3 // 10  # log10(2) > 0.3
        elif isinstance(value, dict):
            size += sum(len(k) if isinstance(k, str) else 1 for k in value)
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return size


def is_large(transition: Transition) -> bool:
    """Whether ``transition`` stores at least :data:`OFF_LOOP_BYTES` (estimated, looking at
    no more than that): then :func:`storable` belongs in a thread."""
    return _estimate(_stored(transition), OFF_LOOP_BYTES) >= OFF_LOOP_BYTES


def needs_measuring(transition: Transition, max_bytes: int) -> bool:
    """Whether what ``transition`` stores could be larger than ``max_bytes`` as JSON text,
    from a bounded look at its estimate (False: it cannot be)."""
    enough = min(OFF_LOOP_BYTES, max_bytes // ESTIMATE_MARGIN)
    return _estimate(_stored(transition), enough) >= enough


def _too_large(transition: Transition, max_bytes: int) -> ErrorInfo | None:
    """``output.too_large`` when what ``transition`` stores is larger than ``max_bytes`` as
    JSON text (only measured when :func:`needs_measuring`)."""
    if not needs_measuring(transition, max_bytes):
        return None
    # As the store writes it (json.dumps); types it refuses are measured by their str().
    size = sum(len(json.dumps(value, default=str)) for value in _stored(transition))
    if size <= max_bytes:
        return None
    return ErrorInfo(
        OUTPUT_TOO_LARGE,
        f"the step's result is {size} bytes as JSON; the limit is {max_bytes} (max_output_bytes)",
        False,
        {"size": size, "limit": max_bytes},
    )


def storable(transition: Transition, max_output_bytes: int | None = None) -> Transition | ErrorInfo:
    """``transition`` with what it would store made storable, or the error the step fails
    with instead (``output.invalid``, ``output.too_deep``, and ``output.too_large`` when
    ``max_output_bytes`` is given)."""
    checked = _storable(transition)
    if max_output_bytes is None or isinstance(checked, ErrorInfo):
        return checked
    return _too_large(checked, max_output_bytes) or checked


def _storable(transition: Transition) -> Transition | ErrorInfo:
    changes: dict[str, Any] = {}
    for name in ("output", "run_output"):
        checked = _value(getattr(transition, name))
        if isinstance(checked, jsonvalue.JsonProblem):
            return _refusal("/output", checked)
        changes[name] = checked
    if transition.child is not None:
        checked = _value(transition.child.input)
        if isinstance(checked, jsonvalue.JsonProblem):
            return _refusal("/child/input", checked)
        if checked is not transition.child.input:
            changes["child"] = replace(transition.child, input=checked)
    if transition.fork is not None:
        branches = []
        for index, branch in enumerate(transition.fork.branches):
            checked = _value(branch.item)
            if isinstance(checked, jsonvalue.JsonProblem):
                return _refusal(f"/branches/{index}/item", checked)
            branches.append(branch if checked is branch.item else replace(branch, item=checked))
        if any(new is not old for new, old in zip(branches, transition.fork.branches, strict=True)):
            changes["fork"] = replace(transition.fork, branches=tuple(branches))
    if transition.wait is not None and transition.wait.data is not None:
        checked = _value(transition.wait.data)
        if isinstance(checked, jsonvalue.JsonProblem):
            return _refusal("/wait/data", checked)
        if checked is not transition.wait.data:
            changes["wait"] = replace(transition.wait, data=checked)
    changes["error"] = _error(transition.error)
    changes["fail_run"] = _error(transition.fail_run)
    events = (transition.event, *transition.extra_events)
    repaired = [(kind, _repaired(data, _EVENT_DEPTH)) for kind, data in events]
    if any(new[1] is not old[1] for new, old in zip(repaired, events, strict=True)):
        changes["event"] = repaired[0]
        changes["extra_events"] = tuple(repaired[1:])
    changes = {k: v for k, v in changes.items() if v is not getattr(transition, k)}
    return replace(transition, **changes) if changes else transition
