"""Holes a second review of the expression meter found: private filter and test names given
as strings, huge integers, repeated format fields, size estimates below the real output,
unmetered tests and a missing final clock check, ``pprint``, compile cost, lazy results.

Sizes are asserted through ``tracemalloc`` (what an evaluation built before it was refused),
times only as generous bounds."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from flowyard.expressions import ExpressionEngine, ExpressionError, ExpressionLimits
from flowyard.expressions.errors import CompileBudgetExceeded
from flowyard.expressions.meter import MAX_INT_BITS, Meter, Refused
from support.memory import peak_memory

MB = 1024 * 1024


@pytest.fixture
def engine() -> ExpressionEngine:
    return ExpressionEngine()


def failed(func: Callable[..., Any], *args: Any, kinds: tuple[str, ...] = ("limit",)) -> str:
    """The message of the ExpressionError ``func`` raises, checking its kind."""
    with pytest.raises(ExpressionError) as info:
        func(*args)
    assert info.value.kind in kinds, str(info.value)
    return info.value.message


def refused_cheaply(
    engine: ExpressionEngine, source: str, scope: dict[str, Any], budget: int = 4 * MB
) -> str:
    """Refused with kind ``limit``, having built less than ``budget`` bytes first."""
    engine.check_template(source)  # only the evaluation is measured
    with peak_memory() as peak:
        message = failed(engine.render, source, scope)
    assert peak[0] < budget, f"{peak[0] / MB:.1f} MB built before the refusal"
    return message


# -- 1. private filter and test names --------------------------------------------------------

PRIVATE_BY_NAME = [
    "{{ [[1, 2]] | map('_flowyard_iter_guard', -1000000) | list }}",
    "{{ ['a'] | map('_flowyard_size_guard') | list }}",
    "{{ [['a']] | map('_flowyard_concat') | list }}",
    "{% set f = '_flowyard_iter_guard' %}{{ [[1]] | map(f, -5) | list }}",
    "{% set f = '_private' %}{{ [1] | select(f) | list }}",
    "{% set f = '_private' %}{{ [1] | reject(f) | list }}",
    "{% set f = '_private' %}{{ [{'a': 1}] | selectattr('a', f) | list }}",
    "{% set f = '_private' %}{{ [{'a': 1}] | rejectattr('a', f) | list }}",
]


@pytest.mark.parametrize("source", PRIVATE_BY_NAME)
def test_private_filter_and_test_names_are_refused_at_run_time(
    engine: ExpressionEngine, source: str
) -> None:
    failed(engine.render, source, {}, kinds=("security",))


@pytest.mark.parametrize(
    "source",
    [
        "{{ x | map('_flowyard_iter_guard') }}",
        "{{ x | select('_flowyard_iter_guard') }}",
        "{{ x | reject('_t') }}",
        "{{ x | selectattr('a', '_t') }}",
        "{{ x | rejectattr('a', '_t') }}",
    ],
)
def test_private_filter_and_test_names_are_refused_when_compiled(
    engine: ExpressionEngine, source: str
) -> None:
    failed(engine.check_template, source, kinds=("security",))


def test_charges_are_never_negative() -> None:
    meter = Meter(ExpressionLimits())
    with pytest.raises(Refused):
        meter.charge(-1)


# -- 2. huge integers ------------------------------------------------------------------------


def test_integers_are_capped_below_what_str_refuses(engine: ExpressionEngine) -> None:
    # Python refuses str() of more than 4,300 digits: the cap is below it, so every integer
    # an expression may hold can be printed.
    assert 13_000 <= MAX_INT_BITS <= 14_284
    assert engine.evaluate("('9' * 4200) | int", {}) == int("9" * 4200)
    failed(engine.evaluate, "2 ** 14500", {})


@pytest.mark.parametrize(
    "source",
    [
        # The int filter in base 16 is linear (no str limit): 1,000,000 bits.
        "{% set a = ('f' * 250000) | int(base=16) %}{{ 1 }}",
        # Operators that were not intercepted: 2 ** 13999 doubled.
        "{% set a = 2 ** 13999 %}{{ (a - (0 - a)) > 0 }}",
        "{% set a = 2 ** 13999 %}{{ ([a, a] | sum) > 0 }}",
        # round() with a huge negative precision computes 10 ** n.
        "{{ 5 | round(-10000000) }}",
    ],
)
def test_every_integer_a_filter_or_operator_returns_is_checked(
    engine: ExpressionEngine, source: str
) -> None:
    started = time.monotonic()
    failed(engine.render, source, {})
    assert time.monotonic() - started < 1.0


def test_huge_integer_literals_are_refused_when_compiled(engine: ExpressionEngine) -> None:
    failed(engine.check_template, "{{ 0x" + "f" * 4000 + " // 3 }}")
    failed(engine.check_condition, "0b" + "1" * 20000 + " > 1")
    assert engine.evaluate("0xff + 1_000", {}) == 1255


# -- 3. repeated format fields ---------------------------------------------------------------

S100K = {"s": "x" * 100_000, "t": "y" * 600_000, "e": "\U0001f600" * 200_000}


@pytest.mark.parametrize(
    "source",
    [
        "{{ ('%(a)s' * 1000) % {'a': s} }}",
        "{{ ('{0}' * 1000).format(s) }}",
        "{{ ('{a}' * 1000).format_map({'a': s}) }}",
        "{{ ('%(a)s' * 1000) | format(a=s) }}",
        "{{ '%(a)s%(a)s' | format(a=t) }}",
        "{{ '{0}{0}'.format(t) }}",
        "{{ '{0:.999999f}{0:.999999f}'.format(1.0) }}",
        "{{ '%.999999f%.999999f' % (1.0, 1.0) }}",
        "{{ '{0!a}'.format(e) }}",  # 10 characters each
        "{{ '%a' % e }}",
    ],
)
def test_repeated_format_fields_are_charged_before_formatting(
    engine: ExpressionEngine, source: str
) -> None:
    refused_cheaply(engine, source, S100K, budget=1 * MB)


def test_formatting_still_works(engine: ExpressionEngine) -> None:
    assert engine.render("{{ '%s-%s' % ('a', 'b') }}", {}) == "a-b"
    assert engine.render("{{ '%(a)s%(a)s' % {'a': 'b'} }}", {}) == "bb"
    assert engine.render("{{ '{0}{0}{1}'.format('ab', 3) }}", {}) == "abab3"
    assert engine.render("{{ '{}-{x}'.format(1, x=2) }}", {}) == "1-2"
    assert engine.render("{{ '%05.1f|%%' | format(2.25) }}", {}) == "002.2|%"
    assert engine.render("{{ '{0[a]}{0[a]}'.format({'a': 'z'}) }}", {}) == "zz"
    assert engine.render("{{ '%(a)s' | format(a=1) }}", {}) == "1"


# -- 4. size estimates charged before building -----------------------------------------------

ESTIMATES = [
    # indent: every line break splitlines knows (\r, \x0b, \u2028 ...), width per line.
    ("{{ t | indent(100) }}", {"t": "\ra" * 100_000}),
    ("{{ t | indent('x' * 100) }}", {"t": "\u2028a" * 100_000}),
    # wordwrap: the wrapstring per break.
    ("{{ t | wordwrap(1, wrapstring='x' * 1000) }}", {"t": "a " * 10_000}),
    # urlize: the target and rel attributes per URL, the URL twice.
    ("{{ t | urlize(target='x' * 10000) }}", {"t": "www.a.com " * 1000}),
    ("{{ t | urlize(rel='x' * 10000) }}", {"t": "www.a.com " * 1000}),
    # join of an attribute of each item.
    ("{{ items | join(attribute='a') }}", {"items": [{"a": "x" * 100_000}] * 100}),
    # bytes.replace.
    ("{{ t.encode().replace('a'.encode(), ('b' * 100).encode()) }}", {"t": "a" * 100_000}),
    # tojson with an indent: indent x depth on every line.
    ("{{ v | tojson(indent=64) }}", {"v": [[[[[1] * 10] * 10] * 10] * 10] * 10}),
]


@pytest.mark.parametrize(("source", "scope"), ESTIMATES)
def test_estimates_cover_the_real_output(
    engine: ExpressionEngine, source: str, scope: dict[str, Any]
) -> None:
    refused_cheaply(engine, source, scope)


def test_estimated_filters_still_work(engine: ExpressionEngine) -> None:
    assert engine.render("{{ 'a\nb' | indent(2) }}", {}) == "a\n  b"
    assert engine.render("{{ 'a\r\nb' | indent('--', first=true) }}", {}) == "--a\n--b"
    assert engine.render("{{ 'aa bb' | wordwrap(2, wrapstring='|') }}", {}) == "aa|bb"
    assert engine.render("{{ [{'a': 1}, {'a': 2}] | join('-', attribute='a') }}", {}) == "1-2"
    assert engine.render("{{ {'a': [1]} | tojson(indent=2) }}", {}) == (
        '{\n  "a": [\n    1\n  ]\n}'
    )
    assert engine.render("{{ 'ab'.encode().replace('a'.encode(), 'c'.encode()) }}", {}) == b"cb"
    assert engine.render("{{ 'see www.a.com' | urlize(target='_blank') }}", {}) == (
        'see <a href="https://www.a.com" rel="noopener" target="_blank">www.a.com</a>'
    )


# -- 5. tests are operations; the clock is read when the evaluation ends ---------------------


def test_jinja_tests_count_as_operations() -> None:
    engine = ExpressionEngine(ExpressionLimits(max_operations=1000, timeout_s=30))
    loop = "{% for i in range(600) %}{% if i is divisibleby 3 %}{% endif %}{% endfor %}"
    assert "1000 operations" in failed(engine.render, loop, {})
    failed(engine.render, "{{ range(1200) | select('odd') | list | length }}", {})
    assert engine.render("{{ range(100) | select('odd') | list | length }}", {}) == 50


def test_clock_is_read_when_the_evaluation_ends() -> None:
    engine = ExpressionEngine(ExpressionLimits(timeout_s=0.05))
    scope = {"slow": lambda: time.sleep(0.2) or 1}
    assert "time limit" in failed(engine.evaluate, "slow()", scope)
    assert "time limit" in failed(engine.render, "x{{ slow() }}", scope)


# -- 6. pprint ---------------------------------------------------------------------------------


def test_pprint_is_not_a_filter(engine: ExpressionEngine) -> None:
    failed(engine.check_template, "{{ x | pprint }}", kinds=("syntax",))


# -- 7. compile cost ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ 1" + " | string" * 200 + " }}",
        "{{ " + "not " * 240 + "x }}",
        "{{ x" + ".a" * 240 + " }}",
    ],
)
def test_compiling_a_long_chain_is_not_cubic(engine: ExpressionEngine, source: str) -> None:
    started = time.monotonic()
    # Too deep for Python's compiler is an answer too, as long as it is quick.
    with contextlib.suppress(ExpressionError):
        engine.check_template(source)
    assert time.monotonic() - started < 1.0


def test_compile_deadline_is_checked_after_compiling(
    engine: ExpressionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_string = engine._env.from_string

    def slow_from_string(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.2)
        return from_string(*args, **kwargs)

    monkeypatch.setattr(engine._env, "from_string", slow_from_string)
    with pytest.raises(CompileBudgetExceeded):
        engine.check_template("{{ a }}", deadline=time.monotonic() + 0.1)


def test_concurrent_identical_compiles_compile_once(
    engine: ExpressionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    build = engine._build

    def counted_build(kind: str, source: str, deadline: float | None) -> Any:
        calls.append(source)
        time.sleep(0.1)
        return build(kind, source, deadline)

    monkeypatch.setattr(engine, "_build", counted_build)
    threads = [
        threading.Thread(target=engine.check_template, args=("{{ a + 1 }}",)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["{{ a + 1 }}"]
    assert engine.render("{{ a + 1 }}", {"a": 1}) == 2


# -- 8. lazy results ---------------------------------------------------------------------------


def test_lazy_results_are_materialised(engine: ExpressionEngine) -> None:
    assert engine.evaluate("range(3)", {}) == [0, 1, 2]
    assert engine.render("{{ [1, 2] | map('string') }}", {}) == ["1", "2"]
    assert engine.render("{{ {'a': [1, 2] | select('odd')} }}", {}) == {"a": [1]}
    assert engine.render("{{ {'a': 1}.items() }}", {}) == [("a", 1)]
    assert engine.render("{{ ([1] | map('string'), 2) }}", {}) == (["1"], 2)


def test_materialising_is_metered() -> None:
    engine = ExpressionEngine(ExpressionLimits(max_operations=1000, timeout_s=30))
    failed(engine.render, "{{ range(5000) | map('string') }}", {})
    limits = ExpressionLimits(max_output_chars=10_000)
    source = "{{ range(100) | map('center', 500) }}"
    failed(ExpressionEngine(limits).render, source, {})
