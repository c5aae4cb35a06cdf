"""Tests for the sandboxed expression engine (flowyard.expressions)."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowyard.expressions import ExpressionEngine, ExpressionError, ExpressionLimits


def make_scope() -> dict[str, Any]:
    """A typical workflow evaluation scope made of plain JSON values."""
    return {
        "input": {
            "region": "East Coast",
            "message": "I would like a refund please",
            "name": "Ada",
            "count": 4,
            "tags": ["vip", "new"],
            "items": [3, 1, 2],
            "nothing": None,
        },
        "vars": {"base_url": "https://api.example.com", "retries": 3},
        "steps": {
            "create_account": {"output": {"id": 7, "plan": {"name": "pro"}}, "error": None},
            "failed": {"output": None, "error": {"message": "boom"}},
        },
        "run": {"id": "run-1"},
    }


@pytest.fixture
def engine() -> ExpressionEngine:
    return ExpressionEngine()


@pytest.fixture
def scope() -> dict[str, Any]:
    return make_scope()


def raises_kind(kind: str, func: Callable[..., Any], *args: Any) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        func(*args)
    assert info.value.kind == kind, str(info.value)
    return info.value


# -- conditions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('input.region == "East Coast"', True),
        ('input.region == "West Coast"', False),
        ('"refund" in input.message', True),
        ('"cancel" in input.message', False),
        ('"vip" in input.tags and input.count >= 4', True),
        ("steps.create_account.output.id > 3", True),
        ("steps.create_account.output.id > 30", False),
        ('steps.create_account.output.plan.name == "pro"', True),
        ("steps.failed.error is not none", True),
        ("steps.create_account.error", False),
        ("input.nothing", False),
        ("input.missing is defined", False),
        ('input["region"] | lower == "east coast"', True),
        ("vars.retries * 2 == 6", True),
        ("run.id", True),
    ],
)
def test_condition_truthiness(
    engine: ExpressionEngine, scope: dict[str, Any], source: str, expected: bool
) -> None:
    engine.check_condition(source)
    result = engine.test(source, scope)
    assert result is expected


def test_evaluate_returns_native_values(engine: ExpressionEngine, scope: dict[str, Any]) -> None:
    assert engine.evaluate("steps.create_account.output.id + 1", scope) == 8
    assert engine.evaluate("input.tags", scope) == ["vip", "new"]
    assert engine.evaluate('{"id": steps.create_account.output.id}', scope) == {"id": 7}
    assert engine.evaluate("input.nothing", scope) is None
    assert engine.evaluate('input.missing | default("fallback")', scope) == "fallback"
    # tojson returns Markup; callers must get a plain str back.
    assert type(engine.evaluate("input.tags | tojson", scope)) is str


def test_mapping_keys_win_over_dict_methods(
    engine: ExpressionEngine, scope: dict[str, Any]
) -> None:
    # JSON data with a key named like a dict method must return the data.
    assert engine.evaluate("input.items", scope) == [3, 1, 2]
    assert engine.evaluate("input.items | sort | first", scope) == 1


# -- undefined names --------------------------------------------------------


def test_missing_key_raises_undefined_naming_the_key(
    engine: ExpressionEngine, scope: dict[str, Any]
) -> None:
    error = raises_kind("undefined", engine.test, 'input.regoin == "East Coast"', scope)
    assert "regoin" in error.message
    assert error.source == 'input.regoin == "East Coast"'


def test_missing_root_name_raises_undefined(
    engine: ExpressionEngine, scope: dict[str, Any]
) -> None:
    engine.check_condition("inptu.region")  # unknown roots are fine at compile time
    error = raises_kind("undefined", engine.evaluate, "inptu.region", scope)
    assert "inptu" in error.message


def test_undefined_is_not_silently_false(engine: ExpressionEngine, scope: dict[str, Any]) -> None:
    raises_kind("undefined", engine.test, "input.nope", scope)
    raises_kind("undefined", engine.test, "not input.nope", scope)


def test_undefined_nested_in_native_result_raises(
    engine: ExpressionEngine, scope: dict[str, Any]
) -> None:
    error = raises_kind("undefined", engine.evaluate, "[1, {'a': input.nope}]", scope)
    assert "nope" in error.message
    raises_kind("undefined", engine.render, "{{ input.nope }}", scope)
    raises_kind("undefined", engine.render, "Hi {{ input.nope }}!", scope)


# -- templates --------------------------------------------------------------


def test_string_interpolation(engine: ExpressionEngine, scope: dict[str, Any]) -> None:
    assert engine.render("Hello {{ input.name }}", scope) == "Hello Ada"
    assert engine.render("{{ vars.base_url }}/leads", scope) == "https://api.example.com/leads"
    assert engine.render("{{ input.count }}{{ input.count }}", scope) == "44"
    assert engine.render("{% for t in input.tags %}{{ t }};{% endfor %}", scope) == "vip;new;"
    assert engine.render("line\n{{ input.name }}\n", scope) == "line\nAda\n"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ input.count }}", 4),
        ("  {{ input.count }}\n", 4),
        ("{{- input.count -}}", 4),
        ("{{ input.tags }}", ["vip", "new"]),
        ("{{ steps.create_account.output }}", {"id": 7, "plan": {"name": "pro"}}),
        ("{{ input.nothing }}", None),
        ("{{ input.count > 3 }}", True),
        ('{{ "42" }}', "42"),
        ("{# note #}{{ input.count }}", 4),
    ],
)
def test_single_expression_template_renders_native(
    engine: ExpressionEngine, scope: dict[str, Any], source: str, expected: Any
) -> None:
    result = engine.render(source, scope)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x{{ input.count }}", "x4"),
        ("{{ input.count }} items", "4 items"),
        ("{% if true %}{{ input.count }}{% endif %}", "4"),
        ("{% raw %}{{ input.count }}{% endraw %}", "{{ input.count }}"),
        ("{% set result = 5 %}", ""),
    ],
)
def test_mixed_templates_render_to_str(
    engine: ExpressionEngine, scope: dict[str, Any], source: str, expected: str
) -> None:
    assert engine.render(source, scope) == expected


def test_plain_string_fast_path_skips_compilation(engine: ExpressionEngine) -> None:
    text = "no templates here {# not a comment either"
    assert engine.render(text, {}) is text
    assert engine.cache_info() == (0, 0, 0)


def test_loops_and_blocks_still_work_under_guards(
    engine: ExpressionEngine, scope: dict[str, Any]
) -> None:
    source = (
        "{% for x in input.items %}{{ loop.index }}/{{ loop.length }} {% endfor %}"
        "{% set ns = namespace(total=0) %}{% for x in input.items %}"
        "{% set ns.total = ns.total + x %}{% endfor %}{{ ns.total }}"
        "{% set captured | upper %}{{ input.name ~ '!' }}{% endset %} {{ captured }}"
        "{% for _ in range(2) %}.{% else %}empty{% endfor %}"
    )
    assert engine.render(source, scope) == "1/3 2/3 3/3 6 ADA!.."


# -- errors -----------------------------------------------------------------


def test_syntax_error_kind_and_line(engine: ExpressionEngine) -> None:
    error = raises_kind("syntax", engine.check_template, "first line\n{{ input.name + }}")
    assert error.line == 2
    raises_kind("syntax", engine.check_condition, "input.region ==")
    raises_kind("syntax", engine.check_condition, "input.region = 'x'")
    raises_kind("syntax", engine.evaluate, "(", {})
    raises_kind("syntax", engine.render, "{% if x %}unterminated", {})
    raises_kind("syntax", engine.check_template, "{{ x | no_such_filter }}")


@pytest.mark.parametrize(
    ("source", "kind", "fragment"),
    [
        ("1 / 0", "runtime", "ZeroDivisionError"),
        ('"a" + 1', "type", "concatenate"),
        ("input.name(1)", "type", "not callable"),
        ("input.tags[10]", "undefined", ""),
    ],
)
def test_runtime_errors_are_wrapped(
    engine: ExpressionEngine, scope: dict[str, Any], source: str, kind: str, fragment: str
) -> None:
    error = raises_kind(kind, engine.evaluate, source, scope)
    assert fragment in error.message


def test_non_string_source_and_bad_scope_are_type_errors(engine: ExpressionEngine) -> None:
    bad: Any = 42
    raises_kind("type", engine.check_condition, bad)
    raises_kind("type", engine.check_template, bad)
    raises_kind("type", engine.evaluate, bad, {})
    raises_kind("type", engine.test, bad, {})
    raises_kind("type", engine.render, bad, {})
    raises_kind("type", engine.evaluate, "1", ["not", "a", "mapping"])


def test_expression_error_pickles(engine: ExpressionEngine) -> None:
    error = raises_kind("runtime", engine.evaluate, "1 / 0", {})
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.message, clone.source, clone.kind, clone.line) == (
        error.message,
        "1 / 0",
        "runtime",
        error.line,
    )


# -- static security check --------------------------------------------------

ESCAPES = [
    "().__class__.__mro__",
    "x.__class__",
    'x["__class__"]',
    "lipsum.__globals__",
    "cycler.__init__.__globals__",
    "input._private",
    "_hidden",
    'x | attr("__class__")',
    'x | attr("_secret")',
    'x | map(attribute="__class__") | list',
    'x | map("attr", "__dict__") | list',
    'x | selectattr("a.__class__")',
    "x | _flowyard_size_guard",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_refused_at_compile_time(engine: ExpressionEngine, source: str) -> None:
    raises_kind("security", engine.check_condition, source)
    raises_kind("security", engine.check_template, "{{ " + source + " }}")
    raises_kind("security", engine.check_template, "text {{ " + source + " }}")
    raises_kind("security", engine.evaluate, source, {"x": (), "input": {}})


def test_security_message_names_the_attribute(engine: ExpressionEngine) -> None:
    error = raises_kind("security", engine.check_condition, "().__class__")
    assert error.message == "access to '__class__' is not allowed"


@pytest.mark.parametrize(
    "source",
    [
        '{% import "x.html" as x %}',
        '{% from "x.html" import y %}',
        '{% include "x.html" %}',
        '{% extends "x.html" %}',
        "{% macro m() %}{% endmacro %}",
        "{% call m() %}{% endcall %}",
        "{% set ns = namespace() %}{% set ns._x = 1 %}",
        "{% set _x = 1 %}",
    ],
)
def test_forbidden_tags_and_private_names_refused(engine: ExpressionEngine, source: str) -> None:
    raises_kind("security", engine.check_template, source)


def test_removed_globals_and_filters_are_unavailable(engine: ExpressionEngine) -> None:
    for name in ("lipsum", "cycler", "joiner"):
        raises_kind("undefined", engine.evaluate, f"{name}()", {})
    raises_kind("syntax", engine.check_condition, "[1, 2] | random")


class Secretive:
    """Scope object whose private attribute must stay unreachable."""

    def __init__(self) -> None:
        self.visible = "ok"
        self._secret = "hunter2"


@pytest.mark.parametrize(
    "source",
    [
        "obj | attr(name)",
        "obj[name]",
        'obj | attr("_" ~ "secret")',
        '"{0._secret}".format(obj)',
        'obj["_" ~ "_class__"]',
        "[obj] | map(attribute=name) | list",
        "tags.append(1)",
    ],
)
def test_runtime_sandbox_fence(engine: ExpressionEngine, source: str) -> None:
    scope = {"obj": Secretive(), "name": "_secret", "tags": []}
    engine.check_condition(source)  # dynamic names cannot be caught statically
    error = raises_kind("security", engine.evaluate, source, scope)
    assert "hunter2" not in str(error)
    assert engine.evaluate("obj.visible", scope) == "ok"
    assert engine.evaluate('obj | attr("visible")', scope) == "ok"


# -- compile cache ----------------------------------------------------------


def test_compiled_sources_are_cached(engine: ExpressionEngine, scope: dict[str, Any]) -> None:
    for _ in range(5):
        assert engine.test("input.count > 3", scope)
        assert engine.render("Hi {{ input.name }}", scope) == "Hi Ada"
    hits, misses, size = engine.cache_info()
    assert (hits, misses, size) == (8, 2, 2)
    # Same text as a condition and as a template are different compilations.
    engine.check_template("input.count > 3")
    assert engine.cache_info().misses == 3


def test_cache_is_bounded_lru() -> None:
    engine = ExpressionEngine(ExpressionLimits(cache_size=2))
    engine.check_condition("a")
    engine.check_condition("b")
    engine.check_condition("a")  # refresh "a"
    engine.check_condition("c")  # evicts "b"
    assert engine.cache_info() == (1, 3, 2)
    engine.check_condition("a")
    assert engine.cache_info().hits == 2
    engine.check_condition("b")
    assert engine.cache_info().misses == 4


def test_compile_errors_are_cached_and_fresh(engine: ExpressionEngine) -> None:
    first = raises_kind("security", engine.check_condition, "x.__class__")
    second = raises_kind("security", engine.check_condition, "x.__class__")
    assert first is not second
    assert first.message == second.message
    assert engine.cache_info() == (1, 1, 1)


def test_caches_are_per_instance() -> None:
    first, second = ExpressionEngine(), ExpressionEngine()
    first.check_condition("a")
    assert second.cache_info() == (0, 0, 0)


# -- resource limits --------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        '"a" * 10**9',
        "[1] * 10**9",
        "10 ** (10 ** 10)",
        "(10 ** 10) ** (10 ** 10)",
        "2 ** 1000000",
        "(2 ** 60000) * (2 ** 60000)",
        "range(10**9) | list",
        "range(20000)",
        '"x".center(10**9)',
        '"x" | center(1000000000)',
        '"%999999999d" % 1',
        '"{:>999999999}".format(1)',
        '"ab".replace("", "x" * 999999)',
        '"x" | indent(10**9)',
    ],
)
def test_expensive_expressions_hit_limits_fast(engine: ExpressionEngine, source: str) -> None:
    started = time.monotonic()
    raises_kind("limit", engine.evaluate, source, {})
    assert time.monotonic() - started < 1.0


def test_nested_range_loop_with_output_stops_fast(engine: ExpressionEngine) -> None:
    source = "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}"
    started = time.monotonic()
    raises_kind("limit", engine.render, source, {})
    assert time.monotonic() - started < 2.0


def test_silent_nested_loop_hits_deadline() -> None:
    engine = ExpressionEngine(ExpressionLimits(timeout_s=0.2))
    source = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    error = raises_kind("limit", engine.render, source, {})
    assert "time limit" in error.message
    assert time.monotonic() - started < 1.5


def test_doubling_string_in_loop_hits_size_limit(engine: ExpressionEngine) -> None:
    source = (
        '{% set ns = namespace(s="ab") %}{% for i in range(64) %}'
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}"
    )
    raises_kind("limit", engine.render, source, {})
    captured = '{% set x %}{% for i in range(10000) %}{{ "y" * 500 }}{% endfor %}{% endset %}'
    raises_kind("limit", engine.render, captured, {})


def test_limits_are_configurable() -> None:
    engine = ExpressionEngine(ExpressionLimits(max_output_chars=10, max_range=5))
    assert engine.evaluate("range(5) | list", {}) == [0, 1, 2, 3, 4]
    raises_kind("limit", engine.evaluate, "range(6)", {})
    raises_kind("limit", engine.render, "{{ 'a' }}" * 11, {})
    assert engine.render("{{ 'a' }}" * 10, {}) == "a" * 10
    with pytest.raises(ValueError):
        ExpressionLimits(timeout_s=0)


def test_engine_recovers_after_limit(engine: ExpressionEngine, scope: dict[str, Any]) -> None:
    raises_kind("limit", engine.evaluate, '"a" * 10**9', {})
    assert engine.test("input.count == 4", scope)


# -- render_value / find_templates -----------------------------------------


def test_render_value_walks_nested_structures(
    engine: ExpressionEngine, scope: dict[str, Any]
) -> None:
    plain = "untouched"
    value = {
        "url": "{{ vars.base_url }}/leads",
        "id": "{{ steps.create_account.output.id }}",
        "{{ input.name }}": ["{{ input.tags }}", ("x {{ input.count }}", 5)],
        "plain": plain,
        "n": 1.5,
        "none": None,
    }
    rendered = engine.render_value(value, scope)
    assert rendered == {
        "url": "https://api.example.com/leads",
        "id": 7,
        "Ada": [["vip", "new"], ("x 4", 5)],
        "plain": "untouched",
        "n": 1.5,
        "none": None,
    }
    assert rendered["plain"] is plain


def test_render_value_rejects_unhashable_keys(
    engine: ExpressionEngine, scope: dict[str, Any]
) -> None:
    raises_kind("type", engine.render_value, {"{{ input.tags }}": 1}, scope)


def test_is_template() -> None:
    assert ExpressionEngine.is_template("a {{ b }}")
    assert ExpressionEngine.is_template("{% if x %}{% endif %}")
    assert not ExpressionEngine.is_template("a { b } {# c #}")


def test_find_templates_reports_escaped_pointers(engine: ExpressionEngine) -> None:
    value = {
        "a/b": {"c~d": ["plain", "{{ x }}"]},
        "{{ key }}": "v",
        "ok": ["{% if y %}z{% endif %}", 3, None],
    }
    assert engine.find_templates(value) == [
        ("/a~1b/c~0d/1", "{{ x }}"),
        ("/{{ key }}", "{{ key }}"),
        ("/ok/0", "{% if y %}z{% endif %}"),
    ]
    assert engine.find_templates("{{ x }}") == [("", "{{ x }}")]
    assert engine.find_templates(["{{ x }}"], "/steps/0") == [("/steps/0/0", "{{ x }}")]
    assert engine.find_templates({"a": 1}) == []


# -- properties -------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(exclude_characters="{")))
def test_render_without_braces_is_identity(text: str) -> None:
    assert ExpressionEngine().render(text, {}) == text


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.characters(exclude_characters="{\r")),
    st.text(alphabet=st.characters(exclude_characters="{\r")),
)
def test_interpolation_preserves_surrounding_text(prefix: str, suffix: str) -> None:
    rendered = ExpressionEngine().render(prefix + "{{ n }}" + suffix, {"n": 7})
    if (prefix + suffix).strip():
        assert rendered == f"{prefix}7{suffix}"
    else:
        assert rendered == 7


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="{}%#()[]._'\"|~+-*/ abcx019\n"))
def test_arbitrary_sources_only_raise_expression_errors(source: str) -> None:
    engine = ExpressionEngine(ExpressionLimits(timeout_s=0.5))
    for run in (engine.render, engine.evaluate):
        try:
            run(source, {"x": [1, 2], "a": {"b": "c"}})
        except ExpressionError as error:
            assert error.kind in {"syntax", "security", "undefined", "type", "limit", "runtime"}
