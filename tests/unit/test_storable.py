"""The size rule of flowyard.worker.storable: a result estimated small is below the limit
whatever it holds, so only results that could reach it are measured (large ones in a
thread), down to the smallest limit allowed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from flowyard.domain.commands import Transition
from flowyard.domain.errors import ErrorInfo
from flowyard.domain.statuses import StepStatus
from flowyard.worker.storable import (
    DEFAULT_MAX_OUTPUT_BYTES,
    MIN_OUTPUT_BYTES,
    OFF_LOOP_BYTES,
    is_large,
    needs_measuring,
    storable,
)


def succeeded(output: Any) -> Transition:
    return Transition(StepStatus.SUCCEEDED, output=output, event=("step.succeeded", {}))


def just_small(item: Any, small: Callable[[Transition], bool] | None = None) -> list[Any]:
    """The longest list of ``item`` that is ``small`` (by default: not estimated large)."""
    is_small = small or (lambda t: not is_large(t))
    low, high = 1, OFF_LOOP_BYTES
    while low < high:
        middle = (low + high + 1) // 2
        if not is_small(succeeded([item] * middle)):
            high = middle - 1
        else:
            low = middle
    return [item] * low


@pytest.mark.parametrize(
    "item",
    [
        "\x01",  # \u0001: 6 bytes per character
        "\U0001f600",  # two \\uXXXX escapes
        1.2345678901234567e-300,
        -(10**300),
        True,
        None,
        {"": None},
        [[]],
    ],
    ids=["control", "astral", "float", "big-int", "bool", "null", "object", "list"],
)
def test_a_result_that_is_not_measured_is_below_the_limit(item: Any) -> None:
    for limit in (MIN_OUTPUT_BYTES, 1024 * 1024):
        value = just_small(item, lambda t, limit=limit: not needs_measuring(t, limit))
        assert len(json.dumps(value)) < limit
        assert needs_measuring(succeeded([*value, item, item]), limit)
    # Under the default limit, what is not large is not measured (no walk on the loop).
    value = just_small(item)
    assert not needs_measuring(succeeded(value), DEFAULT_MAX_OUTPUT_BYTES)


def test_the_limit_counts_each_stored_value_once() -> None:
    blob = {"blob": "x" * (MIN_OUTPUT_BYTES // 2)}
    same = Transition(
        StepStatus.SUCCEEDED, output=blob, run_output=blob, event=("step.succeeded", {})
    )
    assert storable(same, MIN_OUTPUT_BYTES) is same
    other = Transition(
        StepStatus.SUCCEEDED, output=blob, run_output=dict(blob), event=("step.succeeded", {})
    )
    refused = storable(other, MIN_OUTPUT_BYTES)
    assert isinstance(refused, ErrorInfo)
    assert refused.type == "output.too_large"
    assert refused.details == {"size": 2 * len(json.dumps(blob)), "limit": MIN_OUTPUT_BYTES}


def test_a_small_limit_refuses_a_result_above_it() -> None:
    """Down to the smallest limit (64 KiB): a 100 kB output or run output is refused with
    its size and the limit; one just under is stored."""
    blob = "x" * 100_000
    for transition in (
        succeeded({"blob": blob}),
        Transition(StepStatus.SUCCEEDED, run_output=[blob], event=("step.succeeded", {})),
    ):
        refused = storable(transition, MIN_OUTPUT_BYTES)
        assert isinstance(refused, ErrorInfo) and refused.type == "output.too_large"
        assert refused.details is not None and refused.details["limit"] == MIN_OUTPUT_BYTES
        assert refused.details["size"] > 100_000
    fits = succeeded({"blob": "x" * (MIN_OUTPUT_BYTES - 20)})
    assert storable(fits, MIN_OUTPUT_BYTES) is fits
