"""Expression budgets seen from the service and the API: hostile expressions fail their step
with ``expression.limit`` and store little while the API keeps answering; compiling a
definition has a budget and a few slots per process; validate answers what create would."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from flowyard.api import create_app
from flowyard.bootstrap import Container, build
from flowyard.domain.errors import DefinitionError
from flowyard.domain.statuses import RunStatus
from flowyard.settings import Settings
from support.auth import auth_headers

API = "/api/v1"

# (The third expression, which ran 67 s and built 900 MB, is in the unit tests:
# here it would make the test a memory hazard on the code it guards against.)
HOSTILE = {
    "deep-json": "{{ ([[0]*1000000]*20)|tojson|length }}",  # blocked a loop 3.9 s
    "deep-row": "{{ [[0]*1000000]*10 }}",  # stored a 20 MB row
    # Within every size limit: spins until the time limit.
    "spin": "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
}


def one_set_node(name: str, template: str) -> dict[str, Any]:
    return {
        "name": name,
        "start": "t",
        "nodes": [
            {"id": "t", "type": "trigger", "next": "x"},
            {"id": "x", "type": "set", "config": {"values": {"v": template}}, "next": "z"},
            {"id": "z", "type": "end"},
        ],
    }


def http_workflow(credential: str) -> dict[str, Any]:
    return {
        "name": "calls",
        "start": "call",
        "nodes": [
            {"id": "call", "type": "http", "config": {"url": "http://x", "credential": credential}}
        ],
    }


def many_templates(count: int, per_template: str = "{{ input.x }}") -> dict[str, Any]:
    """A chain of ``count`` set nodes, one template each (distinct, so none is cached)."""
    nodes: list[dict[str, Any]] = [{"id": "t", "type": "trigger", "next": "s0"}]
    for i in range(count):
        nodes.append(
            {
                "id": f"s{i}",
                "type": "set",
                "config": {"values": {"v": f"{i} {per_template}"}},
                "next": f"s{i + 1}" if i + 1 < count else "z",
            }
        )
    nodes.append({"id": "z", "type": "end"})
    return {"name": "many", "start": "t", "nodes": nodes}


def sqlite_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db_url": f"sqlite:///{tmp_path / 'flowyard.db'}",
        "workers": 0,
        "poll_interval_s": 0.05,
        "load_plugins": False,
        "rate_limit_enabled": False,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app as ``flowyard serve`` runs it: its lifespan builds the container and starts
    one in-process worker on the same event loop."""
    app = create_app(sqlite_settings(tmp_path, workers=1))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


