"""The store contract for schedules and their fired ticks, on SQLite and PostgreSQL (the
``store`` fixture runs each test on both)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from contract.helpers import T0, at, make_workflow, new_run
from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import Conflict, NotFound
from flowyard.domain.records import WorkflowRecord
from flowyard.domain.schedules import (
    Advance,
    ScheduleRecord,
    ScheduleSpec,
    TickFire,
    TickOutcome,
    new_schedule_id,
)
from flowyard.store import Store


def schedule(workflow: WorkflowRecord, name: str = "nightly", *, due: float = 10) -> ScheduleRecord:
    spec = ScheduleSpec(
        name=name,
        workflow_id=workflow.id,
        cron=None,
        every_s=10,
        timezone="UTC",
        anchor_at=at(due),
        input={"n": 1},
    )
    return ScheduleRecord(
        id=new_schedule_id(),
        spec=spec,
        next_tick_at=at(due),
        next_fire_at=at(due),
        last_tick_at=None,
        last_run_id=None,
        fired=0,
        skipped=0,
        missed=0,
        created_at=T0,
        updated_at=T0,
        created_by="alice",
    )


def fire(workflow: WorkflowRecord, tick: float, sch: ScheduleRecord) -> TickFire:
    return TickFire(at(tick), replace(new_run(workflow), schedule_id=sch.id, actor="schedule:x"))


async def test_create_read_update_delete(store: Store) -> None:
    wf = await make_workflow(store)
    audit = AuditEntry("schedule.create", actor="alice")
    created = await store.create_schedule(schedule(wf), audit=audit)
    assert audit.written and (audit.target_type, audit.target_id) == ("schedule", created.id)
    assert created.spec.input == {"n": 1} and created.next_fire_at == at(10)
    assert await store.get_schedule(created.id) == created
    assert await store.get_schedule("nightly") == created
    with pytest.raises(Conflict, match="already exists"):
        await store.create_schedule(schedule(wf))

    other = await store.create_schedule(schedule(wf, "hourly"))
    assert [s.spec.name for s in await store.list_schedules()] == ["hourly", "nightly"]
    assert [s.spec.name for s in await store.list_schedules(after="hourly")] == ["nightly"]
    assert [s.spec.name for s in await store.list_schedules(limit=1)] == ["hourly"]

    paused = replace(created.spec, enabled=False, jitter_s=5.0)
    updated = await store.update_schedule(created.id, paused, Advance(None, None), at(1))
    assert updated.spec == paused and updated.next_tick_at is None
    assert updated.updated_at == at(1) and updated.created_at == T0
    with pytest.raises(Conflict):
        await store.update_schedule(
            created.id, replace(paused, name="hourly"), Advance(None, None), at(1)
        )

    await store.delete_schedule(other.id, audit=AuditEntry("schedule.delete", actor="alice"))
    with pytest.raises(NotFound):
        await store.get_schedule(other.id)
    with pytest.raises(NotFound):
        await store.delete_schedule(other.id)
    with pytest.raises(NotFound):
        await store.update_schedule(other.id, paused, Advance(None, None), at(1))


async def test_a_fire_records_the_tick_starts_the_run_and_moves_on(store: Store) -> None:
    wf = await make_workflow(store)
    sch = await store.create_schedule(schedule(wf))
    recorded = await store.fire_schedule(
        sch.id, at(10), [fire(wf, 10, sch)], Advance(at(20), at(21), missed=3), at(10.5)
    )
    assert recorded is not None
    [tick] = recorded
    assert (tick.tick_at, tick.outcome, tick.fired_at) == (at(10), TickOutcome.FIRED, at(10.5))
    assert tick.run_id is not None

    run = await store.get_run(tick.run_id)
    assert run.schedule_id == sch.id
    [created] = [e for e in await store.list_events(run.id) if e.type == "run.created"]
    assert created.data["schedule_id"] == sch.id and created.actor == "schedule:x"

    after = await store.get_schedule(sch.id)
    assert (after.next_tick_at, after.next_fire_at) == (at(20), at(21))
    assert (after.fired, after.skipped, after.missed) == (1, 0, 3)
    assert (after.last_tick_at, after.last_run_id) == (at(10), run.id)
    assert await store.list_schedule_fires(sch.id) == recorded
    assert [r.id for r in await store.list_runs(schedule_id=sch.id)] == [run.id]


async def test_a_tick_fired_by_another_worker_starts_nothing(store: Store) -> None:
    wf = await make_workflow(store)
    sch = await store.create_schedule(schedule(wf))
    first = await store.fire_schedule(
        sch.id, at(10), [fire(wf, 10, sch)], Advance(at(20), at(20)), at(10)
    )
    assert first is not None and len(first) == 1
    # A worker that read the schedule before the first fire committed: it expects tick 10.
    late = await store.fire_schedule(
        sch.id, at(10), [fire(wf, 10, sch)], Advance(at(20), at(20)), at(10)
    )
    assert late is None
    # Even without the timetable check (a manual trigger), the unique key refuses tick 10.
    again = await store.fire_schedule(sch.id, None, [fire(wf, 10, sch)], None, at(11))
    assert again == []
    assert len(await store.list_runs(schedule_id=sch.id)) == 1
    assert (await store.get_schedule(sch.id)).fired == 1


async def test_concurrent_fires_of_one_tick_start_one_run(store: Store) -> None:
    wf = await make_workflow(store)
    sch = await store.create_schedule(schedule(wf))
    results = await asyncio.gather(
        *(
            store.fire_schedule(
                sch.id, at(10), [fire(wf, 10, sch)], Advance(at(20), at(20)), at(10)
            )
            for _ in range(8)
        )
    )
    assert sum(len(r) for r in results if r) == 1
    assert len(await store.list_runs(schedule_id=sch.id)) == 1


async def test_disabled_schedules_do_not_fire(store: Store) -> None:
    wf = await make_workflow(store)
    sch = await store.create_schedule(schedule(wf))
    await store.update_schedule(
        sch.id, replace(sch.spec, enabled=False), Advance(at(10), at(10)), at(1)
    )
    assert await store.fire_schedule(sch.id, at(10), [fire(wf, 10, sch)], None, at(10)) is None
    assert await store.list_runs(schedule_id=sch.id) == []


async def test_a_skipped_tick_is_recorded_without_a_run(store: Store) -> None:
    wf = await make_workflow(store)
    sch = await store.create_schedule(schedule(wf))
    recorded = await store.fire_schedule(
        sch.id,
        at(10),
        [TickFire(at(10), None, reason="overlap: the previous run is running")],
        Advance(at(20), at(20)),
        at(10),
    )
    assert recorded is not None
    [tick] = recorded
    assert (tick.outcome, tick.run_id, tick.reason) == (
        TickOutcome.SKIPPED,
        None,
        "overlap: the previous run is running",
    )
    after = await store.get_schedule(sch.id)
    assert (after.fired, after.skipped, after.last_run_id) == (0, 1, None)


async def test_due_schedules_reads_enabled_ones_soonest_first(store: Store) -> None:
    wf = await make_workflow(store)
    late = await store.create_schedule(schedule(wf, "late", due=30))
    soon = await store.create_schedule(schedule(wf, "soon", due=5))
    off = await store.create_schedule(schedule(wf, "off", due=1))
    await store.update_schedule(off.id, replace(off.spec, enabled=False), Advance(at(1), at(1)), T0)
    assert [s.id for s in await store.due_schedules(at(10), until=at(10))] == [soon.id]
    assert [s.id for s in await store.due_schedules(at(10), until=at(40))] == [soon.id, late.id]
    assert [s.id for s in await store.due_schedules(at(10), until=at(40), limit=1)] == [soon.id]


async def test_deleting_a_schedule_forgets_its_ticks_not_its_runs(store: Store) -> None:
    wf = await make_workflow(store)
    sch = await store.create_schedule(schedule(wf))
    [tick] = await store.fire_schedule(sch.id, None, [fire(wf, 10, sch)], None, at(10)) or []
    await store.delete_schedule(sch.id)
    assert await store.list_schedule_fires(sch.id) == []
    assert tick.run_id is not None
    assert (await store.get_run(tick.run_id)).schedule_id == sch.id


async def test_prune_forgets_old_ticks(store: Store) -> None:
    wf = await make_workflow(store)
    sch = await store.create_schedule(schedule(wf))
    for tick in (10, 20, 30):
        await store.fire_schedule(sch.id, None, [fire(wf, tick, sch)], None, at(tick))
    assert await store.prune_schedule_fires(at(25)) == 2
    assert [f.tick_at for f in await store.list_schedule_fires(sch.id)] == [at(30)]
    assert [f.tick_at for f in await store.list_schedule_fires(sch.id, before=at(30))] == []
    assert await store.prune_schedule_fires(at(25)) == 0
    assert len(await store.list_runs(schedule_id=sch.id)) == 3
