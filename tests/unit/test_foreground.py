"""Foreground first (worker/foreground.py): embedded workers yield their claims and commits
to the API's requests in flight, for a bounded time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from flowyard.api import create_app
from flowyard.bootstrap import Container
from flowyard.settings import Settings
from flowyard.worker.foreground import NO_FOREGROUND, Foreground
from support.api import admin_client
from support.runs import THREE_SETS, drive


async def test_an_idle_foreground_does_not_wait() -> None:
    gate = Foreground(max_yield_s=10.0)
    async with asyncio.timeout(1.0):
        await gate.yield_to_requests()
    assert (gate.yielded, gate.overran) == (0, 0)


async def test_a_worker_waits_until_the_last_request_leaves() -> None:
    gate = Foreground(max_yield_s=10.0)
    gate.enter()
    gate.enter()
    waiting = asyncio.create_task(gate.yield_to_requests())
    await asyncio.sleep(0.01)
    gate.leave()
    await asyncio.sleep(0.01)
    assert not waiting.done()  # one request is still in flight
    gate.leave()
    async with asyncio.timeout(1.0):
        await waiting
    assert (gate.in_flight, gate.yielded, gate.overran) == (0, 1, 0)


async def test_the_wait_is_bounded_so_a_long_request_never_stops_the_workers() -> None:
    gate = Foreground(max_yield_s=0.05)
    gate.enter()  # e.g. a webhook that waits for its run to finish
    async with asyncio.timeout(1.0):
        await gate.yield_to_requests()
        await gate.yield_to_requests()
    assert (gate.yielded, gate.overran) == (0, 2)


async def test_a_standalone_worker_has_nothing_to_yield_to() -> None:
    NO_FOREGROUND.enter()
    try:
        async with asyncio.timeout(0.5):
            await NO_FOREGROUND.yield_to_requests()
    finally:
        NO_FOREGROUND.leave()


async def test_the_api_counts_a_request_from_its_first_byte_to_its_answer(
    container: Container,
) -> None:
    """A request whose body is still arriving is in flight; the workers of the container see
    it (and none once it was answered). WebSocket streams are never counted."""
    assert all(w.foreground is container.foreground for w in [container.new_worker()])
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"name": '
        await release.wait()
        yield b'"x"}'

    async with admin_client(container) as client:
        sent = asyncio.create_task(
            client.post(
                "/api/v1/events/x",
                content=slow_body(),
                headers={"Content-Type": "application/json"},
            )
        )
        async with asyncio.timeout(5.0):
            while container.foreground.in_flight == 0:
                await asyncio.sleep(0.005)
        assert container.foreground.in_flight == 1
        release.set()
        await sent
    assert container.foreground.in_flight == 0


async def _start_three(container: Container, count: int) -> list[str]:
    record, _, _ = await container.service.save_workflow(THREE_SETS)
    return [(await container.service.start_run(record.id, {}))[0].id for _ in range(count)]


async def _ended(container: Container, run_ids: list[str]) -> bool:
    runs = [await container.store.get_run(run_id) for run_id in run_ids]
    return all(run.status.is_terminal for run in runs)


async def test_a_worker_alone_continues_its_runs_in_its_commits(container: Container) -> None:
    """Decision 0039: with no API in its process, a commit claims the steps it made due."""
    run_ids = await _start_three(container, 5)
    worker = container.new_worker()

    async def counted() -> bool:
        # The worker counts a commit once the store answered: after the runs read ended.
        return worker.stats.committed == 15 and await _ended(container, run_ids)

    await drive(container, counted, worker=worker)
    assert worker.stats.chained > 0


async def test_the_workers_of_a_serving_process_do_not_chain(settings: Settings) -> None:
    """``flowyard serve``'s workers put its requests first: no commit starts more steps
    (each claim pass yields to the requests in flight)."""
    app = create_app(settings.model_copy(update={"workers": 1}))
    async with app.router.lifespan_context(app):
        container: Container = app.state.container
        assert container.foreground.serving
        [worker] = app.state.workers
        run_ids = await _start_three(container, 5)
        async with asyncio.timeout(30):
            # The worker counts a commit once the store answered: after the runs read ended.
            while worker.stats.committed < 15 or not await _ended(container, run_ids):
                await asyncio.sleep(0.02)
        assert worker.stats.chained == 0


async def test_a_claimed_step_waits_for_a_request_that_arrived_meanwhile(
    container: Container,
) -> None:
    """A request that arrives between a claim and the steps' execution goes first: the steps
    execute once it has left (or the bounded wait ran out)."""
    gate = container.foreground
    gate.max_yield_s = 30.0
    worker = container.new_worker()
    claim, execute = worker.store.claim_work, worker.executor.execute
    executed: list[str] = []

    async def claim_then_a_request(*args, **kwargs):  # type: ignore[no-untyped-def]
        work = await claim(*args, **kwargs)
        if work.steps and not executed:
            gate.enter()  # a request arrives as the steps are claimed
        return work

    async def counted(step, state):  # type: ignore[no-untyped-def]
        executed.append(step.node_id)
        return await execute(step, state)

    worker.store.claim_work = claim_then_a_request  # type: ignore[method-assign]
    worker.executor.execute = counted  # type: ignore[method-assign]
    [run_id] = await _start_three(container, 1)
    running = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(10):
            while gate.in_flight == 0:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert executed == []  # held back while the request is in flight
        gate.leave()
        async with asyncio.timeout(30):
            while not await _ended(container, [run_id]):
                await asyncio.sleep(0.02)
        assert executed == ["a", "b", "c"]
    finally:
        worker.stop()
        await running
