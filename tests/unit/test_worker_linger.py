"""The commit's linger (worker.py): a batch waits ``commit_linger_s`` for the results of steps
still executing, and not at all when none is (a lone run at idle pays no linger per step)."""

from __future__ import annotations

import dataclasses
import time

from flowyard.bootstrap import Container
from support.runs import THREE_SETS, drive


async def test_a_lone_result_is_committed_without_the_linger(container: Container) -> None:
    record, _, _ = await container.service.save_workflow(THREE_SETS)
    run, _ = await container.service.start_run(record.id, {})
    worker = container.new_worker()
    # Long enough that a single linger would fail the deadline below.
    worker.config = dataclasses.replace(worker.config, commit_linger_s=30.0)

    async def ended() -> bool:
        return (await container.store.get_run(run.id)).status.is_terminal

    started = time.monotonic()
    await drive(container, ended, worker=worker, timeout_s=25)
    assert (await container.store.get_run(run.id)).status.value == "succeeded"
    assert worker.stats.committed == 3
    assert time.monotonic() - started < 25


async def test_a_result_waits_for_steps_still_executing(container: Container) -> None:
    """Two runs claimed together: the first result lingers for the second's (one commit)."""
    record, _, _ = await container.service.save_workflow(
        {**THREE_SETS, "nodes": [{**THREE_SETS["nodes"][0], "next": None}]}
    )
    for _ in range(2):
        await container.service.start_run(record.id, {})
    worker = container.new_worker()
    worker.config = dataclasses.replace(worker.config, commit_linger_s=0.5)
    commits = 0
    complete = worker.store.complete_steps

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal commits
        commits += 1
        return await complete(*args, **kwargs)

    worker.store.complete_steps = counted  # type: ignore[method-assign]

    async def both_ended() -> bool:
        return worker.stats.committed == 2

    await drive(container, both_ended, worker=worker)
    assert commits == 1
