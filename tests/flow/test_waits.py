"""Durable waits under a fake clock, with real workers, on both backends: the campaign sample
(send -> wait up to 48 h for ``reply_received`` -> analyse -> route; on timeout follow up),
delays, buffered signals and restarts. Nothing sleeps for the waits: the clock moves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flowyard.bootstrap import Container
from flowyard.domain.errors import Conflict
from flowyard.domain.ids import RunId
from flowyard.domain.records import RunRecord, StepRecord
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.settings import Settings
from support.clock import FakeClock
from support.harness import built, eventually, run_ends, working

CAMPAIGN = json.loads(
    (Path(__file__).parents[2] / "examples" / "campaign_outreach.json").read_text()
)
HOUR = 3600.0
LEAD = {"email": "ada@example.com", "name": "Ada"}


async def start(container: Container, definition: dict[str, Any], data: Any) -> RunRecord:
    record, _, _ = await container.service.save_workflow(definition)
    run, _ = await container.service.start_run(record.id, data)
    return run


async def parked(container: Container, run_id: RunId, node_id: str, iteration: int) -> StepRecord:
    """Wait until ``node_id`` (that iteration) is committed as waiting."""

    async def check() -> StepRecord | None:
        for step in await container.store.list_steps(run_id):
            if (step.node_id, step.iteration, step.status) == (
                node_id,
                iteration,
                StepStatus.WAITING,
            ):
                return step
        return None

    return await eventually(check, f"{node_id}#{iteration} to wait")


async def test_the_48h_wait_times_out_without_sleeping_and_follows_up(settings: Settings) -> None:
    clock = FakeClock()
    t0 = clock.now
    async with built(settings, clock) as container, working(container) as (_, probe):
        run = await start(container, CAMPAIGN, LEAD)
        waiting = await parked(container, run.id, "wait_reply", 0)
        assert waiting.wait_until is not None
        assert (waiting.wait_until - t0).total_seconds() == 48 * HOUR
        assert (await container.store.get_run(run.id)).status == RunStatus.WAITING
        # One active row while it waits: the waiting step.
        active = [s for s in await container.store.list_steps(run.id) if not s.status.is_terminal]
        assert [s.node_id for s in active] == ["wait_reply"]

        clock.advance(48 * HOUR - 1)
        assert "wait_reply" not in await probe.passes_at(clock.now)
        clock.advance(1)  # 48 h: no reply, follow up with message 2
        second = await parked(container, run.id, "wait_reply", 1)
        assert second.wait_until == clock.now + (waiting.wait_until - t0)
        clock.advance(48 * HOUR)  # message 3
        await parked(container, run.id, "wait_reply", 2)
        clock.advance(48 * HOUR)  # no more messages: give up
        ended = await run_ends(container, run.id)
        steps = await container.store.list_steps(run.id)

    assert ended.status == RunStatus.SUCCEEDED
    assert ended.output == {"outcome": "no_reply", "messages": 3}
    sends = [s for s in steps if s.node_id == "send"]
    assert [s.iteration for s in sends] == [0, 1, 2]  # each iteration's steps kept distinct
    waits = [s for s in steps if s.node_id == "wait_reply"]
    assert [s.output["timed_out"] for s in waits] == [True, True, True]


async def test_a_reply_at_47h_routes_on_the_reply(settings: Settings) -> None:
    clock = FakeClock()
    async with built(settings, clock) as container, working(container):
        run = await start(container, CAMPAIGN, LEAD)
        await parked(container, run.id, "wait_reply", 0)
        clock.advance(47 * HOUR)
        signal, woke = await container.service.send_signal(
            run.id, "reply_received", {"text": "Yes, I'm interested!"}, actor="user:sam"
        )
        assert woke
        ended = await run_ends(container, run.id)
        steps = {s.node_id: s for s in await container.store.list_steps(run.id)}
        signals = await container.store.list_signals(run.id)

    assert ended.status == RunStatus.SUCCEEDED
    assert ended.output == {"outcome": "meeting", "reply": "Yes, I'm interested!"}
    reply = steps["wait_reply"].output
    assert reply["payload"] == {"text": "Yes, I'm interested!"}
    assert (reply["timed_out"], reply["sent_by"]) == (False, "user:sam")
    assert "follow_up" not in steps
    assert [(s.id, s.step_id) for s in signals] == [(signal.id, steps["wait_reply"].id)]


async def test_a_worker_restart_during_the_wait_changes_nothing(settings: Settings) -> None:
    clock = FakeClock()
    async with built(settings, clock) as container, working(container):
        run = await start(container, CAMPAIGN, LEAD)
        before = await parked(container, run.id, "wait_reply", 0)
    # Every process is gone; a new one comes up 30 hours later.
    clock.advance(30 * HOUR)
    async with built(settings, clock) as container:
        after = await parked(container, run.id, "wait_reply", 0)
        assert (after.id, after.wait_until, after.available_at) == (
            before.id,
            before.wait_until,
            before.available_at,
        )
        async with working(container) as (_, probe):
            await probe.passes_at(clock.now)
            clock.advance(17 * HOUR)
            await container.service.send_signal(run.id, "reply_received", {"text": "STOP"})
            ended = await run_ends(container, run.id)
    assert ended.output == {"outcome": "unsubscribed"}


async def test_a_signal_sent_before_the_wait_is_buffered_not_lost(settings: Settings) -> None:
    clock = FakeClock()
    async with built(settings, clock) as container:
        run = await start(container, CAMPAIGN, LEAD)
        _, woke = await container.service.send_signal(
            run.id, "reply_received", {"text": "maybe later"}
        )
        assert not woke  # nothing waits yet: buffered
        async with working(container):
            ended = await run_ends(container, run.id)
        events = [e.type for e in await container.store.list_events(run.id)]
    assert ended.output == {"outcome": "nurture", "reply": "maybe later"}
    assert "step.waiting" not in events  # the wait took the buffered signal at once


async def test_a_signal_for_a_finished_run_is_refused(container: Container) -> None:
    run = await start(container, CAMPAIGN, LEAD)
    await container.service.cancel_run(run.id, actor="test")
    with pytest.raises(Conflict, match="has ended"):
        await container.service.send_signal(run.id, "reply_received", {})


DELAYED = {
    "name": "delayed",
    "start": "start",
    "nodes": [
        {"id": "start", "type": "trigger", "next": "wait"},
        {"id": "wait", "type": "delay", "config": {"duration": "{{ input.wait }}"}, "next": "at"},
        {"id": "at", "type": "delay", "config": {"until": "{{ input.until }}"}, "next": "done"},
        {"id": "done", "type": "end", "config": {"output": "{{ steps.at.output.until }}"}},
    ],
}


async def test_delays_wait_a_duration_then_until_a_timestamp(settings: Settings) -> None:
    clock = FakeClock()
    t0 = clock.now
    async with built(settings, clock) as container, working(container) as (_, probe):
        target = t0.replace(hour=0).isoformat()  # already past: no wait
        run = await start(container, DELAYED, {"wait": "PT24H", "until": target})
        step = await parked(container, run.id, "wait", 0)
        assert step.wait_until is not None and (step.wait_until - t0).total_seconds() == 86400
        clock.advance(86400 - 1)
        assert "wait" not in await probe.passes_at(clock.now)
        clock.advance(1)
        ended = await run_ends(container, run.id)
    assert ended.status == RunStatus.SUCCEEDED
    assert ended.output == t0.replace(hour=0).isoformat()


async def test_a_delay_until_a_future_timestamp_and_a_bad_duration(settings: Settings) -> None:
    clock = FakeClock()
    t0 = clock.now
    later = t0.replace(year=t0.year + 1)
    async with built(settings, clock) as container, working(container):
        run = await start(container, DELAYED, {"wait": 0, "until": later.isoformat()})
        step = await parked(container, run.id, "at", 0)
        assert step.wait_until == later
        bad = await start(container, DELAYED, {"wait": "soon", "until": later.isoformat()})
        failed = await run_ends(container, bad.id)
        assert failed.status == RunStatus.FAILED
        assert failed.error_type == "config.duration"
        clock.set(later)
        ended = await run_ends(container, run.id)
    assert ended.output == later.isoformat()


async def test_pause_and_resume_during_a_wait_keep_the_timer_and_the_waiting_status(
    settings: Settings,
) -> None:
    clock = FakeClock()
    async with built(settings, clock) as container, working(container):
        run = await start(container, CAMPAIGN, LEAD)
        before = await parked(container, run.id, "wait_reply", 0)
        await container.service.pause_run(run.id, actor="test")
        _, woke = await container.service.send_signal(run.id, "reply_received", {"text": "yes"})
        assert woke  # due now, but held while paused
        clock.advance(HOUR)
        resumed = await container.service.resume_run(run.id, actor="test")
        assert resumed.status in (RunStatus.WAITING, RunStatus.RUNNING)
        ended = await run_ends(container, run.id)
        steps = {s.node_id: s for s in await container.store.list_steps(run.id)}
    assert ended.output == {"outcome": "meeting", "reply": "yes"}
    assert steps["wait_reply"].wait_until == before.wait_until


async def test_resuming_a_run_that_only_waits_shows_it_waiting(settings: Settings) -> None:
    clock = FakeClock()
    async with built(settings, clock) as container, working(container):
        run = await start(container, CAMPAIGN, LEAD)
        await parked(container, run.id, "wait_reply", 0)
        await container.service.pause_run(run.id, actor="test")
        resumed = await container.service.resume_run(run.id, actor="test")
        assert resumed.status == RunStatus.WAITING
