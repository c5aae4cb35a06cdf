"""Prune under load (issue 13's acceptance), on SQLite and PostgreSQL: while runs are being
started and a worker drains them (plain runs, failing runs, sub-workflows, runs that wait for
a signal), a pruner deletes every finished run in a loop by small batches. Nothing
unfinished is lost (the waiting runs and their finished child runs are all there, whole,
and finish when signalled), and every finished run ends up either kept or wholly deleted:
no step, event, signal or branch is left naming a run that is gone."""

from __future__ import annotations

import asyncio
import logging

import pytest
import sqlalchemy as sa

from contract.helpers import raw_connection
from flowyard.bootstrap import Container, build
from flowyard.domain.errors import NotFound
from flowyard.domain.retention import PRUNED_TABLES, PruneReport
from flowyard.domain.statuses import RunStatus
from flowyard.settings import Settings
from retention.test_retention_service import WAIT, flow, sub
from support.harness import eventually, working

PLAIN, FAILING, WAITING, PARENTS, WAITING_PARENTS = 150, 30, 30, 20, 10
SET = {"id": "work", "type": "set", "config": {"values": {"n": "{{ input.i }}"}}}
CONSTANT = {"id": "work", "type": "set", "config": {"values": {"n": 1}}}
FAILING_FLOW = {
    "name": "failing",
    "start": "start",
    "nodes": [
        {"id": "start", "type": "trigger", "next": "boom"},
        {"id": "boom", "type": "fail", "config": {"error": "test.failed", "message": "no"}},
    ],
}


async def orphans(db_url: str) -> dict[str, int]:
    """Rows naming a run that does not exist, by table and column."""
    from flowyard.store.schema import branches, run_events, runs, signals, steps

    found = {}
    async with raw_connection(db_url) as conn:
        for column in (
            run_events.c.run_id,
            signals.c.run_id,
            branches.c.run_id,
            branches.c.child_run_id,
            steps.c.run_id,
            runs.c.parent_run_id,
        ):
            n = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(column.table)
                .where(column.is_not(None), column.not_in(sa.select(runs.c.id)))
            )
            found[f"{column.table.name}.{column.name}"] = int(n or 0)
    return found


async def table_sizes(db_url: str) -> dict[str, int]:
    from flowyard.store.schema import metadata

    async with raw_connection(db_url) as conn:
        return {
            name: int(
                await conn.scalar(sa.select(sa.func.count()).select_from(metadata.tables[name]))
                or 0
            )
            for name in PRUNED_TABLES
        }


@pytest.mark.slow
async def test_prune_under_load_loses_nothing_unfinished(
    settings: Settings, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="flowyard")
    # The real clock: a run ended at the instant a prune looks is not "older than 0s".
    overrides = {"pruner": False, "prune_batch": 7, "concurrency": 16, "shutdown_grace_s": 2.0}
    c = await build(settings.model_copy(update=overrides))
    try:
        service = c.service
        plain = (await service.save_workflow(flow("plain", SET)))[0]
        failing = (await service.save_workflow(FAILING_FLOW))[0]
        waiter = (await service.save_workflow(flow("waiter", WAIT)))[0]
        await service.save_workflow(flow("child", CONSTANT))
        parent = (await service.save_workflow(flow("parent", sub("child"))))[0]
        waiting_parent = (await service.save_workflow(flow("waiting-parent", sub("child"), WAIT)))[
            0
        ]
        plan = (
            [plain.id] * PLAIN
            + [failing.id] * FAILING
            + [waiter.id] * WAITING
            + [parent.id] * PARENTS
            + [waiting_parent.id] * WAITING_PARENTS
        )
        kinds = {}
        total = PruneReport(dry_run=False)
        starting_done = asyncio.Event()

        async def start_all() -> None:
            # Interleaved, so runs start while others finish and are pruned.
            for i, workflow_id in enumerate(sorted(plan, key=lambda w: hash((w, 7)))):
                run, _ = await service.start_run(workflow_id, {"i": i})
                kinds[run.id] = workflow_id
                if i % 20 == 0:
                    await asyncio.sleep(0)
            starting_done.set()

        async def prune_forever() -> None:
            while True:
                report = await c.retention.prune(older_than="0s")
                for table, n in report.counts.items():
                    total.counts[table] += n
                total.skipped += report.skipped
                await asyncio.sleep(0.005)

        async with working(c):
            pruner = asyncio.create_task(prune_forever())
            try:
                await start_all()
                finishing = [r for r, w in kinds.items() if w in (plain.id, failing.id, parent.id)]

                async def drained() -> bool:
                    for run_id in finishing:
                        try:
                            run = await c.store.get_run(run_id)
                        except NotFound:  # pruned: it had finished
                            continue
                        if not run.status.is_terminal:
                            return False
                    return True

                await eventually(drained, "the finishing runs to end", within=120)
                await eventually(
                    lambda: _waiting(c, kinds, (waiter.id, waiting_parent.id)),
                    "the waiting runs to wait",
                    within=60,
                )
            finally:
                pruner.cancel()
                await asyncio.gather(pruner, return_exceptions=True)
            assert total.counts["runs"] > 0  # the pruner deleted runs while they ran
            last = await c.retention.prune(older_than="0s")
            for table, n in last.counts.items():
                total.counts[table] += n

            # Nothing unfinished lost: every waiting run is there, whole, with its child.
            left = {r.id: r for r in await c.store.list_runs(limit=1000)}
            waiting = [r for r, w in kinds.items() if w in (waiter.id, waiting_parent.id)]
            assert sorted(r for r in left if left[r].parent_run_id is None) == sorted(waiting)
            assert all(left[r].status == RunStatus.WAITING for r in waiting)
            children = [r for r in left.values() if r.parent_run_id is not None]
            assert len(children) == WAITING_PARENTS
            assert all(ch.status == RunStatus.SUCCEEDED for ch in children)
            for run_id in waiting:
                assert [s.node_id for s in await c.store.list_steps(run_id)][-1] == "wait"
            # Every finished run went whole: no row names a run that is gone.
            assert set((await orphans(db_url)).values()) == {0}
            started = len(plan) + PARENTS + WAITING_PARENTS  # with the child runs
            assert total.counts["runs"] + len(left) == started

            # And they still work: signalled, they finish, and then they go too.
            for run_id in waiting:
                await service.send_signal(run_id, "go", {})
            await eventually(lambda: _all_ended(c, waiting), "the signalled runs to end")
        final = await c.retention.prune(older_than="0s")
        assert final.runs == len(waiting) + WAITING_PARENTS
        assert await table_sizes(db_url) == dict.fromkeys(PRUNED_TABLES, 0)
    finally:
        await c.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def _waiting(c: Container, kinds: dict[str, str], workflows: tuple[str, ...]) -> bool:
    for run_id, workflow_id in kinds.items():
        if workflow_id in workflows and (await c.store.get_run(run_id)).status != RunStatus.WAITING:
            return False
    return True


async def _all_ended(c: Container, run_ids: list[str]) -> bool:
    for run_id in run_ids:
        if not (await c.store.get_run(run_id)).status.is_terminal:
            return False
    return True
