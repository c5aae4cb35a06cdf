"""Retry timing, run deadlines and lifecycle under a fake clock, with real workers and a local
HTTP server, on both backends.

The clock only moves when a test moves it, so every instant is exact. Workers still poll on
real time; "not claimed yet" is checked after the worker has made claim passes at the current
fake instant (counted by :class:`ClaimProbe`), never by sleeping for a while.
"""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from flowyard.domain.definition import RetryPolicy
from flowyard.domain.errors import ErrorInfo
from flowyard.domain.records import EventRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.engine.retry import backoff_delay
from flowyard.engine.transitions import on_failure
from flowyard.engine.validation import DefinitionValidator
from flowyard.expressions import ExpressionEngine
from flowyard.nodes.registry import default_registry
from flowyard.settings import Settings
from support.clock import FakeClock
from support.harness import (
    built,
    eventually,
    run_ends,
    start_run,
    step_of,
    step_reaches,
    working,
)
from support.http import Recorded, RecordingServer, Reply

# -- harness -------------------------------------------------------------------------------


def call(url: str, *, catch: list[dict[str, Any]] | None = None, **node: Any) -> dict[str, Any]:
    """trigger -> call (http) -> done; with a catch route to ``handle`` when given."""
    nodes: list[dict[str, Any]] = [
        {"id": "start", "type": "trigger", "next": "call"},
        {
            "id": "call",
            "type": "http",
            "config": {"method": "POST", "url": url},
            "next": "done",
            **({"catch": catch} if catch else {}),
            **node,
        },
        {"id": "done", "type": "end", "config": {"output": "{{ steps.call.output.body }}"}},
    ]
    if catch:
        nodes.append(
            {
                "id": "handle",
                "type": "end",
                "config": {
                    "output": {
                        "caught": "{{ steps.call.error.type }}",
                        "status": "{{ steps.call.error.details.status }}",
                    }
                },
            }
        )
    return {"name": "timing", "start": "start", "nodes": nodes}


def events_of(events: list[EventRecord], kind: str, node_id: str = "call") -> list[EventRecord]:
    return [e for e in events if e.type == kind and e.data.get("node_id") == node_id]


def retry_ats(events: list[EventRecord]) -> list[datetime]:
    return [datetime.fromisoformat(e.data["retry_at"]) for e in events_of(events, "step.retrying")]


def failing_forever(status: int, **headers: str) -> list[Reply]:
    return [Reply(status, {"error": status}, headers=dict(headers))]


# -- Retry-After ---------------------------------------------------------------------------


async def test_retry_after_is_a_floor_and_the_step_waits_until_retry_at(
    settings: Settings, http_server: RecordingServer
) -> None:
    too_many = Reply(429, {"error": "slow down"}, headers={"Retry-After": "30"})
    http_server.script("/x", [too_many, too_many, Reply(200, {"id": 7})])
    policy = {"max_attempts": 5, "initial_interval_s": 1, "backoff_rate": 2, "jitter": "none"}
    clock = FakeClock()
    t0 = clock.now

    def requests() -> int:
        return len(http_server.to("/x"))

    async with built(settings, clock) as c, working(c) as (_, probe):
        run = await start_run(c, call(f"{http_server.url}/x", retry=policy))
        for attempt in (1, 2):
            step = await step_reaches(c, run.id, "call", StepStatus.RETRYING, attempt)
            assert step.available_at == clock.now + timedelta(seconds=30)
            clock.advance(29)  # one second early: the step must stay put
            assert "call" not in await probe.passes_at(clock.now)
            assert requests() == attempt
            assert (await step_of(c, run.id, "call")) == step
            clock.advance(1)  # exactly retry_at
            await eventually(lambda n=attempt: requests() == n + 1, "the next attempt")
        finished = await run_ends(c, run.id)
        detail = await c.service.get_run(run.id)

    assert finished.status == RunStatus.SUCCEEDED
    assert finished.output == {"id": 7}
    step = next(s for s in detail.steps if s.node_id == "call")
    assert (step.status, step.attempt) == (StepStatus.SUCCEEDED, 3)
    retrying = events_of(detail.events, "step.retrying")
    assert [e.data["delay_s"] for e in retrying] == [30, 30]
    # Failure time + 30 s exactly (the policy alone would have said 1 s, then 2 s).
    assert [e.created_at for e in retrying] == [t0, t0 + timedelta(seconds=30)]
    assert retry_ats(detail.events) == [t0 + timedelta(seconds=30), t0 + timedelta(seconds=60)]
    # Each attempt was claimed at its retry_at, not a moment before.
    started = [e.created_at for e in events_of(detail.events, "step.started")]
    assert started == [t0, t0 + timedelta(seconds=30), t0 + timedelta(seconds=60)]


