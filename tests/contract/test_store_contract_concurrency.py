"""The store contract, part 3: concurrency (separate stores and transactions on one database)."""

from __future__ import annotations

import asyncio
from collections import Counter

from contract.helpers import T0, at, event_types, make_workflow, raw_connection, start
from flowyard.domain.commands import NextStep, Transition
from flowyard.domain.ids import StepId
from flowyard.domain.statuses import RunStatus, StepStatus
from flowyard.store import StepCompletion, Store, open_store
from flowyard.store.schema import runs

WORKERS = 8
STEPS = 500


async def test_concurrent_claims_take_each_step_exactly_once(store: Store, db_url: str) -> None:
    wf = await make_workflow(store)
    runs = await start(store, wf, STEPS, now=T0)
    expected = {s.id for run in runs for s in await store.list_steps(run.id)}
    assert len(expected) == STEPS

    # Separate Store instances, as separate worker processes would have.
    stores = [open_store(db_url, pool_size=2) for _ in range(WORKERS)]
    go = asyncio.Event()

    async def worker(index: int, own: Store) -> list[StepId]:
        await own.ping()  # connect before the start signal, so claims really overlap
        await go.wait()
        claimed: list[StepId] = []
        while batch := await own.claim_steps(f"w{index}", limit=7, now=at(1), lease_s=60):
            assert all(s.lease_owner == f"w{index}" for s in batch)
            claimed += [s.id for s in batch]
            await asyncio.sleep(0)
        return claimed

    try:
        tasks = [asyncio.create_task(worker(i, s)) for i, s in enumerate(stores)]
        await asyncio.sleep(0.05)
        go.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    finally:
        for s in stores:
            await s.close()

    counts = Counter(step_id for claimed in results for step_id in claimed)
    assert set(counts) == expected
    assert max(counts.values()) == 1
    assert sum(1 for claimed in results if claimed) > 1, "the claims did not overlap at all"
    assert await store.queue_depth() == {StepStatus.RUNNING.value: STEPS}
    final = [s for run in runs for s in await store.list_steps(run.id)]
    owners = Counter((s.lease_owner, s.claims, s.attempt) for s in final)
    assert sum(owners.values()) == STEPS
    assert {(claims, attempt) for _, claims, attempt in owners} == {(1, 1)}
    assert {owner for owner, _, _ in owners} == {
        f"w{i}" for i, claimed in enumerate(results) if claimed
    }


async def test_a_run_locked_during_its_claim_still_records_run_started(pg_url: str) -> None:
    """PostgreSQL only (SQLite writers never overlap): a claim skips marking a run started
    while another transaction holds the run row; the completion must then start it, with
    the same ``run.started`` event a claim records."""
    store = open_store(pg_url)
    try:
        await store.migrate()
        [run] = await start(store, await make_workflow(store))
        async with raw_connection(pg_url) as conn:
            # Another writer (a pause, a signal) is updating the run row right now.
            await conn.execute(
                runs.update().where(runs.c.id == run.id).values(updated_at=runs.c.updated_at)
            )
            [step] = await store.claim_steps("w", limit=1, now=T0, lease_s=60)
        assert (await store.get_run(run.id)).status == RunStatus.PENDING

        transition = Transition(StepStatus.SUCCEEDED, next_steps=(NextStep("b", "noop", 0, T0),))
        done = await store.complete_steps([StepCompletion(step, transition)], at(1))
        assert done.applied == [True]

        started = await store.get_run(run.id)
        assert (started.status, started.started_at) == (RunStatus.RUNNING, T0)
        assert await event_types(store, run.id) == [
            "run.created",
            "step.started",
            "run.started",
            "step.succeeded",
        ]
    finally:
        await store.close()
