"""Where a drain's time goes: N runs of the 3-step no-op workflow bulk started on a fresh
PostgreSQL database, drained by ONE in-process worker; prints the worker's CPU per run, the
rest of the machine's (PostgreSQL, mostly: read from /proc/stat, so run it on a quiet
machine), the statements it sent (by their first words) and the rows it left.

    python bench/drain_profile.py --runs 3000                 # numbers
    python bench/drain_profile.py --runs 3000 --profile out   # + a CPU-time cProfile dump

Compare two checkouts by pointing PYTHONPATH at each one's src/ (docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from flowyard.bootstrap import build
from flowyard.settings import Settings
from throughput import WORKFLOW, bulk_start


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (not idle, not waiting for I/O)."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


async def main(args: argparse.Namespace) -> None:
    n = args.runs
    name = f"prof_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(args.pg_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = args.pg_url.rpartition("/")[0] + f"/{name}"
    try:
        await bulk_start(url, WORKFLOW, n)
        c = await build(Settings(db_url=url, load_plugins=False, scheduler=False, pruner=False))
        stmts: collections.Counter[str] = collections.Counter()
        engine = c.store._write

        @sa.event.listens_for(engine.sync_engine, "before_cursor_execute")
        def count(*a: Any) -> None:
            stmts[" ".join(a[2].split()[:4])[:70]] += 1

        worker = c.new_worker(concurrency=args.concurrency)

        async def done() -> int:
            async with engine.connect() as conn:
                sql = "select count(*) from runs where status in ('succeeded', 'failed')"
                return int((await conn.execute(sa.text(sql))).scalar() or 0)

        prof = cProfile.Profile(time.process_time)
        t0, cpu0, busy0 = time.perf_counter(), time.process_time(), busy_seconds()
        if args.profile:
            prof.enable()
        task = asyncio.create_task(worker.run())
        while await done() < n:
            await asyncio.sleep(0.1)
        if args.profile:
            prof.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        rest = busy_seconds() - busy0 - cpu
        worker.stop()
        await task
        print(f"{n} runs in {wall:.2f} s: {n / wall:.0f} runs/s; {worker.stats}")
        per_run = 1000 / n
        print(f"worker CPU {cpu * per_run:.2f} ms/run; the rest {rest * per_run:.2f} ms/run")
        for key, times in stmts.most_common(20):
            print(f"{times:7d}  {key}")
        async with engine.connect() as conn:
            for table in ("runs", "steps", "run_events"):
                rows = (await conn.execute(sa.text(f"select count(*) from {table}"))).scalar()
                print(f"{table}: {rows} rows")
        await c.close()
        if args.profile:
            prof.dump_stats(args.profile)
            print(f"profile written to {args.profile} (python -m pstats {args.profile})")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--profile", help="write a CPU-time cProfile dump here")
    asyncio.run(main(parser.parse_args()))
