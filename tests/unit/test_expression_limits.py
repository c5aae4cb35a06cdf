"""The expression budget enforced while an evaluation runs: deep sizes of every produced value
and of the result, serialisers sized before they build, the total of one evaluation, the
operation count, and bounded compilation (no constant folding, a token limit, a deadline).

Sizes are asserted, not times (a time bound here is only a generous "well under the budget"):
``tracemalloc`` shows what an evaluation built before it was refused."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from flowyard.expressions import ExpressionEngine, ExpressionError, ExpressionLimits
from flowyard.expressions.errors import CompileBudgetExceeded
from flowyard.expressions.meter import Meter
from support.memory import peak_memory

MB = 1024 * 1024


@pytest.fixture
def engine() -> ExpressionEngine:
    return ExpressionEngine()


def refused(func: Callable[..., Any], *args: Any, **kwargs: Any) -> ExpressionError:
    """The limit error ``func`` raises (and fails if it returns or raises another kind)."""
    with pytest.raises(ExpressionError) as info:
        func(*args, **kwargs)
    assert info.value.kind == "limit", str(info.value)
    return info.value


# -- the expressions of the issue ----------------------------------------------------------

ISSUE_EXPRESSIONS = [
    "{{ ([[0]*1000000]*20)|tojson|length }}",  # blocked an event loop for 3.9 s
    "{{ [[0]*1000000]*10 }}",  # succeeded: a 20 MB run row
    "{{ ([[0]*1000000]*300)|tojson }}",  # ran 67 s and built 900 MB
]


@pytest.mark.parametrize("source", ISSUE_EXPRESSIONS)
def test_issue_expressions_end_with_limit_building_little(
    engine: ExpressionEngine, source: str
) -> None:
    engine.check_template(source)  # compiled first: only the evaluation is measured
    started = time.monotonic()
    with peak_memory() as peak:
        refused(engine.render, source, {})
    assert peak[0] < 32 * MB
    assert time.monotonic() - started < engine.limits.timeout_s  # generous


def test_nested_containers_count_their_contents(engine: ExpressionEngine) -> None:
    # Each inner list is within the limit; twenty references to it are not.
    error = refused(engine.evaluate, "[[0] * 100000] * 20", {})
    assert "above the limit" in error.message
    # The result is measured deep too, also when no operator built it.
    refused(engine.evaluate, "{'a': 'x' * 600000, 'b': 'y' * 600000}", {})
    refused(engine.render, "{{ [input.text, input.text] }}", {"input": {"text": "z" * 600_000}})
    assert engine.evaluate("[[0] * 1000] * 400", {}) == [[0] * 1000] * 400


def test_shared_references_are_sized_once() -> None:
    """``[x] * n`` costs O(unique objects): the size of ``x`` is remembered."""
    meter = Meter(ExpressionLimits(max_output_chars=10**12, timeout_s=30))
    inner = list(range(1000))
    size_inner = meter.size_of(inner)[0]
    started = time.monotonic()
    value = [[inner] * 1000] * 1000  # a million references
    assert meter.size_of(value)[0] == 1000 * (1000 * (size_inner + 1) + 1)
    # Walking the million references one by one takes seconds; with the memo, milliseconds.
    assert time.monotonic() - started < 1.0


def test_sizes_approximate_compact_json() -> None:
    meter = Meter(ExpressionLimits())
    assert meter.size_of("abc")[0] == 3
    assert meter.size_of([1, 22, "abc"])[0] == 2 + 3 + 4  # 1,22,abc plus separators
    assert meter.size_of({"ab": None})[0] == 2 + 4 + 2
    assert meter.size_of([[]] * 3)[0] == 3
    assert meter.size_of(["x" * 10] * 100)[0] == 1100  # the flat pass agrees
    assert meter.size_of([7, -123456789012])[0] == 2 + 14
    # Long runs of flat numbers are estimated in C-level passes, never low.
    numbers = list(range(100_000))
    exact = sum(len(str(i)) + 1 for i in numbers)
    assert exact <= meter.size_of(numbers)[0] <= exact * 1.25


def test_scope_values_are_not_sized_by_lookups(engine: ExpressionEngine) -> None:
    """Operations that only look into a large input stay allowed (and cheap): the input is
    above the size limit, but nothing new of that size is built."""
    big = ["abcdefgh"] * 300_000  # about 2.7 million characters
    scope = {"input": {"big": big, "d": {f"k{i}": i for i in range(200_000)}}}
    assert engine.evaluate("input.big | length", scope) == 300_000
    assert engine.evaluate("input.big | first", scope) == "abcdefgh"
    assert engine.evaluate("input.big[5] ~ input.big | last", scope) == "abcdefghabcdefgh"
    assert engine.evaluate("input.big == input.big", scope) is True
    assert engine.evaluate("input.big | max", scope) == "abcdefgh"
    assert engine.evaluate("input.d.k7 + input.d.get('k8')", scope) == 15
    source = "{% for k, v in input.d.items() %}{% if v == 3 %}{{ k }}{% endif %}{% endfor %}"
    assert engine.render(source, scope) == "k3"


BIG_SCOPE = {
    # About 8 million characters each once serialised: what the old checks built first.
    "big": ["x" * 80] * 100_000,
    "bigd": {f"{i:080d}": i for i in range(100_000)},
}
SERIALISERS = [
    "{{ big | tojson }}",
    "{{ big | string }}",
    "{{ big | join(',') }}",
    "{{ big | upper }}",
    "{{ big | truncate(10) }}",
    "{{ big | wordcount }}",
    "{{ big | e }}",
    "{{ '%s' % (big,) }}",
    "{{ '%s' | format(big) }}",
    "{{ '{}'.format(big) }}",
    "{{ ','.join(big) }}",
    "{{ big ~ '' }}",
    "x{{ big }}",
    "{{ bigd | urlencode }}",
    "{{ bigd | xmlattr }}",
    "{% set s %}{{ big }}{% endset %}",
]


@pytest.mark.parametrize("source", SERIALISERS)
def test_serialisers_size_their_input_before_building(
    engine: ExpressionEngine, source: str
) -> None:
    engine.check_template(source)
    with peak_memory() as peak:
        refused(engine.render, source, BIG_SCOPE)
    assert peak[0] < 4 * MB, f"{peak[0] / MB:.1f} MB built before the refusal"


def test_loop_text_captured_by_set_is_bounded(engine: ExpressionEngine) -> None:
    text = "0123456789" * 100
    source = (
        "{% set x %}{% for i in range(10000) %}" + text + "{% endfor %}{% endset %}{{ x | length }}"
    )
    engine.check_template(source)
    with peak_memory() as peak:
        refused(engine.render, source, {})
    assert peak[0] < 4 * MB


def test_word_by_word_filters_take_a_share_of_the_limit(engine: ExpressionEngine) -> None:
    """urlize and wordwrap run per word in Python, where no hook reads the clock: their
    input is capped so one call ends well within the time limit."""
    text = "see a.com " * 30_000  # 300,000 characters: ~0.4 s of urlize
    error = refused(engine.render, "{{ t | urlize }}", {"t": text})
    assert "urlize" in error.message
    refused(engine.render, "{{ t | wordwrap(5) }}", {"t": text})
    assert engine.render("{{ 'see www.a.com' | urlize }}", {}).startswith("see <a href=")
    assert engine.render("{{ t | wordwrap(5) | length }}", {"t": "abc def " * 1000}) > 0


def test_loop_text_is_counted_when_output(engine: ExpressionEngine) -> None:
    """Only the text a loop actually outputs counts: a large block under a rare condition
    stays allowed, and {% autoescape %} leaves loop text alone as it always did."""
    text = "<p>" + "x" * 1000 + "</p>"
    source = "{% for i in range(10000) %}{% if i == 7 %}" + text + "{% endif %}{% endfor %}"
    assert engine.render(source, {}) == text
    escaped = "{% autoescape true %}{% for i in range(2) %}<b>{{ '<' }}</b>{% endfor %}"
    assert engine.render(escaped + "{% endautoescape %}", {}) == "<b>&lt;</b>" * 2


def test_total_of_one_evaluation_is_bounded(engine: ExpressionEngine) -> None:
    # Each value is within the size limit; together they are not.
    error = refused(
        engine.render, "{% for i in range(100) %}{% set x = 'a' * 900000 %}{% endfor %}", {}
    )
    assert "in total" in error.message


def test_one_render_value_shares_one_budget(engine: ExpressionEngine) -> None:
    """What one node renders is bounded as a whole: six fields of 900,000 characters."""
    value = {f"f{i}": "{{ 'x' * 900000 }}" for i in range(6)}
    error = refused(engine.render_value, value, {})
    assert "in total" in error.message
    assert engine.render_value({"a": "{{ 'x' * 900000 }}"}, {})["a"] == "x" * 900_000


def test_operation_count_is_bounded() -> None:
    engine = ExpressionEngine(ExpressionLimits(max_operations=1000, timeout_s=30))
    error = refused(engine.render, "{% for i in range(10000) %}{% endfor %}", {})
    assert "1000 operations" in error.message
    assert engine.render("{% for i in range(100) %}{% endfor %}done", {}) == "done"


def test_recursive_loops_are_metered() -> None:
    engine = ExpressionEngine(ExpressionLimits(max_operations=1000, timeout_s=30))
    tree = {"children": [{"children": [{"children": []}] * 50}] * 50}
    source = "{% for n in [tree] recursive %}{{ loop(n.children) }}{% endfor %}"
    refused(engine.render, source, {"tree": tree})


def test_namespace_holding_itself_is_sized(engine: ExpressionEngine) -> None:
    source = "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}"
    assert engine.render(source, {}) == "<Namespace {'me': <Namespace {...}>}>"


# -- compilation ---------------------------------------------------------------------------


def test_compiling_runs_no_filter(engine: ExpressionEngine) -> None:
    """Jinja folds constant expressions while compiling; the sandbox's hooks refuse then,
    so a filter chain over constants runs at evaluation, under the budget."""
    source = '{{ "x" | center(999999) | list | batch(1) | list | length }}'
    with peak_memory() as peak:
        engine.check_template(source)
    assert peak[0] < 4 * MB
    refused(engine.render, source, {})
    assert engine.render('{{ "ab" | upper ~ "c" }}', {}) == "ABc"


def test_sources_have_a_token_limit() -> None:
    engine = ExpressionEngine(ExpressionLimits(max_template_tokens=300))
    engine.check_template("{{ a }}" * 100)
    error = refused(engine.check_template, "{{ a }}" * 101)
    assert "300 tokens" in error.message
    refused(engine.check_condition, " + ".join(["a"] * 151))
    # The default: about 7,000 outputs in one template.
    refused(ExpressionEngine().check_template, "{{ a }}" * 7000)


def test_compile_deadline_is_not_cached(engine: ExpressionEngine) -> None:
    source = "{{ a }}" * 200
    with pytest.raises(CompileBudgetExceeded) as info:
        engine.check_template(source, deadline=time.monotonic() - 1)
    assert info.value.kind == "limit"
    assert info.value.source == source
    engine.check_template(source)  # the same source within another budget
    engine.check_template(source, deadline=time.monotonic() - 1)  # now cached: no compile


def test_limits_validate_their_values() -> None:
    for bad in (
        {"max_operations": 0},
        {"max_total_chars": 0},
        {"compile_budget_s": 0},
        {"max_templates": 0},
        {"max_template_tokens": -1},
    ):
        with pytest.raises(ValueError):
            ExpressionLimits(**bad)
