"""Where a retried run starts again (engine/restart.py, pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flowyard.domain.ids import RunId, StepId
from flowyard.domain.records import StepRecord
from flowyard.domain.statuses import StepStatus
from flowyard.engine.restart import failure_cause, retry_start

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def step(
    id: int, node: str, status: StepStatus, *, type: str = "http", branch: str = "", **extra: Any
) -> StepRecord:
    error = {"type": "http.400", "message": "bad"} if status == StepStatus.FAILED else None
    values: dict[str, Any] = {
        "id": StepId(id), "run_id": RunId("run_1"), "node_id": node, "node_type": type,
        "branch": branch, "iteration": 0, "status": status, "attempt": 1, "available_at": T0,
        "created_at": T0, "started_at": T0, "finished_at": T0, "lease_owner": None,
        "lease_expires_at": None, "output": None, "error": error, "recoveries": 0, "claims": 1,
    }  # fmt: skip
    values.update(extra)
    return StepRecord(**values)


def error_at(step_id: int) -> dict[str, Any]:
    return {"type": "lead.no", "message": "no", "details": {"step_id": step_id}}


OK, FAILED = StepStatus.SUCCEEDED, StepStatus.FAILED


def test_a_fail_node_behind_a_catch_restarts_the_caught_step() -> None:
    steps = [
        step(1, "start", OK, type="trigger"),
        step(2, "create", FAILED),
        step(3, "note", OK, type="log"),
        step(4, "failed", FAILED, type="fail"),
    ]
    start = retry_start(error_at(4), steps)
    assert start is not None and start.caught
    assert (start.step.node_id, start.failed_step, start.discard) == ("create", 4, (3, 4))
    assert failure_cause(error_at(4), steps) == steps[1]


def test_a_failed_call_restarts_itself() -> None:
    steps = [step(1, "start", OK, type="trigger"), step(2, "create", FAILED)]
    start = retry_start(error_at(2), steps)
    assert start is not None and not start.caught and start.step.id == 2 and start.discard == ()


def test_a_fail_node_reached_without_a_catch_restarts_itself() -> None:
    steps = [step(1, "start", OK, type="trigger"), step(2, "failed", FAILED, type="fail")]
    start = retry_start(error_at(2), steps)
    assert start is not None and start.step.id == 2 and not start.caught


def test_branch_steps_and_runs_without_a_failed_step_are_left_to_the_store() -> None:
    steps = [step(1, "fork", OK), step(2, "b", FAILED, branch="p:1/0"), step(3, "failed", FAILED)]
    assert retry_start({"type": "run.timeout", "details": {}}, steps) is None
    assert retry_start(None, steps) is None
    assert retry_start(error_at(2), steps) is None  # a branch step is not the main path
