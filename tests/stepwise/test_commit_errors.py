"""The worker's new handling of a batch the database refuses (worker._commit): any exception
that is not StoreUnavailable is taken as 'this result cannot be stored' and the step (and
its run) is failed with engine.commit. A pool checkout timeout (sqlalchemy.exc.TimeoutError,
not a DBAPIError, so _tx does not classify it) is transient, yet it fails the run."""

from __future__ import annotations

from typing import Any, cast

import sqlalchemy.exc

from flowyard.domain.statuses import RunStatus
from flowyard.settings import Settings
from flowyard.store import Store
from stepwise.drive import driven, graph, node
from support.harness import run_ends


class FlakyPool:
    """The store, but its first completion batch times out waiting for a connection."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.failures = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def complete_steps(self, completions: Any, now: Any, **options: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise sqlalchemy.exc.TimeoutError("QueuePool limit of size 1 overflow 0 reached")
        return await self._store.complete_steps(completions, now, **options)


async def test_a_pool_timeout_while_committing_does_not_fail_the_run(settings: Settings) -> None:
    import asyncio

    async with driven(settings) as d:
        run = await d.start(graph("simple", node("start", "trigger", "end"), node("end", "end")))
        worker = d.c.new_worker()
        worker.store = cast(Store, FlakyPool(worker.store))
        task = asyncio.create_task(worker.run())
        try:
            ended = await run_ends(d.c, run.id)
        finally:
            worker.stop()
            await asyncio.wait([task], timeout=10)
        assert ended.status == RunStatus.SUCCEEDED, ended.error
