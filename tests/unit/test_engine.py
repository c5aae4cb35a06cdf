"""Pure engine decisions: transitions and retry timing, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowyard.domain.definition import RetryPolicy
from flowyard.domain.errors import ErrorInfo
from flowyard.domain.statuses import StepStatus
from flowyard.engine.compiled import CompiledWorkflow
from flowyard.engine.retry import backoff_delay, may_retry
from flowyard.engine.transitions import first_step, on_failure, on_success
from flowyard.engine.validation import DefinitionValidator
from flowyard.expressions import ExpressionEngine
from flowyard.nodes.base import NodeOutcome
from flowyard.nodes.registry import default_registry

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def compile_wf(nodes: list[dict[str, Any]], **extra: Any) -> CompiledWorkflow:
    validator = DefinitionValidator(default_registry(load_plugins=False), ExpressionEngine())
    return validator.compile({"name": "t", "start": nodes[0]["id"], "nodes": nodes, **extra})


LINEAR = [
    {"id": "a", "type": "trigger", "next": "b"},
    {
        "id": "b",
        "type": "http",
        "config": {"url": "http://x"},
        "next": "c",
        "retry": {"max_attempts": 3, "initial_interval_s": 2, "backoff_rate": 3, "jitter": "none"},
        "catch": [{"errors": ["http.4*"], "next": "handler"}],
    },
    {"id": "c", "type": "end"},
    {"id": "handler", "type": "log", "config": {"message": "x"}},
]


def transient(kind: str = "http.503", **details: Any) -> ErrorInfo:
    return ErrorInfo(kind, "boom", transient=True, details=details)


def test_first_step_is_the_start_node() -> None:
    wf = compile_wf(LINEAR)
    step = first_step(wf, NOW)
    assert (step.node_id, step.node_type, step.iteration, step.available_at) == (
        "a",
        "trigger",
        0,
        NOW,
    )


def test_success_schedules_static_next() -> None:
    wf = compile_wf(LINEAR)
    tr = on_success(wf, "a", NodeOutcome(output={"v": 1}), iterations={}, now=NOW)
    assert tr.step_status == StepStatus.SUCCEEDED
    assert [(n.node_id, n.iteration) for n in tr.next_steps] == [("b", 0)]
    assert not tr.path_ended and tr.fail_run is None and tr.output == {"v": 1}


def test_outcome_next_overrides_static_next() -> None:
    wf = compile_wf(LINEAR)
    tr = on_success(wf, "b", NodeOutcome(next="handler"), iterations={}, now=NOW)
    assert [n.node_id for n in tr.next_steps] == ["handler"]


def test_end_and_missing_next_end_the_path_with_output() -> None:
    wf = compile_wf(LINEAR)
    tr = on_success(wf, "c", NodeOutcome(output="done", end=True), iterations={}, now=NOW)
    assert tr.path_ended and tr.run_output == "done" and not tr.next_steps
    tr = on_success(wf, "handler", NodeOutcome(output=1), iterations={}, now=NOW)
    assert tr.path_ended and tr.run_output == 1


def test_transient_failure_retries_with_exponential_backoff() -> None:
    wf = compile_wf(LINEAR)
    delays = []
    for attempt in (1, 2):
        tr = on_failure(
            wf, "b", transient(), attempt=attempt, iterations={}, now=NOW, rand=lambda: 0.5
        )
        assert tr.step_status == StepStatus.RETRYING
        assert tr.retry_at is not None
        delays.append((tr.retry_at - NOW).total_seconds())
    assert delays == [2.0, 6.0]


def test_exhausted_retries_fail_the_run_without_catch_match() -> None:
    wf = compile_wf(LINEAR)
    tr = on_failure(wf, "b", transient(), attempt=3, iterations={}, now=NOW, rand=lambda: 0.5)
    assert tr.step_status == StepStatus.FAILED
    assert tr.fail_run is not None and tr.fail_run.type == "http.503"
    assert not tr.next_steps


def test_permanent_error_is_never_retried_and_takes_matching_catch() -> None:
    wf = compile_wf(LINEAR)
    error = ErrorInfo("http.404", "not found", transient=False)
    tr = on_failure(wf, "b", error, attempt=1, iterations={}, now=NOW, rand=lambda: 0.5)
    assert tr.step_status == StepStatus.FAILED
    assert [n.node_id for n in tr.next_steps] == ["handler"]
    assert tr.fail_run is None
    assert tr.extra_events[0][0] == "step.caught"


def test_retry_after_is_a_floor() -> None:
    wf = compile_wf(LINEAR)
    tr = on_failure(
        wf,
        "b",
        transient("http.429", retry_after_s=30),
        attempt=1,
        iterations={},
        now=NOW,
        rand=lambda: 0.5,
    )
    assert tr.retry_at == NOW + timedelta(seconds=30)


def test_loop_guard_counts_iterations() -> None:
    wf = compile_wf(
        [
            {"id": "start", "type": "trigger", "next": "again"},
            {
                "id": "again",
                "type": "set",
                "config": {"values": {"x": 1}},
                "next": "check",
                "max_iterations": 3,
            },
            {
                "id": "check",
                "type": "condition",
                "config": {"cases": [{"when": "true", "next": "again"}]},
            },
        ]
    )
    assert wf.node("again").in_cycle and not wf.node("start").in_cycle
    tr = on_success(wf, "check", NodeOutcome(next="again"), iterations={"again": 1}, now=NOW)
    assert [(n.node_id, n.iteration) for n in tr.next_steps] == [("again", 2)]
    tr = on_success(wf, "check", NodeOutcome(next="again"), iterations={"again": 2}, now=NOW)
    assert tr.fail_run is not None and tr.fail_run.type == "loop.max_iterations"


def test_workflow_default_retry_applies_when_node_has_none() -> None:
    wf = compile_wf(
        [
            {"id": "a", "type": "trigger", "next": "b"},
            {"id": "b", "type": "http", "config": {"url": "http://x"}},
        ],
        defaults={"retry": {"max_attempts": 7}},
    )
    assert wf.node("b").retry.max_attempts == 7


@pytest.mark.parametrize(
    ("error", "attempt", "expected"),
    [
        (ErrorInfo("http.503", "", True), 1, True),
        (ErrorInfo("http.503", "", True), 3, False),  # attempts exhausted
        (ErrorInfo("http.400", "", False), 1, False),  # permanent
        (ErrorInfo("http.429", "", True), 1, False),  # non_retryable
        (ErrorInfo("timeout", "", True), 1, False),  # not in retry_on
    ],
)
def test_may_retry(error: ErrorInfo, attempt: int, expected: bool) -> None:
    policy = RetryPolicy(max_attempts=3, retry_on=["http.*"], non_retryable=["http.429"])
    assert may_retry(policy, error, attempt) is expected


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    initial=st.floats(min_value=0, max_value=100),
    rate=st.floats(min_value=1, max_value=10),
    cap=st.floats(min_value=0, max_value=1000),
    draw=st.floats(min_value=0, max_value=1),
)
def test_backoff_never_exceeds_the_cap(
    attempt: int, initial: float, rate: float, cap: float, draw: float
) -> None:
    policy = RetryPolicy(
        initial_interval_s=initial, backoff_rate=rate, max_interval_s=cap, jitter="full"
    )
    delay = backoff_delay(policy, attempt, rand=lambda: draw)
    assert 0 <= delay <= cap


def test_full_jitter_spreads_over_zero_to_base() -> None:
    policy = RetryPolicy(initial_interval_s=10, backoff_rate=2, max_interval_s=1000, jitter="full")
    assert backoff_delay(policy, 3, rand=lambda: 0.0) == 0.0
    assert backoff_delay(policy, 3, rand=lambda: 1.0) == 40.0
    none = RetryPolicy(initial_interval_s=10, backoff_rate=2, max_interval_s=1000, jitter="none")
    assert backoff_delay(none, 3, rand=lambda: 0.0) == 40.0
