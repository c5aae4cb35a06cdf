"""A slow client is closed with 1013 (bounded memory); other clients are unaffected."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

from flowyard.api.stream import StreamFilter, StreamHub, StreamSession
from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import NewRun
from flowyard.store import Store


class FakeSocket:
    """Records what is sent; ``stuck`` sockets never finish a send (a client not reading)."""

    def __init__(self, *, stuck: bool = False) -> None:
        self.stuck = stuck
        self.sent: list[str] = []
        self.closed: int | None = None
        self.gone = asyncio.Event()

    async def send_text(self, data: str) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        self.sent.append(data)

    async def receive(self) -> MutableMapping[str, Any]:
        await self.gone.wait()
        return {"type": "websocket.disconnect"}

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = code


async def test_a_slow_client_is_closed_with_1013_and_others_get_everything(
    store: Store,
) -> None:
    workflow, version = await store.create_workflow("w", None, {"name": "w"}, None)
    now = datetime.now(UTC)
    runs = [NewRun(WorkflowId(workflow.id), 1, "start", "trigger", {"i": i}) for i in range(20)]
    hub = StreamHub(store, store.get_run, poll_interval_s=0.02)
    slow, fast = FakeSocket(stuck=True), FakeSocket()
    sessions = [
        StreamSession(ws, hub, StreamFilter(), after=0, queue_size=2, slow_client_s=0.2)
        for ws in (slow, fast)
    ]
    tasks = [asyncio.create_task(s.run()) for s in sessions]
    await store.start_runs(runs, now)
    expected = await store.event_horizon()
    assert expected is not None

    async with asyncio.timeout(20):
        await tasks[0]  # the slow one was dropped
        while len(fast.sent) < expected:
            await asyncio.sleep(0.02)
    fast.gone.set()
    await asyncio.wait_for(tasks[1], 10)

    assert slow.closed == 1013
    assert slow.sent == []
    assert sessions[0].queue.qsize() <= 2  # never more than the bound
    assert fast.closed is None  # it left by itself
    assert len(fast.sent) == expected
    assert version.version == 1
