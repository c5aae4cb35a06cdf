"""The cost of a quota take, against the claim every worker already pays.

For each backend (SQLite, PostgreSQL), a fresh database and one store (the one workers
use). One quota that never refuses (1,000,000 per second, burst 1,000), then:

- *take*: ``take_quota([key])``, one after the other (lock the row, refill, take, write);
- *claim* (the peer): ``claim_steps(limit=1)`` on an empty queue, the statement a worker
  runs at every poll, also one write transaction;
- *take x20*: 20 concurrent takes on the same row (20 worker tasks contending).

Reported: p50 / p99 in ms, and the ratio take p50 / claim p50 measured in the same run.

    python bench/quotas.py                         # both backends, 2,000 takes each
    python bench/quotas.py --backends sqlite --n 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from flowyard.domain.clock import utc_now
from flowyard.domain.quotas import Quota
from flowyard.store import open_store
from throughput import _flowyard_url, _machine, fresh_database

KEY = "credential:bench"


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered) * 1000, 3),
        "p99": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
    }


async def _timed(n: int, fn: Callable[[], Awaitable[Any]]) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return samples


async def measure(backend: str, admin_url: str, n: int, workdir: Path) -> dict[str, Any]:
    """One backend's numbers."""
    async with fresh_database(backend, admin_url, workdir) as location:
        store = open_store(_flowyard_url(backend, location))
        try:
            await store.migrate()
            await store.put_quota(Quota(KEY, 1_000_000, 1.0, burst=1_000), utc_now())
            await _timed(50, lambda: store.take_quota([KEY], utc_now()))  # warm up
            take = await _timed(n, lambda: store.take_quota([KEY], utc_now()))
            claim = await _timed(
                n, lambda: store.claim_steps("bench", limit=1, now=utc_now(), lease_s=30.0)
            )

            async def one() -> float:
                started = time.perf_counter()
                await store.take_quota([KEY], utc_now())
                return time.perf_counter() - started

            contended: list[float] = []
            for _ in range(max(1, n // 20)):
                contended.extend(await asyncio.gather(*(one() for _ in range(20))))
        finally:
            await store.close()
    result = {"take": _ms(take), "claim": _ms(claim), "take_x20": _ms(contended)}
    result["ratio_take_to_claim_p50"] = round(result["take"]["p50"] / result["claim"]["p50"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print a table (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--pg", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": _machine(), "n": args.n}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            results[backend] = asyncio.run(measure(backend, args.pg, args.n, Path(tmp)))
            r = results[backend]
            print(
                f"{backend:10} take p50 {r['take']['p50']:7.3f} ms p99 {r['take']['p99']:7.3f} | "
                f"claim p50 {r['claim']['p50']:7.3f} ms | take x20 p50 "
                f"{r['take_x20']['p50']:7.3f} ms p99 {r['take_x20']['p99']:7.3f} | "
                f"take/claim {r['ratio_take_to_claim_p50']}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
