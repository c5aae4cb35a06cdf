"""Durability with real worker processes: throughput on PostgreSQL without a repeated step,
SIGKILL recovery, graceful shutdown (drain and release) and poison steps.

Every wait is bounded; every worker process is killed and reaped in ``finally`` (WorkerGroup).
The HTTP endpoints count executions per step through the ``Idempotency-Key`` header.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from flowyard.bootstrap import Container, build
from flowyard.domain.ids import RunId
from flowyard.domain.records import StepRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.settings import Settings
from flowyard.store.factory import normalize_url
from flowyard.store.schema import run_events
from support.bulk import ended_runs, numbered_runs, steps_ran_once, worker_pid
from support.http import Recorded, RecordingServer, Reply
from support.procs import WorkerGroup, worker_group

pytestmark = pytest.mark.slow

KEY = "Idempotency-Key"
FAST = {"FLOWYARD_POLL_INTERVAL_S": "0.05"}
SHORT_LEASE = {**FAST, "FLOWYARD_LEASE_S": "2", "FLOWYARD_REAP_INTERVAL_S": "0.3"}


# -- helpers ---------------------------------------------------------------------------------


def chain(name: str, base_url: str, paths: list[str]) -> dict[str, Any]:
    """trigger -> http(POST base/path) for each path -> end."""
    ids = [f"call_{p.strip('/').replace('/', '_')}" for p in paths]
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "trigger", "next": ids[0]}]
    for i, (node_id, path) in enumerate(zip(ids, paths, strict=True)):
        nodes.append(
            {
                "id": node_id,
                "type": "http",
                "config": {
                    "method": "POST",
                    "url": f"{base_url}{path}",
                    "json": {"n": "{{ input.n }}"},
                    "timeout_s": 60,
                },
                "next": ids[i + 1] if i + 1 < len(ids) else "done",
            }
        )
    nodes.append({"id": "done", "type": "end", "config": {"output": {"n": "{{ input.n }}"}}})
    return {"name": name, "start": "start", "nodes": nodes}


async def until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout_s: float,
    what: str,
    group: WorkerGroup | None = None,
    every_s: float = 0.05,
) -> None:
    """Poll ``check`` until it is true; fail with the workers' logs after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            logs = f"\n{group.logs()}" if group is not None else ""
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}{logs}")
        await asyncio.sleep(every_s)


