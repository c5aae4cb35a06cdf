"""The peers of ``throughput.py``, each measured like flowyard: the same N runs of a
3-step no-op chain, the same K worker processes (each a separate process started here and
stopped in a ``finally``, with the drain's timeout), checked (every run completed exactly
once) and timed from the peer's own timestamps.

- ``dbos``: DBOS Transact on PostgreSQL, a queue with global concurrency 200 (`_peer_dbos`);
- ``celery``: Celery on Redis (broker and results), chains of 3 tasks, 8 threads a worker
  process (`_peer_celery`);
- ``procrastinate`` on PostgreSQL, ``huey`` on SQLite (the first peers, kept).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

from harness import (
    BENCH_DIR,
    CHUNK,
    STEPS_PER_RUN,
    WORKER_POLL_S,
    Result,
    _engine,
    _rows,
    drain,
)

#: Where the Celery peer's broker and results live (keys under a prefix per measurement).
REDIS_URL = os.environ.get("FLOWYARD_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def _peer_cmd(module: str, entry: str, *extra: str) -> list[str]:
    return [sys.executable, "-c", f"import {module} as m; m.{entry}()", *extra]


def _peer_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


async def bench_procrastinate(
    procs: int, args: argparse.Namespace, location: str, log: Path
) -> Result:
    """The PostgreSQL peer: 3 chained procrastinate tasks per run."""
    import _peer_procrastinate as peer

    res = Result("postgres", procs, "procrastinate", args.runs, args.concurrency)
    dsn = location.replace("postgresql+asyncpg://", "postgresql://")
    await peer.setup(dsn)
    t0 = time.perf_counter()
    await peer.start_runs(dsn, args.runs, CHUNK)
    res.start_s = time.perf_counter() - t0

    cmd = _peer_cmd(
        "_peer_procrastinate",
        "worker_main",
        "--dsn",
        dsn,
        "--concurrency",
        str(args.concurrency),
        "--poll",
        str(WORKER_POLL_S),
    )
    engine = _engine(location)

    async def terminal() -> int:
        rows = await _rows(
            engine,
            "SELECT count(*) FILTER (WHERE task_name = 'bench_step3' AND status = 'succeeded')"
            " + count(*) FILTER (WHERE status IN ('failed', 'cancelled', 'aborted'))"
            " FROM procrastinate_jobs",
        )
        return int(rows[0][0])

    await drain(res, [cmd] * procs, _peer_env(), terminal, args.timeout, log)
    try:
        by_task: dict[tuple[str, str], int] = {
            (t, s): int(c)
            for t, s, c in await _rows(
                engine,
                "SELECT task_name, status::text, count(*) FROM procrastinate_jobs"
                " GROUP BY task_name, status",
            )
        }
        res.succeeded = by_task.get(("bench_step3", "succeeded"), 0)
        res.steps_done = sum(c for (_, s), c in by_task.items() if s == "succeeded")
        bad = {f"{t}:{s}": c for (t, s), c in by_task.items() if s != "succeeded"}
        res.failed = sum(c for (_, s), c in by_task.items() if s in ("failed", "aborted"))
        if bad:
            res.notes.append(f"jobs not succeeded: {bad}")
        [(first, last)] = await _rows(
            engine,
            "SELECT (SELECT min(at) FROM procrastinate_events WHERE type = 'started'),"
            " (SELECT max(at) FROM procrastinate_events WHERE type = 'succeeded')",
        )
        if first and last:
            res.drain_db_s = (last - first).total_seconds()
    finally:
        await engine.dispose()
    return res


async def bench_huey(procs: int, args: argparse.Namespace, location: str, log: Path) -> Result:
    """The SQLite peer: 3 chained huey tasks per run, K consumer processes."""
    import _peer_huey as peer

    res = Result("sqlite", procs, "huey", args.runs, args.concurrency)
    t0 = time.perf_counter()
    await asyncio.to_thread(peer.start_runs, location, args.runs, CHUNK)
    res.start_s = time.perf_counter() - t0

    cmd = _peer_cmd(
        "_peer_huey",
        "consumer_main",
        "--db",
        location,
        "--workers",
        str(args.concurrency),
        "--poll",
        str(WORKER_POLL_S),
    )

    async def terminal() -> int:
        return await asyncio.to_thread(peer.finished, location)

    await drain(res, [cmd] * procs, _peer_env(), terminal, args.timeout, log)
    ok, failed, first, last = await asyncio.to_thread(peer.outcome, location)
    res.succeeded, res.failed = ok, failed
    # Every finished run executed its three tasks (step3 only runs after step1 and step2).
    res.steps_done = ok * STEPS_PER_RUN
    if first is not None and last is not None:
        res.drain_db_s = last - first
    return res


async def bench_dbos(procs: int, args: argparse.Namespace, location: str, log: Path) -> Result:
    """DBOS: N workflows of 3 async steps enqueued in bulk on one queue, K worker processes."""
    import _peer_dbos as peer

    res = Result("postgres", procs, "dbos", args.runs, peer.CONCURRENCY)
    await asyncio.to_thread(peer.setup, location, poll=WORKER_POLL_S)
    t0 = time.perf_counter()
    await asyncio.to_thread(peer.start_runs, location, args.runs, CHUNK)
    res.start_s = time.perf_counter() - t0
    cmds = [
        _peer_cmd("_peer_dbos", "worker_main", "--url", location, "--executor", f"bench-{n}")
        for n in range(procs)
    ]
    engine = _engine(location)

    async def terminal() -> int:
        return int((await _rows(engine, peer.FINISHED_SQL))[0][0])

    await drain(res, cmds, _peer_env(), terminal, args.timeout, log)
    try:
        [(ok, step_rows, odd, recovered, first_ms, last_ms)] = await _rows(engine, peer.OUTCOME_SQL)
        res.succeeded, res.steps_done = int(ok), int(step_rows)
        res.failed = args.runs - res.succeeded
        if odd:
            res.notes.append(f"{odd} workflows without exactly {STEPS_PER_RUN} step rows")
            res.error = res.error or "not every workflow ran its steps once"
        if recovered:
            res.notes.append(f"{recovered} workflows recovered (started more than once)")
        if first_ms is not None and last_ms is not None:
            res.drain_db_s = (int(last_ms) - int(first_ms)) / 1000
    finally:
        await engine.dispose()
    return res


async def bench_celery(procs: int, args: argparse.Namespace, log: Path) -> Result:
    """Celery: N chains of 3 tasks published to Redis, K worker processes of 8 threads."""
    import _peer_celery as peer

    res = Result("postgres", procs, "celery", args.runs, args.celery_threads)
    prefix = f"fybench:{secrets.token_hex(4)}:"
    try:
        t0 = time.perf_counter()
        last_ids = await asyncio.to_thread(peer.start_runs, REDIS_URL, prefix, args.runs)
        res.start_s = time.perf_counter() - t0
        cmd = _peer_cmd(
            "_peer_celery",
            "worker_main",
            "--redis",
            REDIS_URL,
            "--prefix",
            prefix,
            "--threads",
            str(args.celery_threads),
        )

        async def terminal() -> int:
            return await asyncio.to_thread(peer.finished, REDIS_URL, prefix)

        await drain(res, [cmd] * procs, _peer_env(), terminal, args.timeout, log)
        ok, executed, problems, first, last = await asyncio.to_thread(
            peer.outcome, REDIS_URL, prefix, last_ids
        )
        res.succeeded, res.failed = ok, args.runs - ok
        res.steps_done = ok * STEPS_PER_RUN  # a third task runs after the first two only
        res.notes.extend(problems)
        if executed != ok:
            res.error = res.error or f"{executed} third tasks ran for {ok} chains"
        if first is not None and last is not None:
            res.drain_db_s = last - first
    finally:
        await asyncio.to_thread(peer.cleanup, REDIS_URL, prefix)
    return res
