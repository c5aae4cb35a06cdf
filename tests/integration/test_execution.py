"""Execution semantics through the store and an in-process worker, on both backends."""

from __future__ import annotations

from typing import Any

from flowyard.bootstrap import Container
from flowyard.domain.statuses import RunStatus, StepStatus
from support.http import RecordingServer, Reply
from support.runs import run_definition

FAST_RETRY = {
    "max_attempts": 3,
    "initial_interval_s": 0.01,
    "backoff_rate": 1.0,
    "max_interval_s": 0.01,
    "jitter": "none",
}


def call(url: str, **node: Any) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {"id": "start", "type": "trigger", "next": "call"},
        {
            "id": "call",
            "type": "http",
            "config": {"method": "POST", "url": url},
            "next": "done",
            **node,
        },
        {"id": "done", "type": "end", "config": {"output": "{{ steps.call.output.body }}"}},
    ]
    if "catch" in node:
        nodes.append(
            {
                "id": "handle",
                "type": "end",
                "config": {"output": {"caught": "{{ steps.call.error.type }}"}},
            }
        )
    return {"name": "call", "start": "start", "nodes": nodes}


async def test_transient_failures_are_retried_until_success(
    container: Container, http_server: RecordingServer
) -> None:
    http_server.script("/x", [Reply(503), Reply(503), Reply(200, {"id": 7})])
    detail = await run_definition(
        container, call(f"{http_server.url}/x", retry=FAST_RETRY, catch=[{"next": "handle"}])
    )
    assert detail.run.status == RunStatus.SUCCEEDED
    assert detail.run.output == {"id": 7}
    step = next(s for s in detail.steps if s.node_id == "call")
    assert (step.status, step.attempt) == (StepStatus.SUCCEEDED, 3)
    keys = {r.headers["Idempotency-Key"] for r in http_server.to("/x")}
    assert keys == {f"{detail.run.id}:call:0"}  # same key on every attempt
    assert [e.type for e in detail.events].count("step.retrying") == 2


async def test_permanent_failure_takes_catch_route_without_retry(
    container: Container, http_server: RecordingServer
) -> None:
    http_server.script("/x", [Reply(400, {"error": "bad"})])
    detail = await run_definition(
        container,
        call(
            f"{http_server.url}/x",
            retry=FAST_RETRY,
            catch=[{"errors": ["http.4*"], "next": "handle"}],
        ),
    )
    assert detail.run.status == RunStatus.SUCCEEDED
    assert detail.run.output == {"caught": "http.400"}
    assert len(http_server.to("/x")) == 1
    step = next(s for s in detail.steps if s.node_id == "call")
    assert step.status == StepStatus.FAILED and step.error is not None
    assert step.error["type"] == "http.400"


async def test_exhausted_retries_without_catch_fail_the_run(
    container: Container, http_server: RecordingServer
) -> None:
    http_server.script("/x", [Reply(500)])
    detail = await run_definition(container, call(f"{http_server.url}/x", retry=FAST_RETRY))
    assert detail.run.status == RunStatus.FAILED
    assert detail.run.error is not None and detail.run.error["type"] == "http.500"
    assert len(http_server.to("/x")) == 3
    assert detail.events[-1].type == "run.failed"


async def test_step_timeout_is_a_transient_timeout(
    container: Container, http_server: RecordingServer
) -> None:
    http_server.script("/x", [Reply(200, delay_s=2.0)])
    detail = await run_definition(
        container,
        call(f"{http_server.url}/x", timeout_s=0.2, retry={**FAST_RETRY, "max_attempts": 1}),
    )
    assert detail.run.status == RunStatus.FAILED
    assert detail.run.error is not None and detail.run.error["type"] == "timeout"


async def test_condition_without_match_fails_the_run_clearly(container: Container) -> None:
    definition = {
        "name": "cond",
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "route"},
            {
                "id": "route",
                "type": "condition",
                "config": {"cases": [{"when": "input.region == 'East Coast'", "next": "east"}]},
            },
            {"id": "east", "type": "end"},
        ],
    }
    detail = await run_definition(container, definition, {"region": "West"})
    assert detail.run.status == RunStatus.FAILED
    assert detail.run.error is not None
    assert detail.run.error["type"] == "condition.no_match"
    assert "route" in detail.run.error["message"]


async def test_undefined_name_in_expression_fails_permanently(container: Container) -> None:
    definition = {
        "name": "undef",
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "calc"},
            {"id": "calc", "type": "set", "config": {"values": {"x": "{{ input.missing + 1 }}"}}},
        ],
    }
    detail = await run_definition(container, definition, {"present": 1})
    assert detail.run.status == RunStatus.FAILED
    assert detail.run.error is not None
    assert detail.run.error["type"].startswith("expression.")
    assert "missing" in detail.run.error["message"]
    step = next(s for s in detail.steps if s.node_id == "calc")
    assert step.attempt == 1  # permanent: not retried


async def test_loop_runs_each_iteration_as_its_own_step(container: Container) -> None:
    definition = {
        "name": "loop",
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "tick"},
            {
                "id": "tick",
                "type": "log",
                "config": {"message": "tick"},
                "next": "check",
                "max_iterations": 5,
            },
            {
                "id": "check",
                "type": "condition",
                "config": {
                    "cases": [{"when": "steps.tick.iteration < 2", "next": "tick"}],
                    "default": "done",
                },
            },
            {"id": "done", "type": "end"},
        ],
    }
    detail = await run_definition(container, definition)
    assert detail.run.status == RunStatus.SUCCEEDED
    ticks = [s.iteration for s in detail.steps if s.node_id == "tick"]
    assert ticks == [0, 1, 2]


async def test_vars_override_definition_vars(container: Container) -> None:
    definition = {
        "name": "vars",
        "vars": {"greeting": "hello", "who": "world"},
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "done"},
            {
                "id": "done",
                "type": "end",
                "config": {"output": "{{ vars.greeting }} {{ vars.who }}"},
            },
        ],
    }
    detail = await run_definition(container, definition, vars={"who": "flowyard"})
    assert detail.run.output == "hello flowyard"