async def fetch(db_url: str, query: sa.Select[Any]) -> list[sa.Row[Any]]:
    """Rows of ``query`` through a short-lived engine (the store keeps its engines private)."""
    engine = create_async_engine(normalize_url(db_url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(query))
    finally:
        await engine.dispose()


async def events_of(
    db_url: str, run_id: str, kind: str, node_id: str | None = None
) -> list[dict[str, Any]]:
    """``data`` of a run's events of one type (and node), in order."""
    rows = await fetch(
        db_url,
        sa.select(run_events.c.data)
        .where(run_events.c.run_id == run_id, run_events.c.type == kind)
        .order_by(run_events.c.id),
    )
    found = [dict(row.data or {}) for row in rows]
    return [d for d in found if node_id is None or d.get("node_id") == node_id]


async def step_of(container: Container, run_id: RunId, node_id: str) -> StepRecord:
    """The (only) step of ``node_id`` in a run."""
    [step] = [s for s in await container.store.list_steps(run_id) if s.node_id == node_id]
    return step


def run_status(container: Container, run_id: RunId) -> Callable[[], Awaitable[bool]]:
    """A check: the run reached a terminal status."""

    async def check() -> bool:
        return (await container.store.get_run(run_id)).status.is_terminal

    return check


def requests_to(server: RecordingServer, path: str, count: int) -> Callable[[], bool]:
    """A check: ``path`` received ``count`` requests."""
    return lambda: len(server.to(path)) == count


class Gate:
    """An endpoint handler that holds requests until :meth:`open` (or ``max_s``) — every
    request, or only the first one per idempotency key. Counts requests per key."""

    def __init__(self, *, max_s: float, first_only: bool) -> None:
        self.max_s = max_s
        self.first_only = first_only
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._open = threading.Event()

    def __call__(self, request: Recorded) -> Reply:
        key = request.headers.get(KEY, "")
        with self._lock:
            self.seen[key] += 1
            hold = not self.first_only or self.seen[key] == 1
        if hold:
            self._open.wait(self.max_s)
        return Reply(200, {"ok": True, "key": key})

    def open(self) -> None:
        """Let held and future requests through."""
        self._open.set()


@pytest.fixture
def gates(http_server: RecordingServer) -> Iterator[list[Gate]]:
    """Gates registered by a test; all opened at teardown so no server thread lingers."""
    made: list[Gate] = []
    try:
        yield made
    finally:
        for gate in made:
            gate.open()


def gate(http_server: RecordingServer, gates: list[Gate], path: str, **kwargs: Any) -> Gate:
    """Install a :class:`Gate` on ``path``."""
    made = Gate(**kwargs)
    http_server.on(path, made)
    gates.append(made)
    return made


# -- 1. throughput on PostgreSQL, two processes, no step twice ---------------------------------

RUNS = 500  # x 4 steps = 2,000 steps, 1,000 HTTP calls


@pytest.mark.postgres
async def test_two_worker_processes_run_2000_steps_once_each_on_postgres(
    pg_url: str, http_server: RecordingServer, tmp_path: Path
) -> None:
    container = await build(Settings(db_url=pg_url, workers=0, load_plugins=False))
    try:
        record, version, _ = await container.service.save_workflow(
            chain("throughput", http_server.url, ["/a", "/b"])
        )
        with worker_group(pg_url, tmp_path, FAST) as group:
            first = await group.start(concurrency=32)
            second = await group.start(concurrency=32)
            started = time.perf_counter()
            created = await container.store.start_runs(
                numbered_runs(record, version, RUNS), container.clock()
            )
            assert all(was_created for _, was_created in created)

            async def all_finished() -> bool:
                return await ended_runs(pg_url) == RUNS

            await until(all_finished, 60, f"{RUNS} runs to finish", group, every_s=0.1)
            elapsed = time.perf_counter() - started
            assert first.running() and second.running(), group.logs()

        per_worker = await steps_ran_once(
            pg_url, http_server.requests, runs_count=RUNS, steps_per_run=4
        )
        assert len(http_server.requests) == RUNS * 2
        assert set(per_worker) == {first.pid, second.pid}
        assert min(per_worker.values()) >= RUNS * 4 * 0.1, per_worker
        print(
            f"\n[throughput] postgres, 2 worker processes x concurrency 32: {RUNS * 4} steps "
            f"({RUNS * 2} HTTP calls) of {RUNS} runs in {elapsed:.2f} s = "
            f"{RUNS * 4 / elapsed:,.0f} steps/s, {RUNS / elapsed:,.0f} runs/s; "
            f"steps per worker {sorted(per_worker.values(), reverse=True)}"
        )
    finally:
        await container.close()


# -- 2. SIGKILL: the lease expires, another worker re-runs the step with the same key ----------


async def test_sigkilled_worker_step_is_recovered_and_rerun_with_the_same_key(
    container: Container,
    db_url: str,
    http_server: RecordingServer,
    gates: list[Gate],
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    slow = gate(http_server, gates, "/slow", max_s=30, first_only=True)
    record, _, _ = await container.service.save_workflow(
        chain("killed", http_server.url, ["/slow"])
    )
    run, _ = await container.service.start_run(record.id, {"n": 1})
    with worker_group(db_url, tmp_path, SHORT_LEASE) as group:
        victim = await group.start()
        await until(requests_to(http_server, "/slow", 1), 15, "the first request", group)
        assert victim.kill() == -signal.SIGKILL
        held = await step_of(container, run.id, "call_slow")
        assert held.status == StepStatus.RUNNING and held.lease_owner is not None
        assert worker_pid(held.lease_owner) == victim.pid

        rescuer = await group.start()
        await until(run_status(container, run.id), 15, "the run to finish", group)
        assert rescuer.running()

    assert (await container.store.get_run(run.id)).status == RunStatus.SUCCEEDED
    key = f"{run.id}:call_slow:0"
    assert [r.headers[KEY] for r in http_server.to("/slow")] == [key, key]
    assert slow.seen == {key: 2}
    step = await step_of(container, run.id, "call_slow")
    assert step.status == StepStatus.SUCCEEDED
    assert step.recoveries == 1
    assert step.claims == 2
    recovered = await events_of(db_url, run.id, "step.recovered")
    assert [e["node_id"] for e in recovered] == ["call_slow"]
    workers = [e["worker"] for e in await events_of(db_url, run.id, "step.started", "call_slow")]
    assert [worker_pid(w) for w in workers] == [victim.pid, rescuer.pid]
    # The trigger step finished before the kill and was not repeated.
    assert (await step_of(container, run.id, "start")).claims == 1
    assert time.monotonic() - began < 30


# -- 3. graceful shutdown ----------------------------------------------------------------------


async def test_sigterm_drains_the_step_in_flight_and_keeps_its_lease(
    container: Container,
    db_url: str,
    http_server: RecordingServer,
    gates: list[Gate],
    tmp_path: Path,
) -> None:
    """The step outlives its lease during the grace period: heartbeats must go on while
    draining, or the standby worker would recover the step and call the endpoint again."""
    slow = gate(http_server, gates, "/slow", max_s=15, first_only=True)
    record, _, _ = await container.service.save_workflow(
        chain("drained", http_server.url, ["/slow"])
    )
    run, _ = await container.service.start_run(record.id, {"n": 1})
    env = {**FAST, "FLOWYARD_LEASE_S": "1.5", "FLOWYARD_REAP_INTERVAL_S": "0.3"}
    with worker_group(db_url, tmp_path, env) as group:
        draining = await group.start(env={"FLOWYARD_SHUTDOWN_GRACE_S": "10"})
        await until(requests_to(http_server, "/slow", 1), 15, "the request", group)
        standby = await group.start()
        draining.send(signal.SIGTERM)
        await asyncio.sleep(3.5)  # > 2 leases: only heartbeats keep the step ours
        assert draining.running(), "the worker did not wait for its step in flight"
        slow.open()
        assert await draining.wait_exit(5) == 0, group.logs()
        await until(run_status(container, run.id), 10, "the run to finish", group)
        assert standby.running()

    assert (await container.store.get_run(run.id)).status == RunStatus.SUCCEEDED
    assert slow.seen == {f"{run.id}:call_slow:0": 1}, "the step was executed twice"
    step = await step_of(container, run.id, "call_slow")
    assert (step.status, step.attempt, step.claims, step.recoveries) == (
        StepStatus.SUCCEEDED,
        1,
        1,
        0,
    )
    assert await events_of(db_url, run.id, "step.recovered") == []
    assert await events_of(db_url, run.id, "step.released") == []


async def test_sigterm_past_the_grace_period_releases_the_step_to_another_worker(
    container: Container,
    db_url: str,
    http_server: RecordingServer,
    gates: list[Gate],
    tmp_path: Path,
) -> None:
    slow = gate(http_server, gates, "/slow", max_s=20, first_only=True)
    record, _, _ = await container.service.save_workflow(
        chain("released", http_server.url, ["/slow"])
    )
    run, _ = await container.service.start_run(record.id, {"n": 1})
    with worker_group(db_url, tmp_path, SHORT_LEASE) as group:
        quitter = await group.start(env={"FLOWYARD_SHUTDOWN_GRACE_S": "0.2"})
        await until(requests_to(http_server, "/slow", 1), 15, "the request", group)
        stopped_at = time.monotonic()
        quitter.send(signal.SIGTERM)
        assert await quitter.wait_exit(10) == 0, group.logs()
        # The 0.2 s grace, not the step's 20 s: the rest is the process closing its pools,
        # which took 3.2-3.5 s on a loaded CI machine.
        assert time.monotonic() - stopped_at < 8

        step = await step_of(container, run.id, "call_slow")
        assert step.status == StepStatus.SCHEDULED
        assert step.attempt == 0, "the interrupted attempt was counted"
        assert step.lease_owner is None and step.recoveries == 0
        released = await events_of(db_url, run.id, "step.released")
        assert [worker_pid(e["worker"]) for e in released] == [quitter.pid]

        finisher = await group.start()
        await until(run_status(container, run.id), 10, "the run to finish", group)
        assert finisher.running()

    assert (await container.store.get_run(run.id)).status == RunStatus.SUCCEEDED
    key = f"{run.id}:call_slow:0"
    assert slow.seen == {key: 2}
    step = await step_of(container, run.id, "call_slow")
    assert (step.status, step.attempt, step.claims, step.recoveries) == (
        StepStatus.SUCCEEDED,
        1,
        2,
        0,
    )
    workers = [e["worker"] for e in await events_of(db_url, run.id, "step.started", "call_slow")]
    assert [worker_pid(w) for w in workers] == [quitter.pid, finisher.pid]


# -- 4. poison step: its worker keeps dying ------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_step_whose_workers_keep_dying_fails_as_worker_lost(
    container: Container,
    db_url: str,
    http_server: RecordingServer,
    gates: list[Gate],
    tmp_path: Path,
) -> None:
    deadly = gate(http_server, gates, "/deadly", max_s=30, first_only=False)
    record, _, _ = await container.service.save_workflow(
        chain("poison", http_server.url, ["/deadly"])
    )
    run, _ = await container.service.start_run(record.id, {"n": 1})
    env = {**SHORT_LEASE, "FLOWYARD_LEASE_S": "1.5", "FLOWYARD_MAX_RECOVERIES": "1"}
    with worker_group(db_url, tmp_path, env) as group:
        for victims in (1, 2):
            victim = await group.start()
            await until(
                requests_to(http_server, "/deadly", victims), 15, f"request {victims}", group
            )
            assert victim.kill() == -signal.SIGKILL
        await group.start()
        await until(run_status(container, run.id), 15, "the run to fail", group)

    final = await container.store.get_run(run.id)
    assert final.status == RunStatus.FAILED
    assert final.error is not None and final.error["type"] == "worker.lost"
    step = await step_of(container, run.id, "call_deadly")
    assert step.status == StepStatus.FAILED
    assert step.error is not None and step.error["type"] == "worker.lost"
    assert step.recoveries == 1
    assert sum(deadly.seen.values()) == 2, "the poison step was executed a third time"
    assert len(await events_of(db_url, run.id, "step.recovered")) == 1
    assert [e["error"]["type"] for e in await events_of(db_url, run.id, "step.failed")] == [
        "worker.lost"
    ]
