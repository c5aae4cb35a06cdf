"""Strict JSON (flowyard.domain.jsonvalue): what is refused, where, and how stored values are
read back repaired."""

from __future__ import annotations

import json
import math
from typing import Any

import pydantic_core
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowyard.domain import jsonvalue
from flowyard.domain.jsonvalue import (
    MAX_DEPTH,
    STORED_MAX_DEPTH,
    JsonValueError,
    check,
    clean_text,
    loads,
    loads_stored,
    problems,
    repair,
    truncated_marker,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def refused(text: str | bytes) -> list[tuple[str, str]]:
    with pytest.raises(JsonValueError) as caught:
        loads(text)
    return [(p.pointer, p.code) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": "x\\ud800"}', [("/a", "lone_surrogate")]),
        ('{"a": "\\udfff"}', [("/a", "lone_surrogate")]),
        ('{"a": ["\\ud83d"]}', [("/a/0", "lone_surrogate")]),
        ('{"k\\ud800": 1}', [("/k\ufffd", "lone_surrogate")]),
        ('{"a/b~": "\\u0000"}', [("/a~1b~0", "nul_character")]),
        ('{"a": NaN}', [("/a", "non_finite_number")]),
        (
            '{"a": [Infinity, -Infinity]}',
            [("/a/0", "non_finite_number"), ("/a/1", "non_finite_number")],
        ),
        ('{"a": 1e999}', [("/a", "non_finite_number")]),
        ('{"a": -1E+400}', [("/a", "non_finite_number")]),
        ("[1" + "0" * 400 + ".5]", [("/0", "non_finite_number")]),
        ("NaN", [("", "non_finite_number")]),
        ('"\\ud800"', [("", "lone_surrogate")]),
        ('{"a": [1, 1' + "0" * 4300 + "]}", [("/a/1", "integer_too_large")]),
        ('{"a": -1' + "0" * 4300 + "}", [("/a", "integer_too_large")]),
        ("9" * 4301, [("", "integer_too_large")]),
        ('{"a": [{"k": 1}, {"k": 1, "k": 2}]}', [("/a/1", "duplicate_key")]),
        ('{"a": 1, "b": {"a": 2}, "a": 3}', [("", "duplicate_key")]),
        ('{"a~/": {"k,:": "x", "v": ["k,:"], "k,:": 1}}', [("/a~0~1", "duplicate_key")]),
        ('{"a": [1' + "0" * 4300 + '], "b": {"c": 1, "c": 1}}', [("/b", "duplicate_key")]),
    ],
)
def test_refusals_name_the_place(text: str, expected: list[tuple[str, str]]) -> None:
    assert refused(text) == expected
    assert refused(text.encode()) == expected


def test_a_duplicate_key_is_named() -> None:
    """The audit's example: two ids in one node would mean whichever a parser keeps."""
    with pytest.raises(JsonValueError) as caught:
        loads('{"node": {"id": "s1", "id": "t1"}}')
    [problem] = caught.value.problems
    assert (problem.pointer, problem.code) == ("/node", "duplicate_key")
    assert "'id'" in problem.message
    assert loads('{"a": {"id": 1}, "b": {"id": 1}}') == {"a": {"id": 1}, "b": {"id": 1}}


def test_integers_up_to_python_s_conversion_limit_are_kept() -> None:
    """Python refuses to convert an integer of more than 4,300 digits to or from text
    (``sys.get_int_max_str_digits``), so nothing could serialise it: refused, with its
    place; one of 4,300 digits is kept."""
    assert loads("[" + "9" * 4300 + "]") == [10**4300 - 1]
    assert loads("-" + "9" * 4300) == -(10**4300) + 1
    check({"a": [10**4300 - 1, -(10**4300) + 1]})
    found = problems({"a": [1, 10**4300], "b": -(10**5000)})
    assert [(p.pointer, p.code) for p in found] == [
        ("/a/1", "integer_too_large"),
        ("/b", "integer_too_large"),
    ]
    assert "4300 digits" in found[0].message
    assert problems(10**4300)[0].code == "integer_too_large"
    assert repair({"a": [10**4300, 1]}) == {"a": [None, 1]}
    # A Python integer key (json.dumps writes it as text) of that size, with a second problem.
    [key, nul] = problems({10**4300: "\x00"})
    assert (key.pointer, key.code) == ("/[integer of more than 4300 digits]", "integer_too_large")
    assert nul.code == "nul_character"
    assert repair({10**4300: 1}) == {None: 1}


def test_depth_limit() -> None:
    assert loads(json.dumps(nested(MAX_DEPTH))) == nested(MAX_DEPTH)
    [(pointer, code)] = refused(json.dumps({"a": nested(MAX_DEPTH)}))
    assert code == "too_deep"
    assert pointer == "/a" + "/0" * (MAX_DEPTH - 1)  # the 65th container


def test_a_document_too_deep_for_the_parser_is_refused_with_a_pointer() -> None:
    text = '{"a": [0, {"b": ' + "[" * 5000 + "]" * 5000 + "}]}"
    [(pointer, code)] = refused(text)
    assert code == "too_deep"
    assert pointer == "/a/1/b" + "/0" * (MAX_DEPTH - 3)  # b is at depth 4