# -- permanent errors and exhausted retries ------------------------------------------------


@pytest.mark.parametrize("with_catch", [False, True], ids=["no-catch", "catch"])
async def test_a_400_fails_at_once_without_retrying(
    settings: Settings, http_server: RecordingServer, with_catch: bool
) -> None:
    http_server.script("/x", failing_forever(400))
    policy = {"max_attempts": 5, "initial_interval_s": 1, "jitter": "none"}
    catch = [{"errors": ["http.4*"], "next": "handle"}] if with_catch else None
    clock = FakeClock()
    async with built(settings, clock) as c, working(c):
        run = await start_run(c, call(f"{http_server.url}/x", retry=policy, catch=catch))
        finished = await run_ends(c, run.id)
        detail = await c.service.get_run(run.id)

    assert len(http_server.to("/x")) == 1
    assert events_of(detail.events, "step.retrying") == []
    step = next(s for s in detail.steps if s.node_id == "call")
    assert (step.status, step.attempt) == (StepStatus.FAILED, 1)
    assert step.error is not None and step.error["type"] == "http.400"
    if with_catch:
        assert finished.status == RunStatus.SUCCEEDED
        assert finished.output == {"caught": "http.400", "status": 400}
    else:
        assert finished.status == RunStatus.FAILED
        assert finished.error_type == "http.400"
        assert finished.error is not None and finished.error["details"]["node_id"] == "call"


async def test_a_500_exhausts_max_attempts_with_exponential_backoff_then_is_caught(
    settings: Settings, http_server: RecordingServer
) -> None:
    http_server.script("/x", failing_forever(500))
    policy = {"max_attempts": 4, "initial_interval_s": 2, "backoff_rate": 3, "jitter": "none"}
    clock = FakeClock()
    t0 = clock.now
    async with built(settings, clock) as c, working(c) as (_, probe):
        definition = call(
            f"{http_server.url}/x", retry=policy, catch=[{"errors": ["http.5*"], "next": "handle"}]
        )
        run = await start_run(c, definition)
        for attempt, delay in ((1, 2), (2, 6), (3, 18)):
            step = await step_reaches(c, run.id, "call", StepStatus.RETRYING, attempt)
            assert step.available_at == clock.now + timedelta(seconds=delay)
            clock.advance(delay - 0.5)
            assert "call" not in await probe.passes_at(clock.now)
            clock.advance(0.5)
        finished = await run_ends(c, run.id)
        detail = await c.service.get_run(run.id)

    assert len(http_server.to("/x")) == 4
    retrying = events_of(detail.events, "step.retrying")
    deltas = [
        (at - e.created_at).total_seconds()
        for at, e in zip(retry_ats(detail.events), retrying, strict=True)
    ]
    assert deltas == [2, 6, 18]
    started = [
        (e.created_at - t0).total_seconds() for e in events_of(detail.events, "step.started")
    ]
    assert started == [0, 2, 8, 26]
    step = next(s for s in detail.steps if s.node_id == "call")
    assert (step.status, step.attempt) == (StepStatus.FAILED, 4)
    assert [e.type for e in detail.events].count("step.caught") == 1
    assert finished.status == RunStatus.SUCCEEDED
    assert finished.output == {"caught": "http.500", "status": 500}


# -- jitter --------------------------------------------------------------------------------


def test_full_jitter_is_a_uniform_draw_between_zero_and_the_base() -> None:
    policy = RetryPolicy(
        max_attempts=20, initial_interval_s=2, backoff_rate=3, max_interval_s=100, jitter="full"
    )
    rng, replay = random.Random(20310304), random.Random(20310304)
    for attempt in range(1, 10):
        base = min(100.0, 2.0 * 3.0 ** (attempt - 1))
        delays = [backoff_delay(policy, attempt, rand=rng.random) for _ in range(200)]
        assert delays == [replay.random() * base for _ in range(200)]
        assert all(0 <= d <= base for d in delays)
        # Spread over the whole range, not bunched at the base.
        assert min(delays) < base * 0.1 and max(delays) > base * 0.9
    # The extremes of the draw, and Retry-After as a floor over a jittered delay.
    assert backoff_delay(policy, 3, rand=lambda: 0.0) == 0.0
    assert backoff_delay(policy, 3, rand=lambda: 1.0) == 18.0
    assert backoff_delay(policy, 3, retry_after_s=30, rand=lambda: 0.5) == 30.0
    assert backoff_delay(policy, 3, retry_after_s=1, rand=lambda: 0.5) == 9.0


