"""Interactive latency while a campaign drains, and the claim's plan under its backlog.

On a fresh PostgreSQL database (the `bench/throughput.py` helpers):

1. save the 3-step no-op workflow of `bench/throughput.py` and start a campaign of N runs of
   it (`service.start_campaign`, default 50,000: 50,000 due steps);
2. with `--explain`, print `EXPLAIN (ANALYZE, BUFFERS)` of the claim's two statements
   against that backlog, in a transaction rolled back (the lanes read off the index, and the
   claim from the campaign's lane);
3. start K `flowyard worker` processes (default 2, concurrency 32, 0.05 s poll) and, once
   1,000 campaign runs have started, start M interactive runs (default 20) of a second copy
   of the workflow, one every `--every` seconds (default 1; 0: one after the other), through
   `service.start_run` (what `POST /workflows/{id}/runs` calls), and time each from its start
   to `succeeded` (polled on its own connection);
4. report p50 / p99 / max of those latencies, and how many campaign runs had started and
   finished when the measurement began and ended (the campaign kept draining meanwhile).

The same script runs against any version of flowyard that has campaigns (the "before" of
decision 0032 is main without priorities: the interactive runs queue behind the backlog).

    python bench/fairness.py                       # 50,000 runs, 2 workers, 20 samples
    python bench/fairness.py --runs 5000 --samples 10 --every 0 --explain
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from flowyard.bootstrap import build
from flowyard.campaigns.items import ItemFormat
from flowyard.settings import Settings
from flowyard.store.factory import normalize_url
from throughput import WORKER_POLL_S, WORKFLOW, _engine, _rows, _tail, fresh_database, spawn, stop

INTERACTIVE = {**WORKFLOW, "name": "bench-interactive-3"}


def _ndjson(count: int) -> bytes:
    return b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(count))


def _literal(stmt: Any) -> str:
    """``stmt`` as PostgreSQL text with its parameters inlined (for EXPLAIN)."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    return str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


async def _explain(url: str) -> str:
    """EXPLAIN ANALYZE of the claim's statements (new claim only), rolled back."""
    from datetime import UTC, datetime

    from flowyard.store.claim import DUE_LANES, claim_statement

    engine = _engine(url)
    out: list[str] = []
    now = datetime.now(UTC)
    try:
        async with engine.connect() as conn:
            [(lane, priority)] = list(
                await conn.execute(sa.text("SELECT id, priority FROM campaigns LIMIT 1"))
            )
            await conn.execute(sa.text("ANALYZE steps"))
            await conn.commit()
            tx = await conn.begin()
            lanes = _literal(DUE_LANES.bindparams(now=now))
            plan = await conn.execute(sa.text("EXPLAIN (ANALYZE, BUFFERS) " + lanes))
            out.append("-- the lanes with due steps (DUE_LANES)")
            out.extend(row[0] for row in plan)
            claim = claim_statement(
                "bench", limit=32, now=now, lease_s=30, priority=priority, lane=lane
            )
            plan = await conn.execute(sa.text("EXPLAIN (ANALYZE, BUFFERS) " + _literal(claim)))
            out.append("-- the claim from the campaign's lane (claim_statement, limit 32)")
            out.extend(row[0] for row in plan)
            await tx.rollback()
    finally:
        await engine.dispose()
    return "\n".join(out)


async def measure(args: argparse.Namespace, url: str, log: Path) -> dict[str, Any]:
    container = await build(Settings(db_url=url, load_plugins=False))
    result: dict[str, Any] = {
        "runs": args.runs,
        "procs": args.procs,
        "samples": args.samples,
        "every_s": args.every,
    }
    try:
        service = container.service
        await service.save_workflow(WORKFLOW, "bench")
        await service.save_workflow(INTERACTIVE, "bench")
        t0 = time.perf_counter()
        campaign, _ = await service.start_campaign(
            WORKFLOW["name"], "backlog", ItemFormat.NDJSON, io.BytesIO(_ndjson(args.runs))
        )
        result["campaign_start_s"] = round(time.perf_counter() - t0, 2)
        if args.explain:
            result["explain"] = await _explain(url)
            print(result["explain"])
        env = {
            **os.environ,
            "FLOWYARD_POLL_INTERVAL_S": str(WORKER_POLL_S),
            "FLOWYARD_LOAD_PLUGINS": "0",
        }
        exe = str(Path(sys.executable).with_name("flowyard"))
        cmd = [exe, "worker", "--db", url, "--concurrency", "32"]
        engine = _engine(url)
        workers = spawn([cmd] * args.procs, env, log)
        try:
            started_sql = (
                "SELECT count(*) FROM runs WHERE campaign_id IS NOT NULL AND status <> 'pending'"
            )
            finished_sql = (
                "SELECT count(*) FROM runs WHERE campaign_id IS NOT NULL"
                " AND status IN ('succeeded', 'failed', 'cancelled', 'timed_out')"
            )

            async def progress() -> dict[str, int]:
                started = int((await _rows(engine, started_sql))[0][0])
                return {
                    "started": started,
                    "finished": int((await _rows(engine, finished_sql))[0][0]),
                }

            deadline = time.monotonic() + 120
            while (await progress())["started"] < 1000:
                if time.monotonic() > deadline or all(p.poll() is not None for p in workers):
                    raise RuntimeError(f"the drain did not begin: {_tail(log)}")
                await asyncio.sleep(0.2)
            result["campaign_before"] = await progress()
            latencies: list[float] = []
            # One connection per sample in flight: each polls its run on its own.
            poller = create_async_engine(normalize_url(url), pool_size=args.samples + 1)

            async def one(i: int) -> None:
                """Start interactive run ``i`` at its time, wait until it has ended."""
                await asyncio.sleep(i * args.every)
                started = time.perf_counter()
                run, _ = await service.start_run(INTERACTIVE["name"], {"i": i}, actor="bench")
                status = ""
                async with poller.connect() as conn:
                    while status not in ("succeeded", "failed", "cancelled", "timed_out"):
                        await asyncio.sleep(0.002 if args.every == 0 else 0.01)
                        status = (
                            await conn.execute(
                                sa.text("SELECT status FROM runs WHERE id = :id"), {"id": run.id}
                            )
                        ).scalar_one()
                        await conn.commit()
                        if time.perf_counter() - started > args.timeout:
                            raise TimeoutError(f"interactive run {run.id} still {status}")
                latencies.append((time.perf_counter() - started) * 1000)
                assert status == "succeeded", status

            try:
                if args.every == 0:  # one after the other
                    for i in range(args.samples):
                        await one(i)
                else:  # one every `every` seconds, each timed on its own
                    await asyncio.gather(*(one(i) for i in range(args.samples)))
            finally:
                await poller.dispose()
            result["campaign_after"] = await progress()
            latencies.sort()
            result["latency_ms"] = {
                "p50": round(statistics.median(latencies), 1),
                "p99": round(latencies[max(0, round(0.99 * len(latencies)) - 1)], 1),
                "max": round(latencies[-1], 1),
            }
        finally:
            stop(workers)
            await engine.dispose()
    finally:
        await container.close()
    result["campaign_id"] = campaign.id
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument(
        "--every",
        type=float,
        default=1.0,
        help="seconds between interactive starts, each timed on its own (0: one after another)",
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "workers.log"
        async with fresh_database("postgres", args.pg_url, Path(tmp)) as url:
            result = await measure(args, url, log)
    result["load_before"] = os.getloadavg()[0]
    shown = {k: v for k, v in result.items() if k != "explain"}
    print(json.dumps(shown, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