def test_what_strict_json_keeps() -> None:
    text = '{"emoji": "\\ud83d\\ude00", "s": "\\\\ud800", "big": 1e308, "tiny": 1e-999, "n": 10}'
    assert loads(text) == {
        "emoji": "\U0001f600",
        "s": "\\ud800",
        "big": 1e308,
        "tiny": 0.0,
        "n": 10,
    }


def test_syntax_errors_stay_syntax_errors() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads('{"a": ')
    with pytest.raises(UnicodeDecodeError):
        loads(b'{"a": "\xff"}')
    assert loads(b"\xef\xbb\xbf[1]") == [1]  # a UTF-8 byte order mark, as json.loads allows


def test_check_of_python_values() -> None:
    check({"a": [1, "x", 2.5, None, True]})
    with pytest.raises(JsonValueError, match=r"^NaN is not a JSON number .* at /a/0$"):
        check({"a": (math.nan,)})
    found = problems({"a": "\ud800", "b": math.inf, "c": "\x00"}, prefix="/input")
    assert [(p.pointer, p.code) for p in found] == [
        ("/input/a", "lone_surrogate"),
        ("/input/b", "non_finite_number"),
        ("/input/c", "nul_character"),
    ]
    assert problems("\ud800", prefix="/input")[0].pointer == "/input"
    assert problems({"a": "\ud800"}, ignore=jsonvalue.CHARACTER_PROBLEMS) == []


def test_repair() -> None:
    value = {"k\ud800": ["\ud83d\ude00", "a\x00", math.nan, (math.inf,)], "d": nested(10)}
    fixed = repair(value, max_depth=5)
    assert fixed == {
        "k\ufffd": ["\U0001f600", "a\ufffd", None, [None]],
        "d": nested(4, truncated_marker(5)),  # the lists at depths 2 to 5
    }
    check(fixed, max_depth=5)
    assert clean_text("plain") == "plain"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"s": "a\\ud800b"}', {"s": "a\ufffdb"}),
        ('{"s": "\\udc00\\ud800"}', {"s": "\ufffd\ufffd"}),  # low then high: not a pair
        ('{"s": "\\\\ud800"}', {"s": "\\ud800"}),  # an escaped backslash
        ('{"s": "\\\\\\ud800"}', {"s": "\\\ufffd"}),  # a backslash, then an escape
        ('{"\\ud800": NaN, "i": [Infinity, -Infinity]}', {"\ufffd": None, "i": [None, None]}),
        ('{"ok": "\\ud83d\\ude00"}', {"ok": "\U0001f600"}),
    ],
)
def test_stored_values_are_read_repaired(text: str, expected: Any) -> None:
    assert loads_stored(text) == expected


def test_stored_values_are_cut_at_the_stored_depth() -> None:
    assert loads_stored(json.dumps(nested(STORED_MAX_DEPTH))) == nested(STORED_MAX_DEPTH)
    cut = loads_stored(json.dumps(nested(900)))
    assert cut == nested(STORED_MAX_DEPTH, truncated_marker(STORED_MAX_DEPTH))
    deepest = loads_stored("[" * 100_000 + "]" * 100_000)
    assert deepest == nested(STORED_MAX_DEPTH, truncated_marker(STORED_MAX_DEPTH))


def test_deep_rows_are_cut_before_parsing() -> None:
    """The parser recurses on top of its caller's stack (an async driver's greenlet is deep
    already): a 900-level row read from 600 frames down still comes back cut, not lost."""

    text = "[" * 900 + "]" * 900

    def from_depth(frames: int) -> Any:
        return loads_stored(text) if frames == 0 else from_depth(frames - 1)

    cut = nested(STORED_MAX_DEPTH - 1, [truncated_marker(STORED_MAX_DEPTH)])
    assert from_depth(600) == cut


def test_the_fast_path_parser_refuses_what_the_slow_path_repairs() -> None:
    """loads_stored relies on jiter refusing these by itself (no walk of good rows): if a
    pydantic-core upgrade changes that, this test says so."""
    pydantic_core.from_json(json.dumps(nested(STORED_MAX_DEPTH)))
    for text in (json.dumps(nested(STORED_MAX_DEPTH + 1)), '["\\ud800"]', '["\\udc00"]', "[NaN]"):
        with pytest.raises(ValueError):
            pydantic_core.from_json(text, allow_inf_nan=False)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_good_values_round_trip(value: Any) -> None:
    text = json.dumps(value)  # what the store writes
    assert loads_stored(text) == value
    assume_clean = not problems(value)
    if assume_clean:
        assert loads(text) == value


any_values = st.recursive(
    st.none() | st.floats() | st.text() | st.integers(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(any_values, st.integers(min_value=1, max_value=6))
def test_repair_makes_any_value_acceptable(value: Any, depth: int) -> None:
    fixed = repair(value, max_depth=depth)
    check(fixed, max_depth=depth)
    text = json.dumps(fixed, allow_nan=False, ensure_ascii=False)
    text.encode()  # servable: UTF-8 encodable
    stored = loads_stored(json.dumps(value))
    json.dumps(stored, allow_nan=False, ensure_ascii=False).encode()
    found = problems(value, limit=1000, max_depth=1000)
    if all(p.code != "nul_character" for p in found):  # kept on reads: it is servable
        assert stored == repair(value, max_depth=STORED_MAX_DEPTH)
