"""The size rule of flowyard.worker.storable: a result estimated small is below the smallest
allowed limit whatever it holds, so only large results are measured (in a thread)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flowyard.domain.commands import Transition
from flowyard.domain.errors import ErrorInfo
from flowyard.domain.statuses import StepStatus
from flowyard.worker.storable import MIN_OUTPUT_BYTES, OFF_LOOP_BYTES, is_large, storable


def succeeded(output: Any) -> Transition:
    return Transition(StepStatus.SUCCEEDED, output=output, event=("step.succeeded", {}))


def just_small(item: Any) -> list[Any]:
    """The longest list of ``item`` that is not estimated large."""
    low, high = 1, OFF_LOOP_BYTES
    while low < high:
        middle = (low + high + 1) // 2
        if is_large(succeeded([item] * middle)):
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
def test_a_result_estimated_small_is_below_the_smallest_limit(item: Any) -> None:
    value = just_small(item)
    assert len(json.dumps(value)) < MIN_OUTPUT_BYTES
    assert is_large(succeeded([*value, item, item]))


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
