"""The store's side of retention on SQLite and PostgreSQL: a batch deletes only finished
top-level runs that finished before the cutoff, with every row that names them (each table
of the schema that holds a run id is counted), skips what is busy, pages by its cursor,
counts without deleting in a dry run, leaves a campaign's counters as they were (``pruned``
says how many are gone); and the lease that keeps one periodic pruner at a time."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from campaigns.test_campaign_store import items, new_campaign
from contract.helpers import (
    T0,
    at,
    claim,
    complete,
    failed_run,
    make_workflow,
    raw_connection,
    start,
    succeeded,
)
from flowyard.domain.ids import RunId
from flowyard.domain.statuses import RunStatus
from flowyard.store import Store
from flowyard.store.schema import metadata

#: Columns that name a run and keep naming it after the run is pruned (history: a fired
#: tick, a schedule's last run). Every other such column must be emptied by a prune.
KEPT_REFERENCES = {("schedule_fires", "run_id"), ("schedules", "last_run_id")}


def run_columns() -> list[tuple[str, str]]:
    """Every (table, column) of the schema that holds a run's id."""
    return sorted(
        (table.name, column.name)
        for table in metadata.sorted_tables
        for column in table.columns
        if column.name.endswith("run_id") or (table.name == "runs" and column.name == "id")
    )


async def rows_naming(db_url: str, run_ids: list[str]) -> dict[tuple[str, str], int]:
    """For each column that holds a run id, how many rows name one of ``run_ids``."""
    found: dict[tuple[str, str], int] = {}
    async with raw_connection(db_url) as conn:
        for table_name, column_name in run_columns():
            column = metadata.tables[table_name].c[column_name]
            n = await conn.scalar(
                sa.select(sa.func.count()).select_from(column.table).where(column.in_(run_ids))
            )
            found[(table_name, column_name)] = int(n or 0)
    return found


def test_every_table_naming_a_run_is_known() -> None:
    """A new table with a run id must be pruned (store/retention.py) or listed as history."""
    assert run_columns() == [
        ("branches", "child_run_id"),
        ("branches", "run_id"),
        ("run_events", "run_id"),
        ("runs", "id"),
        ("runs", "parent_run_id"),
        ("schedule_fires", "run_id"),
        ("schedules", "last_run_id"),
        ("signals", "run_id"),
        ("steps", "run_id"),
    ]


async def test_a_batch_deletes_only_finished_runs_older_than_the_cutoff(
    store: Store, db_url: str
) -> None:
    wf = await make_workflow(store)
    old_ok, old_failed, busy = await start(store, wf, 3)
    steps = {s.run_id: s for s in await claim(store, limit=10)}
    await store.send_signal(old_ok.id, "note", {"n": 1}, actor="op", now=at(1))
    assert await complete(store, steps[old_ok.id], succeeded(path_ended=True), at(10))
    assert await complete(store, steps[old_failed.id], failed_run(), at(20))
    # ``busy`` stays running (its step claimed), ``pending`` is never claimed: however old,
    # neither is touched. ``recent`` ends after the cutoff.
    [recent] = await start(store, wf, now=at(2))
    [late] = await claim(store, now=at(30), limit=5)
    assert late.run_id == recent.id
    assert await complete(store, late, succeeded(path_ended=True), at(100))
    [pending] = await start(store, wf, now=at(3))

    gone = [old_ok.id, old_failed.id]
    before = await rows_naming(db_url, gone)
    assert before[("steps", "run_id")] == 2 and before[("signals", "run_id")] == 1
    assert before[("run_events", "run_id")] >= 6

    batch = await store.prune_runs(wf.id, at(50), limit=100)
    assert batch.counts["runs"] == 2 and batch.seen == 2 and batch.skipped == 0
    assert batch.counts["steps"] == 2 and batch.counts["signals"] == 1
    assert batch.counts["run_events"] == before[("run_events", "run_id")]
    assert set((await rows_naming(db_url, gone)).values()) == {0}
    for run_id in (busy.id, pending.id, recent.id):
        assert (await store.get_run(run_id)).id == run_id
        assert await store.list_steps(RunId(run_id))
    # Nothing more before the cutoff: the next prune finds nothing.
    again = await store.prune_runs(wf.id, at(50), limit=100)
    assert again.counts["runs"] == 0 and again.seen == 0 and again.cursor is None


