"""Drive runs to their end with an in-process worker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from flowyard.bootstrap import Container
from flowyard.service import RunDetail
from flowyard.worker import Worker

#: Three ``set`` steps in a row: each commit makes the run's next step due.
THREE_SETS: dict[str, Any] = {
    "name": "three-sets",
    "start": "a",
    "nodes": [
        {"id": "a", "type": "set", "config": {"values": {"a": 1}}, "next": "b"},
        {"id": "b", "type": "set", "config": {"values": {"b": 2}}, "next": "c"},
        {"id": "c", "type": "set", "config": {"values": {"c": 3}}},
    ],
}


async def drive(
    container: Container,
    check: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float = 30,
    worker: Worker | None = None,
) -> None:
    """Run an in-process worker (``worker``, or a new one) until ``check`` holds
    (TimeoutError otherwise)."""
    finished = False

    async def poll() -> None:
        nonlocal finished
        while not await check():
            await asyncio.sleep(0.02)
        finished = True

    poller = asyncio.create_task(poll())
    try:
        await (worker or container.new_worker()).run_until(lambda: finished, timeout_s=timeout_s)
    finally:
        poller.cancel()


async def wait_for_runs(container: Container, run_ids: list[str], *, timeout_s: float = 30) -> None:
    """Run an in-process worker until every run has ended (TimeoutError otherwise)."""
    pending = set(run_ids)

    async def ended() -> bool:
        for run_id in list(pending):
            if (await container.store.get_run(run_id)).status.is_terminal:
                pending.discard(run_id)
        return not pending

    await drive(container, ended, timeout_s=timeout_s)


async def run_definition(
    container: Container,
    definition: dict[str, Any],
    input: Any = None,
    *,
    vars: dict[str, Any] | None = None,
    timeout_s: float = 30,
) -> RunDetail:
    """Save ``definition``, start one run, execute it to the end and return its detail."""
    record, _, _ = await container.service.save_workflow(definition)
    run, _ = await container.service.start_run(record.id, input or {}, vars=vars)
    await wait_for_runs(container, [run.id], timeout_s=timeout_s)
    return await container.service.get_run(run.id)
