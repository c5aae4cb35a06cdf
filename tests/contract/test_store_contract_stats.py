"""The store contract: the workflows list's figures (each workflow's newest run and its runs
per day), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contract.helpers import T0, make_workflow, start
from flowyard.domain.statuses import RunStatus
from flowyard.store import Store

DAY = timedelta(days=1)
#: Three day starts: T0 - 2 days, T0 - 1 day, T0 (a day starting at noon: any instants do).
DAYS = [T0 - 2 * DAY, T0 - DAY, T0]


async def test_runs_are_counted_per_day_and_the_newest_is_named(store: Store) -> None:
    busy = await make_workflow(store, "busy")
    idle = await make_workflow(store, "idle")
    other = await make_workflow(store, "other")
    await start(store, busy, 4, now=T0 - 5 * DAY)  # before the first day: not counted
    await start(store, busy, 2, now=T0 - 2 * DAY)  # on the first day's start: counted
    await start(store, busy, 3, now=T0 - DAY + timedelta(hours=23))
    [newest] = await start(store, busy, 1, now=T0 + timedelta(hours=30))  # the last day's end
    await start(store, other, 1, now=T0 - 9 * DAY)  # only an old run: last, but no count

    stats = await store.workflow_run_stats([busy.id, idle.id, other.id], DAYS)

    assert set(stats) == {busy.id, idle.id, other.id}
    assert stats[busy.id].per_day == (2, 3, 1)
    assert stats[busy.id].last_run_id == newest.id
    assert stats[busy.id].last_status == RunStatus.PENDING
    assert stats[busy.id].last_created_at == T0 + timedelta(hours=30)
    assert stats[idle.id].per_day == (0, 0, 0)
    assert stats[idle.id].last_run_id is None and stats[idle.id].last_status is None
    assert stats[other.id].per_day == (0, 0, 0)
    assert stats[other.id].last_created_at == T0 - 9 * DAY


async def test_the_newest_run_is_the_latest_created_and_only_asked_workflows_answer(
    store: Store,
) -> None:
    wf = await make_workflow(store, "w")
    unasked = await make_workflow(store, "unasked")
    [later] = await start(store, wf, 1, now=T0 + timedelta(minutes=5))
    await start(store, wf, 1, now=T0)  # started after, but created earlier (its clock)
    await start(store, unasked, 1, now=T0)

    stats = await store.workflow_run_stats([wf.id, wf.id], DAYS)

    assert list(stats) == [wf.id]
    assert stats[wf.id].last_run_id == later.id
    assert stats[wf.id].per_day == (0, 0, 2)
    assert await store.workflow_run_stats([], DAYS) == {}


async def test_bad_windows_are_refused(store: Store) -> None:
    wf = await make_workflow(store, "w")
    with pytest.raises(ValueError, match="ascending"):
        await store.workflow_run_stats([wf.id], [T0, T0 - DAY])
    with pytest.raises(ValueError, match="ascending"):
        await store.workflow_run_stats([wf.id], [])
