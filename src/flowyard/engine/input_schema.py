"""A workflow's ``input_schema``, checked with bounded regular expressions.

An editor writes the schema; anyone who may start a run chooses the input. JSON Schema's
``pattern`` and ``patternProperties`` are regular expressions, and jsonschema matches them
with Python's ``re``, which backtracks without bound and cannot be interrupted:
``^(a+)+$`` against 30 ``a`` and a ``!`` holds a process for minutes (ReDoS). Here the
keywords that match a user's pattern (``pattern``, ``patternProperties``,
``additionalProperties``) use the ``regex`` library, whose matching takes a timeout; all the
matching of one validation shares one time budget, and running out is a problem at the
value's pointer (``pattern_timeout``), never a stall. ``unevaluatedProperties`` matches
``patternProperties`` through jsonschema's own helper, so a schema may not combine the two
(refused when the workflow is saved).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

import jsonschema
import regex
from jsonschema import ValidationError
from jsonschema._utils import extras_msg  # the upstream message, kept identical

from flowyard.domain.errors import Problem
from flowyard.domain.jsonvalue import escape_token
from flowyard.engine.schema_compiled import compile_schema

#: Seconds of pattern matching one input validation may spend, all patterns together.
PATTERN_BUDGET_S = 0.1


class PatternTimeout(Exception):
    """A pattern ran out of the validation's matching budget."""


class _Clock:
    """The matching budget of one validation."""

    def __init__(self, budget_s: float) -> None:
        self.deadline = time.monotonic() + budget_s

    def search(self, pattern: str, text: str) -> bool:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise PatternTimeout(pattern)
        try:
            return _compiled(pattern).search(text, timeout=left) is not None
        except TimeoutError:
            raise PatternTimeout(pattern) from None


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    return regex.compile(pattern)


#: The budget of the validation running in this context (validators are immutable, and
#: jsonschema makes a new one for every subschema it descends into).
_CLOCK: ContextVar[_Clock | None] = ContextVar("flowyard_input_schema_clock", default=None)


def _clock(validator: Any) -> _Clock:
    clock = _CLOCK.get()
    return clock if clock is not None else _Clock(PATTERN_BUDGET_S)


def _pattern(validator: Any, patrn: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _clock(validator).search(patrn, instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    clock = _clock(validator)
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if clock.search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    clock = _clock(validator)
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [
        key
        for key in instance
        if key not in properties and not any(clock.search(p, key) for p in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            listed = ", ".join(repr(each) for each in sorted(patterns))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {listed}")
        else:
            error = "Additional properties are not allowed (%s %s unexpected)"
            yield ValidationError(error % extras_msg(sorted(extras, key=str)))


_Bounded = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
)


class InputValidator:
    """An ``input_schema`` compiled once to check many inputs (a campaign's items): a cheap
    yes or no first (:meth:`is_valid`), the problems only for an input that fails. Every
    validation gets its own pattern budget, as :func:`input_problems`'s does."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._validator = _Bounded(schema)
        # The plain keywords compiled to nested checks (None: the schema needs jsonschema).
        self._fast = compile_schema(schema)

    def is_valid(self, instance: Any) -> bool:
        """True when ``instance`` satisfies the schema; False when it does not, or when
        matching a pattern ran out of its budget (:meth:`problems` says which)."""
        if self._fast is not None and self._fast(instance):
            return True
        token = _CLOCK.set(_Clock(PATTERN_BUDGET_S))
        try:
            return bool(self._validator.is_valid(instance))
        except PatternTimeout:
            return False
        finally:
            _CLOCK.reset(token)

    def problems(self, instance: Any, *, prefix: str = "/input") -> list[Problem]:
        """Where ``instance`` breaks the schema, each at its JSON pointer under ``prefix``
        (``schema`` problems; ``pattern_timeout`` when matching ran out of its budget)."""
        token = _CLOCK.set(_Clock(PATTERN_BUDGET_S))
        problems: list[Problem] = []
        try:
            errors = self._validator.iter_errors(instance)
            for error in sorted(errors, key=lambda e: list(e.path)):
                problems.append(Problem(_pointer(prefix, error.path), error.message, "schema"))
        except PatternTimeout as exc:
            problems.append(
                Problem(
                    prefix,
                    f"matching the input_schema's pattern {str(exc)[:100]!r} took longer than "
                    f"{PATTERN_BUDGET_S:g} s (a pattern that backtracks without bound, such as "
                    "'^(a|a)+$'?): the input was not accepted",
                    "pattern_timeout",
                )
            )
        finally:
            _CLOCK.reset(token)
        return problems


def input_problems(
    schema: Mapping[str, Any], instance: Any, *, prefix: str = "/input"
) -> list[Problem]:
    """Where ``instance`` breaks ``schema``, each at its JSON pointer under ``prefix``
    (``schema`` problems; ``pattern_timeout`` when matching ran out of its budget)."""
    return InputValidator(schema).problems(instance, prefix=prefix)


def schema_problems(schema: Mapping[str, Any]) -> list[Problem]:
    """What makes ``schema`` unusable as an ``input_schema``: not valid JSON Schema, a
    pattern the ``regex`` library cannot compile, or ``unevaluatedProperties`` together with
    ``patternProperties`` (matched by jsonschema's unbounded helper)."""
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = _pointer("/input_schema", exc.path)
        return [Problem(where, f"invalid JSON Schema: {exc.message}", "input_schema")]
    problems: list[Problem] = []
    keywords: set[str] = set()
    for pointer, pattern in _patterns(schema, "/input_schema", keywords):
        try:
            _compiled(pattern)
        except regex.error as exc:
            problems.append(Problem(pointer, f"invalid pattern: {exc}", "input_schema"))
    if {"unevaluatedProperties", "patternProperties"} <= keywords:
        problems.append(
            Problem(
                "/input_schema",
                "unevaluatedProperties cannot be combined with patternProperties in an "
                "input_schema (their patterns could not be time-bounded); use "
                "additionalProperties",
                "input_schema",
            )
        )
    return problems


def _patterns(node: Any, pointer: str, keywords: set[str]) -> Iterator[tuple[str, str]]:
    """Every regex of a schema (``pattern`` values, ``patternProperties`` keys) with its
    pointer; collects the keywords seen into ``keywords``."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _patterns(item, f"{pointer}/{i}", keywords)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        here = _pointer(pointer, [key])
        keywords.add(key)
        if key == "pattern" and isinstance(value, str):
            yield here, value
        elif key == "patternProperties" and isinstance(value, dict):
            for name, sub in value.items():
                yield _pointer(here, [name]), name
                yield from _patterns(sub, _pointer(here, [name]), keywords)
            continue
        if key not in ("const", "enum", "default", "examples"):
            yield from _patterns(value, here, keywords)


def _pointer(prefix: str, path: Iterable[str | int]) -> str:
    """``prefix`` and the JSON pointer of ``path`` (a schema's keys are the user's)."""
    return prefix + "".join("/" + escape_token(part) for part in path)
