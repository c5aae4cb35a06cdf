"""SQLite's one writer is handed to an API request's transaction before the workers' (store/
write_gate.py, decision 0041)."""

from __future__ import annotations

import asyncio

import pytest

from flowyard.bootstrap import Container
from flowyard.domain.urgency import is_urgent, urgent
from flowyard.store.write_gate import WriteGate


async def _holder(gate: WriteGate, urgent_: bool, order: list[str], name: str) -> None:
    async with gate.turn(urgent_):
        order.append(name)
        await asyncio.sleep(0.01)


async def test_urgent_waiters_go_first_each_class_in_arrival_order() -> None:
    gate = WriteGate()
    order: list[str] = []
    async with gate.turn(False):
        tasks = [
            asyncio.create_task(_holder(gate, u, order, name))
            for name, u in [("w1", False), ("w2", False), ("r1", True), ("w3", False), ("r2", True)]
        ]
        await asyncio.sleep(0.01)  # every one of them waits now
        assert gate.waiting == 5 and gate.busy
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    assert order == ["r1", "r2", "w1", "w2", "w3"]
    assert gate.overtaken == 2
    assert not gate.busy and gate.waiting == 0


async def test_a_cancelled_waiter_neither_holds_nor_loses_the_turn() -> None:
    gate = WriteGate()
    order: list[str] = []
    async with gate.turn(False):
        cancelled = asyncio.create_task(_holder(gate, True, order, "gone"))
        after = asyncio.create_task(_holder(gate, False, order, "next"))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await after
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert order == ["next"]
    assert not gate.busy


async def test_a_waiter_cancelled_as_it_is_handed_the_turn_passes_it_on() -> None:
    gate = WriteGate()
    order: list[str] = []
    async with gate.turn(False):
        first = asyncio.create_task(_holder(gate, False, order, "first"))
        second = asyncio.create_task(_holder(gate, False, order, "second"))
        await asyncio.sleep(0.01)
    # The turn was handed to `first` when the block above ended; cancel it before it ran.
    first.cancel()
    async with asyncio.timeout(5):
        await second
    assert order == ["second"]
    assert not gate.busy


async def test_urgency_is_inherited_by_tasks_a_request_starts() -> None:
    assert not is_urgent()
    with urgent():
        assert await asyncio.create_task(_read())
    assert not is_urgent()


async def _read() -> bool:
    return is_urgent()


async def test_an_api_request_is_urgent_for_the_store(container: Container) -> None:
    """The API marks its requests (api/foreground.py); the SQLite store orders by it."""
    from support.api import admin_client

    seen: list[bool] = []
    real = container.store._tx  # type: ignore[attr-defined]

    async def spy(fn, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(is_urgent())
        return await real(fn, **kwargs)

    container.store._tx = spy  # type: ignore[attr-defined]
    async with admin_client(container) as client:
        seen.clear()  # the admin was made and logged in by the fixture
        assert (await client.get("/api/v1/workflows")).status_code == 200
        assert seen and all(seen)
        seen.clear()
        await container.store.list_workflows()  # type: ignore[attr-defined]
        assert seen == [False]
