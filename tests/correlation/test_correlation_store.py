"""The store contract for correlation keys, parent runs and buffered signals, on SQLite and
PostgreSQL: the key is kept and filtered by, a unique key is held by one unfinished run of
a workflow (the partial unique index and the check that names the holder), and frees when
that run ends."""

from __future__ import annotations

from dataclasses import replace

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from contract.helpers import T0, at, make_workflow, new_run
from flowyard.domain.errors import Conflict
from flowyard.domain.ids import RunId
from flowyard.domain.records import NewRun, RunRecord, WorkflowRecord
from flowyard.domain.statuses import RunStatus
from flowyard.store import Store, normalize_url
from flowyard.store.schema import runs


def keyed(wf: WorkflowRecord, key: str | None, *, unique: bool = False, **extra: object) -> NewRun:
    return replace(new_run(wf), correlation_key=key, correlation_unique=unique, **extra)


async def start_one(store: Store, new: NewRun) -> RunRecord:
    [(run, created)] = await store.start_runs([new], T0)
    assert created
    return run


async def test_the_key_is_kept_and_found(store: Store) -> None:
    wf = await make_workflow(store)
    other = await make_workflow(store, "other")
    first = await start_one(store, keyed(wf, "+15551230001"))
    second = await start_one(store, keyed(wf, "+15551230001"))  # not unique: allowed
    elsewhere = await start_one(store, keyed(other, "+15551230001"))
    await start_one(store, keyed(wf, "+15551230002"))
    await start_one(store, keyed(wf, None))

    assert first.correlation_key == "+15551230001" and not first.correlation_unique
    assert await store.get_run(first.id) == first
    found = await store.list_runs(correlation_key="+15551230001")
    assert [r.id for r in found] == sorted([first.id, second.id, elsewhere.id], reverse=True)
    found = await store.list_runs(correlation_key="+15551230001", workflow_id=wf.id)
    assert [r.id for r in found] == [second.id, first.id]
    assert await store.list_runs(correlation_key="+1555123000") == []  # exact, not a prefix
    open_ = await store.unfinished_runs_by_key(wf.id, "+15551230001")
    assert [r.id for r in open_] == [first.id, second.id]  # oldest first


async def test_a_unique_key_is_held_by_one_unfinished_run(store: Store) -> None:
    wf = await make_workflow(store)
    holder = await start_one(store, keyed(wf, "order-7", unique=True))
    assert holder.correlation_unique

    with pytest.raises(Conflict) as refused:
        await store.start_runs([keyed(wf, "order-7", unique=True)], at(1))
    assert refused.value.detail == {"run_id": holder.id, "correlation_key": "order-7"}
    assert holder.id in refused.value.message
    assert len(await store.list_runs(workflow_id=wf.id)) == 1  # nothing was started

    # Another workflow, another key, or the same key not unique (an older version's run):
    # each is a run of its own.
    other = await make_workflow(store, "other")
    await start_one(store, keyed(other, "order-7", unique=True))
    await start_one(store, keyed(wf, "order-8", unique=True))

    # Two runs of one start with one unique key: refused together.
    with pytest.raises(Conflict, match="two runs of one start"):
        await store.start_runs(
            [keyed(wf, "order-9", unique=True), keyed(wf, "order-9", unique=True)], T0
        )
    assert await store.unfinished_runs_by_key(wf.id, "order-9") == []


async def test_a_unique_start_sees_any_unfinished_holder_of_the_key(store: Store) -> None:
    wf = await make_workflow(store)
    older = await start_one(store, keyed(wf, "order-7"))  # a version that did not declare it
    with pytest.raises(Conflict) as refused:
        await store.start_runs([keyed(wf, "order-7", unique=True)], T0)
    assert refused.value.detail["run_id"] == older.id