def test_on_failure_schedules_the_jittered_retry_from_the_failure_time() -> None:
    validator = DefinitionValidator(default_registry(load_plugins=False), ExpressionEngine())
    retry = {"max_attempts": 5, "initial_interval_s": 4, "backoff_rate": 2, "jitter": "full"}
    wf = validator.compile(call("http://127.0.0.1:9/x", retry=retry))
    now = FakeClock()()
    rng, replay = random.Random(7), random.Random(7)
    error = ErrorInfo("http.503", "unavailable", transient=True)
    for attempt in range(1, 5):
        tr = on_failure(wf, "call", error, attempt=attempt, iterations={}, now=now, rand=rng.random)
        base = 4.0 * 2.0 ** (attempt - 1)
        delay = replay.random() * base
        assert tr.step_status == StepStatus.RETRYING
        assert tr.retry_at == now + timedelta(seconds=delay)
        assert now <= tr.retry_at <= now + timedelta(seconds=base)


async def test_a_worker_with_a_seeded_rand_retries_at_the_jittered_instants(
    settings: Settings, http_server: RecordingServer
) -> None:
    unavailable = Reply(503, {"error": "later"})
    http_server.script("/x", [unavailable, unavailable, Reply(200, {"id": 1})])
    policy = {"max_attempts": 3, "initial_interval_s": 10, "backoff_rate": 2, "jitter": "full"}
    clock = FakeClock()
    replay = random.Random(99)
    async with built(settings, clock) as c:
        worker = c.new_worker()
        worker.executor.rand = random.Random(99).random
        task = asyncio.create_task(worker.run())
        try:
            run = await start_run(c, call(f"{http_server.url}/x", retry=policy))
            for attempt, base in ((1, 10.0), (2, 20.0)):
                step = await step_reaches(c, run.id, "call", StepStatus.RETRYING, attempt)
                delay = timedelta(seconds=replay.random() * base)
                assert step.available_at == clock.now + delay
                assert delay <= timedelta(seconds=base)
                clock.set(step.available_at)
            finished = await run_ends(c, run.id)
        finally:
            worker.stop()
            await task
    assert finished.status == RunStatus.SUCCEEDED
    assert len(http_server.to("/x")) == 3


# -- durability of a long backoff ----------------------------------------------------------


async def test_a_restart_during_a_long_backoff_loses_nothing(
    settings: Settings, http_server: RecordingServer
) -> None:
    http_server.script("/x", [Reply(503, {"error": "later"}), Reply(200, {"id": 9})])
    policy = {"max_attempts": 3, "initial_interval_s": 600, "max_interval_s": 600, "jitter": "none"}
    clock = FakeClock()
    t0 = clock.now
    async with built(settings, clock) as first:
        async with working(first):
            run = await start_run(first, call(f"{http_server.url}/x", retry=policy))
            step = await step_reaches(first, run.id, "call", StepStatus.RETRYING, 1)
        assert step.available_at == t0 + timedelta(minutes=10)
    # Everything above is gone but the database: a new process picks the run up.
    async with built(settings, clock) as second, working(second) as (worker, probe):
        assert "call" not in await probe.passes_at(clock.now)
        assert len(http_server.to("/x")) == 1
        clock.advance(600)
        finished = await run_ends(second, run.id)
        detail = await second.service.get_run(run.id)

    assert finished.status == RunStatus.SUCCEEDED
    assert finished.output == {"id": 9}
    assert worker.stats.committed == 2  # the retried call and 'done'
    requests = http_server.to("/x")
    assert len(requests) == 2
    assert {r.headers["Idempotency-Key"] for r in requests} == {f"{run.id}:call:0"}
    step = next(s for s in detail.steps if s.node_id == "call")
    assert (step.status, step.attempt) == (StepStatus.SUCCEEDED, 2)
    started = [e.created_at for e in events_of(detail.events, "step.started")]
    assert started == [t0, t0 + timedelta(minutes=10)]


# -- run deadline --------------------------------------------------------------------------