async def test_api_answers_while_its_worker_meets_hostile_expressions(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = served
    container: Container = app.state.container
    loop = asyncio.get_running_loop()
    # Warm up what runs once per process on the loop (the app's middleware stack, lazy
    # imports, SQL statements compiled on first use): a benign run and a first request.
    assert (await client.get("/healthz")).status_code == 200
    record, _, _ = await container.service.save_workflow(one_set_node("benign", "{{ 1 }}"))
    benign, _ = await container.service.start_run(record.id, {})
    async with asyncio.timeout(30):
        while not (await container.store.get_run(benign.id)).status.is_terminal:
            await asyncio.sleep(0.05)
    run_ids: dict[str, list[str]] = {}
    for name, template in HOSTILE.items():
        record, _, _ = await container.service.save_workflow(one_set_node(name, template))
        run_ids[name] = []
        for _ in range(2):
            run, _ = await container.service.start_run(record.id, {})
            run_ids[name].append(run.id)

    finished = asyncio.Event()
    stalls: list[float] = []
    answers: list[float] = []

    def ours(wall: float, cpu: float) -> float:
        """The part of a delay this process can be blamed for. On a loaded machine the OS
        may not run the process at all for a while (other processes have the cores):
        such a delay costs the process no CPU time. A delay because other threads of
        this process hold the GIL (an evaluation) does cost CPU time."""
        return min(wall, cpu)

    async def ticker() -> None:
        # How late the loop wakes a 5 ms sleep: its worst stall while the runs execute.
        while not finished.is_set():
            wall, cpu = loop.time(), time.process_time()
            await asyncio.sleep(0.005)
            stalls.append(ours(loop.time() - wall - 0.005, time.process_time() - cpu))

    async def probe() -> None:
        while not finished.is_set():
            wall, cpu = loop.time(), time.process_time()
            response = await client.get("/healthz")
            answers.append(ours(loop.time() - wall, time.process_time() - cpu))
            assert response.status_code == 200
            await asyncio.sleep(0.02)

    watchers = [asyncio.create_task(ticker()), asyncio.create_task(probe())]
    try:
        pending = [run_id for ids in run_ids.values() for run_id in ids]
        async with asyncio.timeout(60):
            while pending:
                runs = [await container.store.get_run(run_id) for run_id in pending]
                pending = [run.id for run in runs if not run.status.is_terminal]
                await asyncio.sleep(0.05)
    finally:
        finished.set()
        await asyncio.gather(*watchers)

    for name, ids in run_ids.items():
        for run_id in ids:
            detail = await container.service.get_run(run_id)
            assert detail.run.status == RunStatus.FAILED, name
            [step] = [s for s in detail.steps if s.node_id == "x"]
            assert step.error is not None and step.error["type"] == "expression.limit", name
            assert step.output is None
            # What the run stored about it stays small.
            assert len(json.dumps(step.error)) < 2000
            assert len(json.dumps(detail.run.error)) < 4000
    # Unbounded, one of these expressions blocked the loop for seconds (3.9 s): a stall of
    # that order fails here. A single late answer of a few hundred ms happens on a loaded
    # machine (a collection of the garbage the hostile runs made, a CI neighbour); most
    # answers must still be prompt.
    assert len(answers) >= 5
    assert max(answers) < 1.0, f"/healthz took {max(answers) * 1000:.0f} ms"
    assert max(stalls) < 1.0, f"the event loop stalled {max(stalls) * 1000:.0f} ms"
    assert _late(answers) <= 0.1, f"{_late(answers):.0%} of /healthz answers took > 100 ms"
    assert _late(stalls) <= 0.1, f"{_late(stalls):.0%} of loop wake-ups were > 100 ms late"


def _late(delays: list[float], limit_s: float = 0.1) -> float:
    """The share of ``delays`` over ``limit_s``."""
    return sum(delay > limit_s for delay in delays) / len(delays)


# -- one validation, one answer ------------------------------------------------------------


async def test_validate_reports_unknown_credentials_like_create(container: Container) -> None:
    definition = http_workflow("crm")
    result = await container.service.validate(definition)
    assert not result.ok and result.workflow is None
    with pytest.raises(DefinitionError) as refused:
        await container.service.create_workflow(definition)
    assert result.problems == refused.value.problems
    assert [(p.pointer, p.code) for p in result.problems] == [
        ("/nodes/0/config/credential", "unknown_credential")
    ]


async def test_validate_route_answers_what_create_answers(tmp_path: Path) -> None:
    container = await build(sqlite_settings(tmp_path))
    try:
        app = create_app(container.settings, container=container)
        headers = await auth_headers(container)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as client:
            definition = http_workflow("crm")
            checked = await client.post(f"{API}/workflows/validate", json=definition)
            created = await client.post(f"{API}/workflows", json=definition)
        assert checked.status_code == 200
        assert checked.json()["valid"] is False
        assert created.status_code == 422
        assert checked.json()["errors"] == created.json()["errors"]
        assert created.json()["errors"][0]["pointer"] == "/nodes/0/config/credential"
    finally:
        await container.close()


# -- compile budget and slots --------------------------------------------------------------


async def test_validate_of_ten_thousand_templates_stops_at_the_limit(tmp_path: Path) -> None:
    container = await build(sqlite_settings(tmp_path))
    try:
        started = time.monotonic()
        result = await container.service.validate(many_templates(9998))
        elapsed = time.monotonic() - started
    finally:
        await container.close()
    assert [(p.pointer, p.code) for p in result.problems] == [
        ("/nodes/5001/config/values/v", "too_many_expressions")
    ]
    assert "9998 expressions" in result.problems[0].message
    assert "limit of 5000" in result.problems[0].message
    assert elapsed < container.settings.expression_compile_budget_s  # generous


async def test_validate_stops_at_the_compile_budget(tmp_path: Path) -> None:
    container = await build(sqlite_settings(tmp_path, expression_compile_budget_s=0.5))
    try:
        # 15,000 tokens per template, 100 of them: tens of seconds to compile in full.
        definition = many_templates(100, "{{ input.x }}" * 3000)
        started = time.monotonic()
        result = await container.service.validate(definition)
        elapsed = time.monotonic() - started
        with pytest.raises(DefinitionError) as refused:
            await container.service.create_workflow(definition)
    finally:
        await container.close()
    [problem] = result.problems
    assert problem.code == "compile_budget"
    assert problem.pointer.startswith("/nodes/") and problem.pointer.endswith("/config/values/v")
    assert "0.5s" in problem.message
    assert refused.value.problems[0].code == "compile_budget"
    assert elapsed < 5  # the budget plus one template, generously


async def test_compile_slots_are_bounded_per_process(tmp_path: Path) -> None:
    settings = sqlite_settings(
        tmp_path,
        expression_compile_budget_s=3.0,
        expression_compile_concurrency=1,
        expression_compile_wait_s=0.2,
    )
    container = await build(settings)
    slots = container.service._compile_slots
    try:
        app = create_app(settings, container=container)
        headers = await auth_headers(container)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers, timeout=30
        ) as client:
            slow = many_templates(100, "{{ input.x }}" * 3000)  # compiles until its budget
            first = asyncio.create_task(client.post(f"{API}/workflows/validate", json=slow))
            async with asyncio.timeout(10):
                while not slots.locked():
                    await asyncio.sleep(0.01)
            busy = await client.post(f"{API}/workflows/validate", json=many_templates(2))
            saving = await client.post(f"{API}/workflows", json=many_templates(2))
            # The client gives up: its compile thread cannot be stopped, so it keeps the
            # slot until it ends (cancelled requests cannot start more compiles).
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            still = await client.post(f"{API}/workflows/validate", json=many_templates(2))
            async with asyncio.timeout(30):
                while slots.locked():
                    await asyncio.sleep(0.05)
            after = await client.post(f"{API}/workflows/validate", json=many_templates(2))
    finally:
        await container.close()
    for refused in (busy, saving, still):
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.headers["retry-after"] == "3"
        assert refused.json()["type"].endswith("/busy")
        assert refused.json()["retry_after"] == 3
    assert after.json() == {"valid": True, "errors": []}


async def test_a_backtracking_input_schema_pattern_is_a_422_not_a_stall(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """ReDoS: an editor's pattern, an operator's input. With Python's re this request held
    the API (and every other request) for hours."""
    app, client = served
    client.headers.update(await auth_headers(app.state.container))
    definition = {
        **one_set_node("redos", "{{ input.name }}"),
        "input_schema": {"type": "object", "properties": {"name": {"pattern": "^(a|a)+$"}}},
    }
    created = await client.post(f"{API}/workflows", json=definition)
    assert created.status_code == 201, created.text
    started = time.perf_counter()
    refused = await client.post(
        f"{API}/workflows/redos/runs", json={"input": {"name": "a" * 60 + "!"}}
    )
    assert refused.status_code == 422, refused.text
    assert time.perf_counter() - started < 2
    [problem] = refused.json()["errors"]
    assert (problem["pointer"], problem["code"]) == ("/input", "pattern_timeout")
    ok = await client.post(f"{API}/workflows/redos/runs", json={"input": {"name": "aaa"}})
    assert ok.status_code == 202, ok.text