async def test_the_key_is_free_once_its_run_ends_and_a_retry_must_find_it_free(
    store: Store,
) -> None:
    wf = await make_workflow(store)
    first = await start_one(store, keyed(wf, "order-7", unique=True))
    await store.cancel_run(first.id, actor="tester", reason=None, now=at(1))

    second = await start_one(store, keyed(wf, "order-7", unique=True))
    assert second.id != first.id

    with pytest.raises(Conflict) as refused:
        await store.retry_run(first.id, actor="tester", now=at(2))
    assert refused.value.detail == {"run_id": second.id, "correlation_key": "order-7"}
    assert (await store.get_run(first.id)).status == RunStatus.CANCELLED

    await store.cancel_run(second.id, actor="tester", reason=None, now=at(3))
    retried = await store.retry_run(first.id, actor="tester", now=at(4))
    assert retried.status == RunStatus.PENDING
    assert [r.id for r in await store.unfinished_runs_by_key(wf.id, "order-7")] == [first.id]


async def test_an_idempotent_start_returns_its_run_before_the_key_is_judged(store: Store) -> None:
    wf = await make_workflow(store)
    new = replace(keyed(wf, "order-7", unique=True), idempotency_key="req-1")
    first = await start_one(store, new)
    [(again, created)] = await store.start_runs([new], at(1))
    assert (again.id, created) == (first.id, False)


async def test_the_partial_unique_index_refuses_a_second_unfinished_holder(
    store: Store, db_url: str
) -> None:
    """The index, not only the check: a writer that skips the check (a race) is refused by
    the database; ended runs and runs whose key is not unique are outside the index."""
    wf = await make_workflow(store)
    holder = await start_one(store, keyed(wf, "order-7", unique=True))
    ended = await start_one(store, keyed(wf, "order-6", unique=True))
    await store.cancel_run(ended.id, actor="tester", reason=None, now=at(1))
    engine = create_async_engine(normalize_url(db_url))
    try:

        def row(run_id: str, key: str, unique: bool, status: RunStatus) -> dict[str, object]:
            return {
                "id": run_id,
                "workflow_id": wf.id,
                "workflow_version": 1,
                "status": status.value,
                "correlation_key": key,
                "correlation_unique": unique,
                "created_at": T0,
                "updated_at": T0,
            }

        async with engine.begin() as conn:
            await conn.execute(
                runs.insert(),
                [
                    row("run_a", "order-7", False, RunStatus.RUNNING),  # not unique
                    row("run_b", "order-7", True, RunStatus.SUCCEEDED),  # ended
                    row("run_c", "order-6", True, RunStatus.WAITING),  # its holder ended
                ],
            )
        for status in (RunStatus.PENDING, RunStatus.PAUSED):
            with pytest.raises(IntegrityError):
                async with engine.begin() as conn:
                    await conn.execute(
                        runs.insert().values(**row("run_d", "order-7", True, status))
                    )
        async with engine.connect() as conn:
            holders = await conn.scalars(
                sa.select(runs.c.id).where(runs.c.correlation_key == "order-7").order_by("id")
            )
            assert sorted(holders) == sorted([holder.id, "run_a", "run_b"])
    finally:
        await engine.dispose()


async def test_child_runs_are_listed_by_parent(store: Store) -> None:
    wf = await make_workflow(store)
    parent = await start_one(store, new_run(wf))
    children = [
        await start_one(store, replace(new_run(wf), parent_run_id=parent.id)) for _ in range(2)
    ]
    await start_one(store, new_run(wf))
    listed = await store.list_runs(parent_run_id=parent.id)
    assert [r.id for r in listed] == sorted((c.id for c in children), reverse=True)
    assert all(r.parent_run_id == parent.id for r in listed)
    assert await store.list_runs(parent_run_id=RunId("run_nobody")) == []


async def test_buffered_signals_are_those_no_step_took(store: Store) -> None:
    wf = await make_workflow(store)
    run = await start_one(store, new_run(wf))
    early, _ = await store.send_signal(run.id, "reply", {"n": 1}, actor="tester", now=at(1))
    later, _ = await store.send_signal(run.id, "opt_out", None, actor="tester", now=at(2))

    buffered = await store.list_signals(run.id, buffered=True)
    assert [s.id for s in buffered] == [early.id, later.id]
    assert await store.list_signals(run.id, buffered=False) == []
    assert [s.id for s in await store.list_signals(run.id)] == [early.id, later.id]
