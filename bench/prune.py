"""Retention: how fast ``flowyard prune`` deletes finished runs, and what a pruner running
in a loop costs the workers draining beside it (decision 0031).

For each backend, on a fresh database:

1. N runs of the 3-step no-op workflow are started in bulk and drained by an in-process
   worker; then a dry run and a real prune (``older_than 0s``) of the N finished runs are
   timed (runs/s and rows/s deleted);
2. N more runs are drained twice by the same worker, once alone and once with a pruner
   deleting every finished run in a loop, and the worker's claim and completion
   transactions are timed (p50, p99, max): a pruner that made workers wait on its locks
   would show in their tails.

    python bench/prune.py                            # 5,000 runs, SQLite and PostgreSQL
    python bench/prune.py --runs 1000 --backends sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from flowyard.bootstrap import Container, build
from flowyard.settings import Settings
from throughput import WORKFLOW, bulk_start, fresh_database  # bench/ is sys.path[0]


class Timed:
    """Wraps a store: times ``claim_steps`` and ``complete_steps``."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.claims: list[float] = []
        self.completes: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def _timed(self, into: list[float], fn: Callable[[], Awaitable[Any]]) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn()
        finally:
            into.append(time.perf_counter() - t0)

    async def claim_steps(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed(self.claims, lambda: self._store.claim_steps(*args, **kwargs))

    async def complete_steps(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed(
            self.completes, lambda: self._store.complete_steps(*args, **kwargs)
        )


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms ({len(ordered)})"
    )


async def drain(container: Container, pruning: bool) -> tuple[float, Timed, int]:
    """Run a worker until no run is unfinished; with ``pruning`` a pruner deletes finished
    runs in a loop meanwhile. Seconds, the timings, runs pruned during the drain."""
    worker = container.new_worker(concurrency=64)
    timed = Timed(worker.store)
    worker.store = timed
    pruned = 0

    async def prune_forever() -> None:
        nonlocal pruned
        while True:
            pruned += (await container.retention.prune(older_than="0s")).runs
            await asyncio.sleep(0.01)

    async def unfinished() -> int:
        depth = await container.store.queue_depth()
        return sum(n for status, n in depth.items() if status in ("scheduled", "running"))

    t0 = time.perf_counter()
    task = asyncio.create_task(worker.run())
    pruner = asyncio.create_task(prune_forever()) if pruning else None
    try:
        while await unfinished():
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
        await task
        if pruner is not None:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
    return time.perf_counter() - t0, timed, pruned


async def measure(backend: str, url: str, runs: int) -> None:
    await bulk_start(url, WORKFLOW, runs)
    settings = Settings(db_url=url, load_plugins=False, pruner=False, poll_interval_s=0.05)
    container = await build(settings)
    try:
        await drain(container, pruning=False)
        t0 = time.perf_counter()
        dry = await container.retention.prune(older_than="0s", dry_run=True)
        dry_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        real = await container.retention.prune(older_than="0s")
        real_s = time.perf_counter() - t0
        rows = sum(real.counts.values())
        print(
            f"{backend}: dry run {dry.runs:,} runs in {dry_s:.2f} s; prune {real.runs:,} runs "
            f"({rows:,} rows, {real.batches} batches of {settings.prune_batch}) in "
            f"{real_s:.2f} s: {real.runs / real_s:,.0f} runs/s, {rows / real_s:,.0f} rows/s"
        )
    finally:
        await container.close()
    for pruning in (False, True):
        await bulk_start(url, WORKFLOW, runs)
        container = await build(settings)
        try:
            seconds, timed, pruned = await drain(container, pruning)
        finally:
            await container.close()
        label = "with a pruner" if pruning else "alone        "
        print(
            f"{backend}: drain {runs:,} runs {label} {seconds:.1f} s "
            f"({runs / seconds:,.0f} runs/s; pruned meanwhile {pruned:,})\n"
            f"    claim    {_ms(timed.claims)}\n    complete {_ms(timed.completes)}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5_000)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "FLOWYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    print(f"# prune bench: {args.runs:,} runs, {platform.node()}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            async with fresh_database(backend, args.pg, Path(tmp)) as location:
                url = f"sqlite:///{location}" if backend == "sqlite" else location
                await measure(backend, url, args.runs)


if __name__ == "__main__":
    asyncio.run(main())