async def test_batches_page_oldest_first_and_a_dry_run_deletes_nothing(
    store: Store, db_url: str
) -> None:
    wf = await make_workflow(store)
    other = await make_workflow(store, "other-flow")
    runs = await start(store, wf, 5)
    [foreign] = await start(store, other, 1)
    claimed = {s.run_id: s for s in await claim(store, limit=10)}
    for i, run in enumerate(runs):  # run i ends at at(10 * (5 - i)): the last ends first
        assert await complete(store, claimed[run.id], succeeded(path_ended=True), at(50 - 10 * i))
    assert await complete(store, claimed[foreign.id], succeeded(path_ended=True), at(1))

    dry = await store.prune_runs(wf.id, at(1000), limit=100, dry_run=True)
    assert dry.counts["runs"] == 5 and dry.counts["steps"] == 5 and dry.seen == 5
    assert len(await store.list_runs(limit=100)) == 6

    first = await store.prune_runs(wf.id, at(1000), limit=2)
    assert first.seen == 2 and first.counts["runs"] == 2 and first.cursor is not None
    assert first.cursor.run_id == runs[3].id  # the two that ended first: runs 4 and 3
    left = {r.id for r in await store.list_runs(limit=100)}
    assert runs[4].id not in left and runs[3].id not in left and runs[2].id in left
    second = await store.prune_runs(wf.id, at(1000), limit=2, after=first.cursor)
    third = await store.prune_runs(wf.id, at(1000), limit=2, after=second.cursor)
    assert (second.counts["runs"], third.counts["runs"], third.seen) == (2, 1, 1)
    # Only this workflow's runs: the other workflow's older run is still there.
    assert [r.id for r in await store.list_runs(limit=100)] == [foreign.id]


async def test_campaign_counters_keep_the_history_and_count_the_pruned(store: Store) -> None:
    wf = await make_workflow(store)
    campaign, _ = await store.start_campaign(new_campaign(wf, 4), items(4), T0)
    claimed = await claim(store, limit=10)
    assert await complete(store, claimed[0], succeeded(path_ended=True), at(1))
    assert await complete(store, claimed[1], failed_run(), at(1))
    assert await complete(store, claimed[2], succeeded(path_ended=True), at(1))
    batch = await store.prune_runs(wf.id, at(5), limit=100)
    assert batch.counts["runs"] == 3
    shown = await store.get_campaign(campaign.id, now=at(6))
    assert shown.pruned == 3 and shown.finished == 3 and shown.total == 4
    assert {s: n for s, n in shown.counts.items() if n} == {
        RunStatus.SUCCEEDED: 2,
        RunStatus.FAILED: 1,
        RunStatus.RUNNING: 1,
    }
    assert [r.id for r in await store.list_campaign_runs(campaign.id, limit=10)] == [
        claimed[3].run_id
    ]
    # The last one still counts as it moves on (the trigger follows it as before).
    assert await complete(store, claimed[3], succeeded(path_ended=True), at(7))
    done = await store.get_campaign(campaign.id, now=at(8))
    assert done.counts[RunStatus.SUCCEEDED] == 3 and done.counts[RunStatus.RUNNING] == 0


async def test_the_lease_lets_one_owner_hold_it_until_it_expires(store: Store) -> None:
    assert await store.take_lease("prune", "a", now=T0, until=at(60))
    assert not await store.take_lease("prune", "b", now=at(30), until=at(90))
    assert await store.take_lease("prune", "a", now=at(30), until=at(90))  # renewed
    assert await store.take_lease("prune", "b", now=at(91), until=at(150))  # a died
    assert not await store.take_lease("prune", "a", now=at(100), until=at(160))
    assert not await store.release_lease("prune", "a", until=at(500))
    assert await store.release_lease("prune", "b", until=at(400))
    # Released until at(400): nobody may take it before, not even its last owner.
    assert not await store.take_lease("prune", "b", now=at(200), until=at(260))
    assert await store.take_lease("prune", "a", now=at(400), until=at(460))


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_run_another_transaction_holds_is_skipped_not_waited_for(
    store: Store, db_url: str
) -> None:
    """PostgreSQL: a worker's (or a request's) lock on a run row makes the prune pass over
    it at once; the next prune deletes it."""
    wf = await make_workflow(store)
    held, free = await start(store, wf, 2)
    claimed = {s.run_id: s for s in await claim(store, limit=10)}
    for run in (held, free):
        assert await complete(store, claimed[run.id], succeeded(path_ended=True), at(1))
    from flowyard.store.schema import runs

    async with raw_connection(db_url) as conn:
        await conn.execute(
            sa.select(runs.c.id).where(runs.c.id == held.id).with_for_update(key_share=True)
        )
        batch = await asyncio.wait_for(store.prune_runs(wf.id, at(5), limit=100), timeout=10)
        assert batch.counts["runs"] == 1 and batch.seen == 1
        assert [r.id for r in await store.list_runs(limit=10)] == [held.id]
    later = await store.prune_runs(wf.id, at(5), limit=100)
    assert later.counts["runs"] == 1 and await store.list_runs(limit=10) == []
