"""Strict JSON: the values flowyard accepts at its edges and keeps in its database.

JSON (RFC 8259) lets a parser accept things that nothing downstream can use: a lone UTF-16
surrogate escape (``"\\ud800"``) decodes to a Python string that cannot be encoded as UTF-8,
so every later response that contains it fails; ``NaN``, ``Infinity`` and numbers that
overflow a double (``1e999``) are not JSON at all; an integer of more than 4,300 digits
parses with a hook at most, and then nothing can write it back (Python refuses to convert it to
text: ``sys.get_int_max_str_digits``); and a document nested hundreds of levels
deep parses, then breaks serialisers with a recursion limit (pydantic's is 255). PostgreSQL
also refuses ``\\u0000`` in ``jsonb``. And an object that names a key twice
(``{"id": "a", "id": "b"}``) means what each parser decides (Python keeps the last, others
the first or refuse): a check made by one reader and an action taken by another can see
different values, a known smuggling vector, so it is refused too.

So, at every edge (request bodies, CLI files and options, run payloads):

- :func:`loads` parses strictly and :func:`check` checks an already-parsed value: no lone
  surrogate and no U+0000 in strings or keys, only finite numbers, integers of at most
  :data:`MAX_INT_DIGITS` digits, containers nested at most
  :data:`MAX_DEPTH` levels, and (:func:`loads` only: a parsed dict cannot hold one) no
  duplicate key in an object. Each refusal names the place with a JSON pointer.
- :func:`repair` makes a value storable instead (lone surrogates and U+0000 become U+FFFD,
  non-finite numbers and too long integers null, too deep containers a marker string): for
  data that must be kept although it is bad, such as the error details of a failing step.
- :func:`loads_stored` is the store's JSON deserializer: rows an older version wrote
  (lone surrogates and ``NaN`` in SQLite's JSON text, nesting of any depth) come back
  repaired, so a read never fails on them.

Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import pydantic_core

#: Deepest nesting accepted at an edge and stored by a step (``{}`` is depth 1, ``{"a": []}``
#: depth 2). Real documents stay far below (JSON Schema documents, API responses: < 20);
#: 64 leaves room for the envelopes a value is served in (run detail > steps > output) and for
#: what expressions build on it, all well under pydantic's serialisation limit of 255 and
#: Python's recursion limit of 1,000 (json, jsonschema and Jinja recurse per level).
MAX_DEPTH = 64

#: Deepest nesting a stored value is read back with. It is the recursion limit of the
#: parser :func:`loads_stored` uses on its fast path (jiter, in pydantic-core), so reading
#: costs no depth walk; a value with 200 levels and its response envelope (< 10 levels) stays
#: under pydantic's limit of 255. Deeper (older) rows are cut at this depth.
STORED_MAX_DEPTH = 200

#: Most digits an integer may have: Python's limit on converting an integer to or from text
#: (the default of ``sys.get_int_max_str_digits``), past which no JSON encoder of the process,
#: nor the store's parser (jiter), can write or read it. Fixed here, not read from ``sys``,
#: so that what is accepted does not depend on a process setting.
MAX_INT_DIGITS = 4300
#: The smallest integer with more than :data:`MAX_INT_DIGITS` digits.
_INT_LIMIT: int = 10**MAX_INT_DIGITS

#: What a lone surrogate or U+0000 is replaced with (U+FFFD REPLACEMENT CHARACTER).
REPLACEMENT = "\ufffd"

#: Stable codes of the refusals (problem ``code`` in the API).
LONE_SURROGATE = "lone_surrogate"
NUL_CHARACTER = "nul_character"
NON_FINITE_NUMBER = "non_finite_number"
TOO_DEEP = "too_deep"
INTEGER_TOO_LARGE = "integer_too_large"
DUPLICATE_KEY = "duplicate_key"
#: The problems :func:`repair` fixes without losing anything a reader could use.
CHARACTER_PROBLEMS = frozenset({LONE_SURROGATE, NUL_CHARACTER})

_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
#: Escapes in JSON text that may decode to what :func:`check` refuses (a valid surrogate
#: pair matches too: a false positive only costs a walk of the value).
_BAD_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
#: In JSON text: an escaped backslash (consumed so that alignment stays right), a valid
#: surrogate pair, or a lone surrogate escape (group 1).
_SURROGATE_ESCAPE = re.compile(
    r"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|(\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)
#: Tokens that locate a place: strings (skipped whole), brackets, commas and colons.
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]')
#: Tokens that matter to depth alone: strings (skipped whole) and brackets.
_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def truncated_marker(max_depth: int) -> str:
    """The string that replaces a container nested deeper than ``max_depth`` levels."""
    return f"[truncated: nested deeper than {max_depth} levels]"


@dataclass(frozen=True, slots=True)
class JsonProblem:
    """One thing in a value that strict JSON refuses, located by a JSON pointer."""

    pointer: str
    message: str
    code: str


class JsonValueError(ValueError):
    """A value or document breaks the strict JSON rules; ``problems`` locates each one."""

    def __init__(self, problems: list[JsonProblem]) -> None:
        first = problems[0]
        where = first.pointer or "the top level"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{first.message} at {where}{more}")
        self.problems = problems


def escape_token(token: str | int) -> str:
    """One JSON pointer reference token (RFC 6901), printable: a lone surrogate or U+0000 of
    a key shows as U+FFFD (the pointer itself must be servable); a (Python) integer key too
    long to convert to text shows as a placeholder."""
    if isinstance(token, int) and _too_long(token):
        return f"[integer of more than {MAX_INT_DIGITS} digits]"
    text = str(token).replace("~", "~0").replace("/", "~1")
    return _BAD_CHAR.sub(REPLACEMENT, text)


def pointer(path: list[str | int], prefix: str = "") -> str:
    """The JSON pointer of ``path`` (keys and indexes), after ``prefix``."""
    return prefix + "".join("/" + escape_token(part) for part in path)


def _char_problem(text: str) -> str | None:
    """The code of what is wrong with a string, None when nothing is."""
    if text.isascii():
        return NUL_CHARACTER if "\x00" in text else None
    found = _BAD_CHAR.search(text)
    if found is None:
        return None
    return NUL_CHARACTER if found.group() == "\x00" else LONE_SURROGATE


def _too_long(value: int) -> bool:
    """Whether an integer has more than :data:`MAX_INT_DIGITS` digits (two comparisons: its
    digits cannot be counted as text)."""
    return value >= _INT_LIMIT or value <= -_INT_LIMIT


_INT_MESSAGE = f"an integer of more than {MAX_INT_DIGITS} digits cannot be converted to text"


def _char_message(code: str, *, key: bool) -> str:
    what = "a key" if key else "a string"
    if code == LONE_SURROGATE:
        return f"{what} contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"
    return f"{what} contains U+0000 (\\u0000), which cannot be stored"


class _Enough(Exception):
    """Stops a scan that found as many problems as asked for."""


class _Scan:
    """A walk that collects problems in document order, up to ``limit``."""

    def __init__(self, max_depth: int, limit: int, prefix: str, ignore: Collection[str]) -> None:
        self.max_depth = max_depth
        self.limit = limit
        self.prefix = prefix
        self.ignore = ignore
        self.found: list[JsonProblem] = []
        self.path: list[str | int] = []

    def add(self, code: str, message: str, last: str | int | None = None) -> None:
        """Record a problem at the current path (plus ``last``)."""
        if code in self.ignore:
            return
        path = self.path if last is None else [*self.path, last]
        self.found.append(JsonProblem(pointer(path, self.prefix), message, code))
        if len(self.found) >= self.limit:
            raise _Enough

    def scalar(self, value: Any, last: str | int | None) -> None:
        """Check a string or number (at the current path plus ``last``)."""
        if isinstance(value, str):
            code = _char_problem(value)
            if code is not None:
                self.add(code, _char_message(code, key=False), last)
        elif isinstance(value, float) and not math.isfinite(value):
            name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            self.add(
                NON_FINITE_NUMBER,
                f"{name} is not a JSON number (NaN, Infinity and numbers that overflow, "
                "such as 1e999, are refused)",
                last,
            )
        elif isinstance(value, int) and _too_long(value):
            self.add(
                INTEGER_TOO_LARGE,
                _INT_MESSAGE,
                last,
            )

    def walk(self, value: Any, depth: int) -> None:
        """Check a container at ``depth`` and everything in it."""
        if isinstance(value, dict):
            if depth > self.max_depth:
                self.add(TOO_DEEP, f"nesting is deeper than {self.max_depth} levels")
                return
            for key, item in value.items():
                if isinstance(key, str):
                    code = _char_problem(key)
                    if code is not None:
                        self.add(code, _char_message(code, key=True), key)
                elif isinstance(key, int) and _too_long(key):
                    self.add(INTEGER_TOO_LARGE, _INT_MESSAGE, key)
                self.child(item, key, depth)
        elif isinstance(value, list | tuple):
            if depth > self.max_depth:
                self.add(TOO_DEEP, f"nesting is deeper than {self.max_depth} levels")
                return
            for index, item in enumerate(value):
                self.child(item, index, depth)

    def child(self, item: Any, last: str | int, depth: int) -> None:
        """Check one member of a container at ``depth``."""
        if isinstance(item, dict | list | tuple):
            self.path.append(last)
            self.walk(item, depth + 1)
            self.path.pop()
        else:
            self.scalar(item, last)


def _bad_text(text: str) -> bool:
    if text.isascii():
        return "\x00" in text
    return _BAD_CHAR.search(text) is not None


def _is_clean(value: dict[Any, Any] | list[Any] | tuple[Any, ...], depth: int, limit: int) -> bool:
    """True when a container holds nothing strict JSON refuses: the common case, checked
    without building pointers (about a third of what parsing the value took)."""
    if depth > limit:
        return False
    if isinstance(value, dict):
        if not _clean_keys(value):
            return False
        items: Any = value.values()
    else:
        items = value
    for item in items:
        kind = type(item)
        if kind is str:
            if _bad_text(item):
                return False
        elif kind is int:
            if item >= _INT_LIMIT or item <= -_INT_LIMIT:
                return False
        elif kind is bool or item is None:
            continue
        elif kind is float:
            if item - item != 0.0:  # NaN and ±inf (faster than math.isfinite)
                return False
        elif kind is dict or kind is list or kind is tuple:
            if not _is_clean(item, depth + 1, limit):
                return False
        elif not _is_clean_subclass(item, depth, limit):
            return False
    return True


def _clean_keys(value: dict[Any, Any]) -> bool:
    for key in value:
        if type(key) is str:
            if _bad_text(key):
                return False
        elif isinstance(key, int) and _too_long(key):  # a Python dict's (json.dumps: text)
            return False
    return True


def _is_clean_subclass(item: Any, depth: int, limit: int) -> bool:
    """:func:`_is_clean` for an item of a subclass of a JSON type (a StrEnum value) or of
    another type (left to the store's encoder)."""
    if isinstance(item, str):
        return not _bad_text(item)
    if isinstance(item, float):
        return math.isfinite(item)
    if isinstance(item, int):
        return not _too_long(item)
    if isinstance(item, dict | list | tuple):
        return _is_clean(item, depth + 1, limit)
    return True


def problems(
    value: Any,
    *,
    max_depth: int = MAX_DEPTH,
    prefix: str = "",
    limit: int = 20,
    ignore: Collection[str] = (),
) -> list[JsonProblem]:
    """Everything strict JSON refuses in an already-parsed ``value`` (at most ``limit``, in
    document order; pointers start with ``prefix``; codes in ``ignore`` are not reported).
    Types JSON does not have (sets, bytes) are not this function's business: the store's
    encoder refuses them."""
    if isinstance(value, dict | list | tuple) and _is_clean(value, 1, max_depth):
        return []
    scan = _Scan(max_depth, limit, prefix, ignore)
    try:
        if isinstance(value, dict | list | tuple):
            scan.walk(value, 1)
        else:
            scan.scalar(value, None)
    except _Enough:
        pass
    return scan.found


def check(value: Any, *, max_depth: int = MAX_DEPTH, prefix: str = "") -> None:
    """Raise :class:`JsonValueError` when ``value`` breaks the strict JSON rules."""
    found = problems(value, max_depth=max_depth, prefix=prefix)
    if found:
        raise JsonValueError(found)


def _too_deep_at(text: str, max_depth: int) -> JsonProblem:
    """Where a document too deep for the parser first goes deeper than ``max_depth`` (a
    token scan: the parser itself gave up with RecursionError)."""
    # One frame per open container: its kind and where in it we are (index or key).
    frames: list[list[Any]] = []
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            if len(frames) >= max_depth:
                path = [frame[1] for frame in frames]
                return JsonProblem(
                    pointer(path), f"nesting is deeper than {max_depth} levels", TOO_DEEP
                )
            frames.append([token, 0 if token == "[" else None])
        elif token in ("]", "}"):
            if not frames:
                break
            frames.pop()
        elif token == ",":
            if frames:
                frames[-1][1] = frames[-1][1] + 1 if frames[-1][0] == "[" else None
        elif token != ":" and frames and frames[-1][0] == "{" and frames[-1][1] is None:
            try:
                frames[-1][1] = json.loads(token)
            except ValueError:
                frames[-1][1] = token
    return JsonProblem("", f"nesting is deeper than {max_depth} levels", TOO_DEEP)


def _duplicate_at(text: str) -> JsonProblem:
    """Where the first object that names a key twice is, and the key (a token scan, only
    after the parser's hook refused a document that parses otherwise)."""
    # One frame per open container: [kind, index or key, keys seen, expecting a key].
    frames: list[list[Any]] = []
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            frames.append([token, 0 if token == "[" else None, set(), token == "{"])
        elif token in ("]", "}"):
            if not frames:
                break
            frames.pop()
        elif token == ",":
            if frames and frames[-1][0] == "[":
                frames[-1][1] += 1
            elif frames:
                frames[-1][3] = True
        elif token == ":":
            if frames:
                frames[-1][3] = False
        elif frames and frames[-1][0] == "{" and frames[-1][3]:
            key = json.loads(token)
            if key in frames[-1][2]:
                path = [frame[1] for frame in frames[:-1]]
                return JsonProblem(
                    pointer(path),
                    f"the object names the key {clean_text(key)!r} more than once "
                    "(ambiguous: each parser keeps a different one)",
                    DUPLICATE_KEY,
                )
            frames[-1][2].add(key)
            frames[-1][1] = key
    return JsonProblem("", "an object names a key more than once", DUPLICATE_KEY)


def _text(data: str | bytes | bytearray) -> str:
    if isinstance(data, str):
        return data
    # As json.loads does for bytes: UTF-8, -16 or -32, found from the first bytes. Not
    # decodable: UnicodeDecodeError, a ValueError like any other unreadable document.
    return bytes(data).decode(json.detect_encoding(data))


class _NonFinite(ValueError):
    """Raised by the parser hooks at the first non-finite number."""


def _refuse_constant(name: str) -> float:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # 1e999 and the like overflow to infinity
        raise _NonFinite(text)
    return value


def _int_or_limit(text: str) -> int:
    """An integer of at most :data:`MAX_INT_DIGITS` digits, or, for a longer one (which
    ``int`` refuses), the smallest too long integer of its sign: :func:`check` then finds it."""
    if len(text) - text.startswith("-") <= MAX_INT_DIGITS:
        return int(text)
    return -_INT_LIMIT if text.startswith("-") else _INT_LIMIT


class _Duplicate(ValueError):
    """Raised by the parser hook at the first object that names a key twice."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object from its members, refusing a key named twice (the parser's own dict
    would keep the last silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Duplicate
    return obj


#: One decoder, built once (``json.loads`` with hooks builds a new one per call).
_STRICT = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_finite_float, object_pairs_hook=_object
)
#: The decoder that finds where a too long integer is (only after :data:`_STRICT` failed on
#: one: a hook per integer would slow every parse).
_LOCATING = json.JSONDecoder(parse_int=_int_or_limit, object_pairs_hook=_object)


def _may_hold_bad_characters(text: str) -> bool:
    if "\\u" in text and _BAD_ESCAPE.search(text) is not None:
        return True
    # Raw: a str from a terminal may carry lone surrogates (surrogateescape); bytes from a
    # request cannot (they are decoded strictly).
    return not text.isascii() and _BAD_CHAR.search(text) is not None


def loads(data: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a JSON document strictly.

    Syntax errors raise :class:`json.JSONDecodeError` (undecodable bytes:
    :class:`UnicodeDecodeError`), as :func:`json.loads` does; a document that parses but
    breaks the rules of this module raises :class:`JsonValueError` with JSON pointers.
    Non-finite numbers are caught by the parser's hooks; the value is walked only when the
    text holds a suspicious escape or more brackets than ``max_depth``."""
    text = _text(data)
    try:
        value = _STRICT.decode(text)
    except _NonFinite:
        value = json.loads(text)  # again, to say where
        check(value, max_depth=max_depth)
        raise AssertionError("unreachable: the parser found a non-finite number") from None
    except RecursionError:
        raise JsonValueError([_too_deep_at(text, max_depth)]) from None
    except _Duplicate:
        raise JsonValueError([_duplicate_at(text)]) from None
    except json.JSONDecodeError:
        raise
    except ValueError:
        # Not a syntax error: ``int`` refused an integer of too many digits.
        _locate_long_integer(text, max_depth)
        raise
    if _may_hold_bad_characters(text) or (
        text.count("[") + text.count("{") > max_depth and _deeper_than(value, max_depth)
    ):
        check(value, max_depth=max_depth)
    return value


def _locate_long_integer(text: str, max_depth: int) -> None:
    """Raise :class:`JsonValueError` naming every problem of a document in which ``int``
    refused an integer (returns when it finds none)."""
    try:
        value = _LOCATING.decode(text)
    except RecursionError:
        raise JsonValueError([_too_deep_at(text, max_depth)]) from None
    except _Duplicate:
        raise JsonValueError([_duplicate_at(text)]) from None
    check(value, max_depth=max_depth)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether a parsed document (dicts and lists only) nests deeper than ``limit``: its
    containers are visited, its scalars only looked at."""
    stack = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > limit:
            return True
        items = container.values() if type(container) is dict else container
        for item in items:
            if type(item) is dict or type(item) is list:
                stack.append((item, depth + 1))
    return False


def clean_text(text: str) -> str:
    """``text`` with lone surrogates and U+0000 replaced by U+FFFD (a surrogate pair, which a
    Python string can hold as two code points, becomes the character it encodes)."""
    if _char_problem(text) is None:
        return text
    joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return joined.replace("\x00", REPLACEMENT)


def repair(value: Any, *, max_depth: int = MAX_DEPTH) -> Any:
    """A copy of ``value`` that :func:`check` accepts: lone surrogates and U+0000 become
    U+FFFD (in keys too; keys that become equal keep the last value), non-finite numbers
    and integers of more than :data:`MAX_INT_DIGITS` digits become null, a container nested
    deeper than ``max_depth`` becomes :func:`truncated_marker`. Tuples become lists; other
    types are kept as they are."""
    return _repair(value, 1, max_depth)


def _repair(value: Any, depth: int, max_depth: int) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and _too_long(value):
        return None
    if isinstance(value, dict):
        if depth > max_depth:
            return truncated_marker(max_depth)
        return {_repair_key(k): _repair(v, depth + 1, max_depth) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if depth > max_depth:
            return truncated_marker(max_depth)
        return [_repair(v, depth + 1, max_depth) for v in value]
    return value


def _repair_key(key: Any) -> Any:
    if isinstance(key, str):
        return clean_text(key)
    return None if isinstance(key, int) and _too_long(key) else key


def _replace_lone_escape(match: re.Match[str]) -> str:
    return "\\ufffd" if match.group(1) else match.group()


def _cut_deep(text: str, max_depth: int) -> str:
    """``text`` with every container nested deeper than ``max_depth`` replaced by
    :func:`truncated_marker` (as a JSON string), so that parsing it never recurses deeper
    than ``max_depth``: the parser's recursion counts on top of the caller's stack (an
    async driver's greenlet is already deep), so a 900-level row can fail to parse at all."""
    marker = json.dumps(truncated_marker(max_depth))
    pieces: list[str] = []
    depth, kept, cut_from = 0, 0, -1
    for match in _NESTING.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth == max_depth + 1:
                cut_from = match.start()
        elif token in ("]", "}"):
            if depth == max_depth + 1:
                pieces += [text[kept:cut_from], marker]
                kept = match.end()
            depth -= 1
    pieces.append(text[kept:])
    return "".join(pieces)


def loads_stored(text: str | bytes) -> Any:
    """The store's JSON deserializer: a stored value, repaired if an older version stored
    what cannot be served (see the module docstring).

    Fast path: jiter (pydantic-core's parser, as fast as :func:`json.loads` or faster,
    checked to give identical values) refuses NaN/Infinity tokens, lone surrogate escapes
    and nesting deeper than :data:`STORED_MAX_DEPTH` by itself, so a good row costs one
    parse and nothing else. Only a refused row takes the slow path: lone surrogate escapes
    are rewritten in the text, containers deeper than :data:`STORED_MAX_DEPTH` cut from it,
    and NaN/Infinity read as null."""
    try:
        return pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError:
        pass
    if isinstance(text, bytes):
        text = text.decode()
    if "\\u" in text:
        text = _SURROGATE_ESCAPE.sub(_replace_lone_escape, text)
    if text.count("[") + text.count("{") > STORED_MAX_DEPTH:
        text = _cut_deep(text, STORED_MAX_DEPTH)
    try:
        value = json.loads(text, parse_constant=lambda _: None)
    except RecursionError:  # only with a caller already ~800 frames deep
        return truncated_marker(STORED_MAX_DEPTH)
    if isinstance(value, dict | list) and problems(value, max_depth=STORED_MAX_DEPTH, limit=1):
        value = repair(value, max_depth=STORED_MAX_DEPTH)
    return value
