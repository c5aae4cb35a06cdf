"""Retention: how fast ``flowyard prune`` deletes finished runs, and what a pruner running
in a loop costs the workers draining beside it (decision 0031).

For each backend, on a fresh database:

1. N runs of the 3-step no-op workflow are started in bulk and drained by an in-process
   worker; then a dry run and a real prune (``older_than 0s``) of the N finished runs are
   timed (runs/s and rows/s deleted);
2. N more runs are drained twice by the same worker, once alone and once with a pruner
   deleting every finished run in a loop (``--prune-every``), and the worker's claim and
   completion transactions are timed (p50, p99, max); on PostgreSQL ``pg_stat_activity`` is
   sampled every 20 ms for backends waiting on a lock: a pruner that made workers wait on
   its locks would show there.

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


async def lock_waits(url: str, stop: asyncio.Event) -> dict[str, int]:
    """PostgreSQL: sample ``pg_stat_activity`` every 20 ms until ``stop``; how many times a
    backend was seen waiting on a lock, by the first words of its query (and ``samples``)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    seen: dict[str, int] = {"samples": 0}
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 60) AS q"
                " FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database() AND pid <> pg_backend_pid()"
            )
            seen["samples"] += 1
            for row in rows:
                seen[row["q"]] = seen.get(row["q"], 0) + 1
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    return seen


async def drain(
    container: Container, pruning: bool, every_s: float
) -> tuple[float, Timed, int, dict[str, int]]:
    """Run a worker until no run is unfinished; with ``pruning`` a pruner deletes finished
    runs every ``every_s`` meanwhile. Seconds, the timings, runs pruned during the drain,
    lock waits seen (PostgreSQL)."""
    worker = container.new_worker(concurrency=64)
    timed = Timed(worker.store)
    worker.store = timed
    pruned = 0
    stop = asyncio.Event()
    url = container.settings.db_url
    sampler = asyncio.create_task(lock_waits(url, stop)) if url.startswith("postgresql") else None

    async def prune_forever() -> None:
        nonlocal pruned
        while True:
            pruned += (await container.retention.prune(older_than="0s")).runs
            await asyncio.sleep(every_s)

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
        stop.set()
    waits = await sampler if sampler is not None else {}
    return time.perf_counter() - t0, timed, pruned, waits


async def measure(backend: str, url: str, runs: int, every_s: float) -> None:
    await bulk_start(url, WORKFLOW, runs)
    settings = Settings(db_url=url, load_plugins=False, pruner=False, poll_interval_s=0.05)
    container = await build(settings)
    try:
        await drain(container, False, every_s)
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
            seconds, timed, pruned, waits = await drain(container, pruning, every_s)
            await container.retention.prune(older_than="0s")  # the next round starts empty
        finally:
            await container.close()
        label = f"with a pruner every {every_s:g} s" if pruning else "alone"
        print(
            f"{backend}: drain {runs:,} runs {label}: {seconds:.1f} s "
            f"({runs / seconds:,.0f} runs/s; pruned meanwhile {pruned:,})\n"
            f"    claim    {_ms(timed.claims)}\n    complete {_ms(timed.completes)}"
        )
        if waits:
            samples = waits.pop("samples")
            print(f"    lock waits seen in {samples} samples of pg_stat_activity: {waits or 0}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5_000)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument(
        "--prune-every", type=float, default=0.01, help="Seconds between prunes in a drain"
    )
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
                await measure(backend, url, args.runs, args.prune_every)


if __name__ == "__main__":
    asyncio.run(main())
