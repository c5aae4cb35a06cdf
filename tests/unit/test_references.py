"""What a template reads from ``vars``, statically (the run-start vars guard relies on it)."""

from __future__ import annotations

import pytest

from flowyard.expressions.references import keys_read


@pytest.mark.parametrize(
    ("source", "keys"),
    [
        ("{{ vars.target }}/x", {"target"}),
        ("{{ vars['target'] }}{{ vars.other }}", {"target", "other"}),
        ("{{ input.url }}", set()),
        # The sandbox prefers a key to a method: ``vars.get`` is a var called ``get`` if there
        # is one (a JSON value, so the call fails), else the method reading ``target``.
        ("{{ vars.get('target') }}", {"get", "target"}),
        ("{{ vars.get('target', 'https://fallback') }}", {"get", "target"}),
        ("{{ vars.get('target', vars.other) }}", {"get", "target", "other"}),
        ("{{ vars['get']('target') }}", {"get", "target"}),
    ],
)
def test_constant_keys_are_known(source: str, keys: set[str]) -> None:
    assert keys_read(source, "vars") == frozenset(keys)


@pytest.mark.parametrize(
    "source",
    [
        "{{ vars }}",
        "{{ vars | tojson }}",
        "{{ vars[input.key] }}",
        "{{ vars.get }}",
        "{{ vars.get(input.key) }}",
        "{{ vars.get('a', 'b', 'c') }}",
        "{{ vars.get(key='a') }}",
        "{{ vars.get(*input.args) }}",
        "{{ vars.items() | list }}",
        "{{ vars.values() | first }}",
        "{{ vars.keys() | first }}",
        "{{ vars['items']() | list }}",
        "{{ vars.copy().target }}",
        "{{ vars.__class__ }}",
        "{{ vars() }}",
        "{% for k in vars %}{{ k }}{% endfor %}",
        "{% set v = vars %}{{ v.target }}",
        "{{ vars.",
    ],
)
def test_anything_else_could_read_any_key(source: str) -> None:
    assert keys_read(source, "vars") is None
