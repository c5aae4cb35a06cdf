"""Harness of the tests that run real workers under a :class:`FakeClock`: a claim probe,
bounded polling, and helpers to start runs and wait for steps and runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar, cast

import pytest

from flowyard.bootstrap import Container, build
from flowyard.domain.ids import RunId
from flowyard.domain.records import RunRecord, StepRecord
from flowyard.domain.statuses import StepStatus
from flowyard.settings import Settings
from flowyard.store import Store
from flowyard.store.ports import Claimed, ClaimRequest
from flowyard.worker import Worker
from support.clock import FakeClock

T = TypeVar("T")
WAIT_S = 15.0


class ClaimProbe:
    """Stands in for a worker's store: counts claim passes and the fake instant of each."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.passes: list[tuple[datetime, list[str]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_work(self, request: ClaimRequest, now: datetime) -> Claimed:
        claimed = await self._store.claim_work(request, now)
        self.passes.append((now, [s.node_id for s in claimed.steps]))
        return claimed

    async def passes_at(self, when: datetime, count: int = 3) -> list[str]:
        """Wait until the worker made ``count`` claim passes at ``when`` or later; returns the
        nodes those passes claimed."""

        def seen() -> list[tuple[datetime, list[str]]] | None:
            later = [p for p in self.passes if p[0] >= when]
            return later if len(later) >= count else None

        later = await eventually(seen, f"{count} claim passes at {when}")
        return [node for _, nodes in later for node in nodes]


async def eventually(
    check: Callable[[], T | Awaitable[T | None] | None], what: str, *, within: float = WAIT_S
) -> T:
    """Poll ``check`` (sync or async) until it returns something truthy; fail after ``within``
    seconds (a test that waits on a lot of work says so rather than raising WAIT_S for all)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        value = await result if asyncio.iscoroutine(result) else result
        if value:
            return cast(T, value)
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def built(settings: Settings, clock: FakeClock, **overrides: Any) -> AsyncIterator[Container]:
    """A container on the test database whose service and workers use ``clock``."""
    container = await build(
        settings.model_copy(update={"shutdown_grace_s": 2.0, **overrides}), clock=clock
    )
    try:
        yield container
    finally:
        await container.close()


@asynccontextmanager
async def working(container: Container) -> AsyncIterator[tuple[Worker, ClaimProbe]]:
    """One in-process worker running in the background, its store wrapped in a probe."""
    worker = container.new_worker()
    probe = ClaimProbe(worker.store)
    worker.store = cast(Store, probe)
    task = asyncio.create_task(worker.run())
    try:
        yield worker, probe
    finally:
        worker.stop()
        async with asyncio.timeout(WAIT_S):
            await task


async def start_run(container: Container, definition: dict[str, Any]) -> RunRecord:
    record, _, _ = await container.service.save_workflow(definition)
    run, _ = await container.service.start_run(record.id, {})
    return run


async def step_of(container: Container, run_id: RunId, node_id: str) -> StepRecord | None:
    found = [s for s in await container.store.list_steps(run_id) if s.node_id == node_id]
    return found[-1] if found else None


async def step_reaches(
    container: Container, run_id: RunId, node_id: str, status: StepStatus, attempt: int
) -> StepRecord:
    """Wait until ``node_id``'s step is committed with ``status`` after attempt ``attempt``."""

    async def check() -> StepRecord | None:
        step = await step_of(container, run_id, node_id)
        return step if step and (step.status, step.attempt) == (status, attempt) else None

    return await eventually(check, f"{node_id} {status.value} after attempt {attempt}")


async def run_ends(container: Container, run_id: RunId) -> RunRecord:
    async def check() -> RunRecord | None:
        run = await container.store.get_run(run_id)
        return run if run.status.is_terminal else None

    return await eventually(check, f"run {run_id} to end")
