"""The scheduler over a real store (SQLite and PostgreSQL) and a clock the test moves: ticks
fire once, overlap policies, catch-up after a gap, jitter, a workflow that can no longer
start, trigger now. No workers run here: the runs the schedules start stay pending, which
is what the overlap policies look at."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from flowyard.bootstrap import Container, build
from flowyard.domain.errors import InvalidInput, NotFound
from flowyard.domain.schedules import TickOutcome
from flowyard.domain.statuses import RunStatus
from flowyard.service.schedules import ScheduleChange
from flowyard.settings import Settings
from flowyard.triggers.schedules.ticks import jitter
from support.clock import EPOCH, FakeClock

DEFINITION = {
    "name": "report",
    "input_schema": {"type": "object", "required": ["region"]},
    "start": "a",
    "nodes": [{"id": "a", "type": "set", "config": {"values": {"done": True}}}],
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def box(db_url: str, clock: FakeClock) -> AsyncIterator[Container]:
    c = await build(Settings(db_url=db_url, workers=0, load_plugins=False), clock=clock)
    await c.service.create_workflow(DEFINITION, "tester")
    try:
        yield c
    finally:
        await c.close()


async def make(box: Container, **fields: Any) -> str:
    values: dict[str, Any] = {
        "name": "every-10s",
        "workflow": "report",
        "every": "10s",
        "input": {"region": "EU"},
        **fields,
    }
    view = await box.schedules.create(ScheduleChange.of(values), actor="tester")
    return view.record.id


async def runs_of(box: Container, schedule_id: str) -> list[Any]:
    return await box.service.list_runs(schedule_id=schedule_id, limit=500)


async def test_a_tick_fires_once_and_the_timetable_moves_on(
    box: Container, clock: FakeClock
) -> None:
    sid = await make(box)
    view = await box.schedules.get(sid)
    assert view.upcoming == [EPOCH + timedelta(seconds=10 * k) for k in range(1, 6)]
    await box.scheduler.run_once()
    assert await runs_of(box, sid) == []  # not due yet

    clock.advance(10)
    await box.scheduler.run_once()
    await box.scheduler.run_once()  # the same instant again: nothing more
    [run] = await runs_of(box, sid)
    assert run.schedule_id == sid and run.input == {"region": "EU"}
    events = await box.service.list_events(run.id)
    assert events[0].actor == "schedule:every-10s"
    record = (await box.schedules.get(sid)).record
    assert (record.fired, record.last_run_id) == (1, run.id)
    assert record.next_tick_at == EPOCH + timedelta(seconds=20)
    assert box.metrics.schedule_ticks.labels("fired")._value.get() == 1

    clock.advance(10)
    await box.scheduler.run_once()
    assert len(await runs_of(box, sid)) == 2


async def test_overlap_skip_records_the_tick_while_the_previous_run_is_unfinished(
    box: Container, clock: FakeClock
) -> None:
    sid = await make(box, overlap="skip")
    clock.advance(10)
    await box.scheduler.run_once()
    [first] = await runs_of(box, sid)
    clock.advance(10)
    await box.scheduler.run_once()
    assert [r.id for r in await runs_of(box, sid)] == [first.id]
    [skipped, fired] = await box.schedules.fires(sid)
    assert skipped.outcome == TickOutcome.SKIPPED and f"run {first.id}" in (skipped.reason or "")
    assert fired.run_id == first.id

    await box.service.cancel_run(first.id, actor="tester")  # the previous run ended
    clock.advance(10)
    await box.scheduler.run_once()
    assert len(await runs_of(box, sid)) == 2
    record = (await box.schedules.get(sid)).record
    assert (record.fired, record.skipped) == (2, 1)


async def test_overlap_cancel_previous_cancels_then_starts(
    box: Container, clock: FakeClock
) -> None:
    sid = await make(box, overlap="cancel_previous")
    clock.advance(10)
    await box.scheduler.run_once()
    clock.advance(10)
    await box.scheduler.run_once()
    second, first = await runs_of(box, sid)
    assert first.status == RunStatus.CANCELLED
    assert second.status == RunStatus.PENDING
    cancelled = [e for e in await box.service.list_events(first.id) if e.type == "run.cancelled"]
    assert cancelled and cancelled[0].actor == "schedule:every-10s"


async def test_catch_up_one_after_a_gap(box: Container, clock: FakeClock) -> None:
    sid = await make(box, catch_up="one", misfire_grace_s=5)
    clock.advance(100.5)  # ticks 10 .. 100 came due while nothing ran
    await box.scheduler.run_once()
    ticks = sorted(f.tick_at for f in await box.schedules.fires(sid))
    assert ticks == [EPOCH + timedelta(seconds=90), EPOCH + timedelta(seconds=100)]
    record = (await box.schedules.get(sid)).record
    assert (record.fired, record.missed) == (2, 8)
    assert record.next_tick_at == EPOCH + timedelta(seconds=110)


async def test_catch_up_skip_after_a_gap(box: Container, clock: FakeClock) -> None:
    sid = await make(box, catch_up="skip", misfire_grace_s=5)
    clock.advance(100.5)
    await box.scheduler.run_once()
    assert [f.tick_at for f in await box.schedules.fires(sid)] == [EPOCH + timedelta(seconds=100)]
    assert (await box.schedules.get(sid)).record.missed == 9


async def test_jitter_delays_the_due_time(box: Container, clock: FakeClock) -> None:
    sid = await make(box, jitter_s=5)
    record = (await box.schedules.get(sid)).record
    tick = EPOCH + timedelta(seconds=10)
    assert record.next_fire_at == tick + jitter(sid, tick, 5)
    assert record.next_fire_at is not None
    clock.set(record.next_fire_at - timedelta(milliseconds=1))
    await box.scheduler.run_once()
    assert await runs_of(box, sid) == []
    clock.set(record.next_fire_at)
    await box.scheduler.run_once()
    assert len(await runs_of(box, sid)) == 1


async def test_a_tick_whose_run_cannot_start_is_skipped_with_the_reason(
    box: Container, clock: FakeClock
) -> None:
    sid = await make(box)
    wf = await box.service.get_workflow("report")
    await box.service.archive_workflow(wf.id)
    clock.advance(10)
    await box.scheduler.run_once()
    [fire] = await box.schedules.fires(sid)
    assert fire.outcome == TickOutcome.SKIPPED and "archived" in (fire.reason or "")
    assert (await box.schedules.get(sid)).record.next_tick_at == EPOCH + timedelta(seconds=20)


async def test_a_scheduled_run_gets_its_correlation_key_and_a_held_unique_one_skips_the_tick(
    box: Container, clock: FakeClock
) -> None:
    await box.service.create_workflow(
        {
            **DEFINITION,
            "name": "keyed",
            "correlation": {"key": "{{ input.region }}", "unique": True},
        },
        "tester",
    )
    sid = await make(box, name="keyed-10s", workflow="keyed")  # overlap: allow
    clock.advance(10)
    await box.scheduler.run_once()
    [first] = await runs_of(box, sid)
    assert (first.correlation_key, first.correlation_unique) == ("EU", True)

    clock.advance(10)  # the first run still holds "EU": the tick is skipped, not stuck
    await box.scheduler.run_once()
    assert [r.id for r in await runs_of(box, sid)] == [first.id]
    [skipped, _] = await box.schedules.fires(sid)
    assert skipped.outcome == TickOutcome.SKIPPED and skipped.run_id is None
    assert f"run {first.id} holds correlation key 'EU'" in (skipped.reason or "")
    record = (await box.schedules.get(sid)).record
    assert (record.fired, record.skipped, record.last_run_id) == (1, 1, first.id)
    assert record.next_tick_at == EPOCH + timedelta(seconds=30)

    await box.service.cancel_run(first.id, actor="tester")  # the key is free again
    clock.advance(10)
    await box.scheduler.run_once()
    second, _ = await runs_of(box, sid)
    assert second.id != first.id and second.correlation_key == "EU"


async def test_pause_resume_and_trigger_now(box: Container, clock: FakeClock) -> None:
    sid = await make(box)
    paused = await box.schedules.pause(sid)
    assert paused.upcoming == [] and paused.record.next_fire_at is None
    clock.advance(30)
    await box.scheduler.run_once()
    assert await runs_of(box, sid) == []

    fired = await box.schedules.trigger(sid)  # fires while paused
    assert fired.manual and fired.outcome == TickOutcome.FIRED and fired.tick_at == clock.now
    assert [r.id for r in await runs_of(box, sid)] == [fired.run_id]

    resumed = await box.schedules.resume(sid)  # from the next tick on, nothing caught up
    assert resumed.record.next_tick_at == EPOCH + timedelta(seconds=40)


async def test_changing_the_timetable_starts_from_now(box: Container, clock: FakeClock) -> None:
    sid = await make(box)
    clock.advance(3)
    view = await box.schedules.update(sid, ScheduleChange(cron="0 * * * *", timezone="UTC"))
    assert view.record.spec.every_s is None and view.record.spec.cron == "0 * * * *"
    assert view.upcoming[0] == EPOCH + timedelta(hours=1)


async def test_bad_schedules_are_refused_with_every_problem(box: Container) -> None:
    values = {
        "name": "-bad",
        "workflow": "report",
        "cron": "61 * * * *",
        "timezone": "Mars/Base",
        "catch_up": "most",
        "max_catch_up": 0,
        "jitter_s": -1,
    }
    with pytest.raises(InvalidInput) as refused:
        await box.schedules.create(ScheduleChange.of(values), actor="tester")
    pointers = {p.pointer for p in refused.value.problems}
    assert pointers == {"/name", "/cron", "/timezone", "/catch_up", "/max_catch_up", "/jitter_s"}

    with pytest.raises(InvalidInput) as unfit:
        await make(box, input={"country": "FR"})
    assert [p.pointer for p in unfit.value.problems] == ["/input"]
    with pytest.raises(InvalidInput) as both:
        await make(box, cron="* * * * *")
    assert [(p.pointer, p.message) for p in both.value.problems] == [
        ("/every", "give cron or every, not both")
    ]
    with pytest.raises(NotFound):
        await make(box, workflow="nope")
