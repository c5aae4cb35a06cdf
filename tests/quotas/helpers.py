"""What the quota end-to-end tests share: running workers until runs end, and counting the
calls a provider saw in a window."""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Sequence

from flowyard.bootstrap import Container


def most_in_a_window(times: Sequence[float], window: float) -> int:
    """The most calls in any half-open window ``[t, t + window)``."""
    ordered = sorted(times)
    return max(bisect_left(ordered, t + window) - i for i, t in enumerate(ordered))


async def run_workers(
    machines: Sequence[Container],
    run_ids: list[str],
    *,
    workers: int,
    concurrency: int,
    timeout_s: float,
) -> None:
    """``workers`` in-process workers of ``concurrency`` concurrent steps on each of
    ``machines`` (containers on one database) until every run has ended."""
    running = [m.new_worker(concurrency=concurrency) for m in machines for _ in range(workers)]
    pending = set(run_ids)
    store = machines[0].store

    async def watch() -> None:
        while pending:
            for run_id in list(pending):
                if (await store.get_run(run_id)).status.is_terminal:
                    pending.discard(run_id)
            await asyncio.sleep(0.05)
        for worker in running:
            worker.stop()

    async with asyncio.timeout(timeout_s):
        await asyncio.gather(watch(), *(w.run() for w in running))