async def test_a_run_past_its_timeout_is_timed_out_during_a_backoff(
    settings: Settings, http_server: RecordingServer
) -> None:
    http_server.script("/x", failing_forever(503))
    policy = {
        "max_attempts": 5,
        "initial_interval_s": 3600,
        "max_interval_s": 3600,
        "jitter": "none",
    }
    clock = FakeClock()
    t0 = clock.now
    async with built(settings, clock) as c, working(c) as (_, probe):
        definition = {**call(f"{http_server.url}/x", retry=policy), "run_timeout_s": 60}
        run = await start_run(c, definition)
        assert run.deadline_at == t0 + timedelta(seconds=60)
        await step_reaches(c, run.id, "call", StepStatus.RETRYING, 1)
        clock.advance(61)
        finished = await run_ends(c, run.id)
        # Its retry falls due later: nothing runs for a timed-out run.
        clock.advance(3600)
        assert "call" not in await probe.passes_at(clock.now)
        detail = await c.service.get_run(run.id)

    assert finished.status == RunStatus.TIMED_OUT
    assert finished.error_type == "run.timeout"
    assert finished.error is not None and finished.error["type"] == "run.timeout"
    assert finished.finished_at == t0 + timedelta(seconds=61)
    assert len(http_server.to("/x")) == 1
    step = next(s for s in detail.steps if s.node_id == "call")
    assert step.status == StepStatus.CANCELLED
    assert {s.node_id for s in detail.steps} == {"start", "call"}
    timed_out = [e for e in detail.events if e.type == "run.timed_out"]
    assert len(timed_out) == 1 and timed_out[0].data["error"]["type"] == "run.timeout"


# -- pause keeps the deadline --------------------------------------------------------------


async def test_pausing_during_a_backoff_holds_the_step_and_resume_releases_it_at_once(
    settings: Settings, http_server: RecordingServer
) -> None:
    http_server.script("/x", [Reply(503, {"error": "later"}), Reply(200, {"id": 3})])
    policy = {"max_attempts": 3, "initial_interval_s": 30, "jitter": "none"}
    clock = FakeClock()
    t0 = clock.now
    async with built(settings, clock) as c, working(c) as (_, probe):
        run = await start_run(c, call(f"{http_server.url}/x", retry=policy))
        await step_reaches(c, run.id, "call", StepStatus.RETRYING, 1)
        paused = await c.service.pause_run(run.id)
        assert paused.status == RunStatus.PAUSED
        clock.advance(31)  # past retry_at
        assert "call" not in await probe.passes_at(clock.now)
        assert len(http_server.to("/x")) == 1
        held = await step_of(c, run.id, "call")
        assert held is not None
        assert (held.status, held.available_at) == (
            StepStatus.RETRYING,
            t0 + timedelta(seconds=30),
        )
        await c.service.resume_run(run.id)
        # Its deadline passed during the pause: claimed without the clock moving again.
        finished = await run_ends(c, run.id)
        detail = await c.service.get_run(run.id)

    assert finished.status == RunStatus.SUCCEEDED
    assert len(http_server.to("/x")) == 2
    started = [e.created_at for e in events_of(detail.events, "step.started")]
    assert started == [t0, t0 + timedelta(seconds=31)]
    kinds = [e.type for e in detail.events]
    assert kinds.index("run.paused") < kinds.index("run.resumed")


# -- cancel stops a running step -----------------------------------------------------------


async def test_cancel_stops_a_running_step_without_waiting_for_the_server(
    settings: Settings, http_server: RecordingServer
) -> None:
    release = threading.Event()
    answered = threading.Event()

    def slow(_: Recorded) -> Reply:
        # Far longer than the test needs: the answer only comes when the test releases it.
        release.wait(30)
        answered.set()
        return Reply(200, {"late": True})

    http_server.on("/slow", slow)
    clock = FakeClock()
    try:
        # lease 0.6 s: the worker's heartbeat (lease / 3) notices the cancel within 0.2 s.
        async with built(settings, clock, lease_s=0.6) as c, working(c) as (worker, probe):
            run = await start_run(c, call(f"{http_server.url}/slow"))
            await eventually(lambda: http_server.to("/slow"), "the request to reach the server")
            assert worker.in_flight == 1
            cancelled = await c.service.cancel_run(run.id, reason="operator")
            assert cancelled.status == RunStatus.CANCELLED
            await eventually(lambda: worker.in_flight == 0, "the worker to drop the step")
            assert not answered.is_set()  # the server is still holding the request
            release.set()
            await eventually(answered.is_set, "the server to answer")
            await probe.passes_at(clock.now)
            detail = await c.service.get_run(run.id)
            stats = worker.stats
    finally:
        release.set()

    assert detail.run.status == RunStatus.CANCELLED
    step = next(s for s in detail.steps if s.node_id == "call")
    assert step.status == StepStatus.CANCELLED
    assert step.output is None
    assert {s.node_id for s in detail.steps} == {"start", "call"}  # no next step
    kinds = [e.type for e in detail.events]
    assert "run.cancelled" in kinds
    assert not events_of(detail.events, "step.succeeded")
    # Only the trigger's completion was committed; the call produced none to discard.
    assert (stats.committed, stats.discarded) == (1, 0)
    assert len(http_server.to("/slow")) == 1
