"""Latency at idle (issue 13): one 3-step run from ``POST`` to ``succeeded``, and the worker's
memory over a drain.

For each backend and topology, a fresh database, ``flowyard serve`` on loopback (rate limits
off) and, for ``split``, no in-process worker and one ``flowyard worker`` process beside it
(on PostgreSQL it wakes on ``LISTEN/NOTIFY``, not on its poll). The client (httpx, one
connection) then starts N runs of the 3-step no-op workflow of ``bench/throughput.py`` one
after the other, each once the previous one ended, and measures:

* **server**: the run row's ``finished_at - created_at`` (the run's own clock: from the
  transaction that created it to the one that ended it; no polling in it);
* **client**: from sending ``POST /workflows/{id}/runs`` to seeing the row ``succeeded`` (a
  read of the row every 0.5 ms on its own connection: the resolution of this column).

Then, for the memory line, the worker process (or ``serve``, embedded) drains
``--drain-runs`` runs bulk started in one go; its resident set (``VmRSS`` of
``/proc/<pid>/status``) is sampled every 0.2 s and reported at the drain's start, its
sampled peak, and its end.

    python bench/latency.py                                   # PostgreSQL split + SQLite embedded
    python bench/latency.py --backends postgres --topologies split --runs 500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).parent))
from actions import free_port, login_and_save, pct, ready, serve
from harness import _flowyard_url, _machine, fresh_database, stop
from throughput import WORKFLOW, bulk_start

TERMINAL = ("succeeded", "failed", "cancelled")


class RunRows:
    """Reads a run's status and clock straight from the database (its own connection)."""

    def __init__(self, backend: str, location: str) -> None:
        self.backend, self.location = backend, location
        self._pg: asyncpg.Connection | None = None
        self._lite: sqlite3.Connection | None = None

    async def open(self) -> None:
        if self.backend == "postgres":
            self._pg = await asyncpg.connect(self.location)
        else:
            self._lite = sqlite3.connect(f"file:{self.location}?mode=ro", uri=True)

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._lite is not None:
            self._lite.close()

    async def read(self, run_id: str) -> tuple[str, float | None]:
        """The run's status and, once ended, finished_at - created_at in seconds."""
        sql = "SELECT status, {} FROM runs WHERE id = {}".format(
            "EXTRACT(EPOCH FROM finished_at - created_at)"
            if self.backend == "postgres"
            else "(julianday(finished_at) - julianday(created_at)) * 86400.0",
            "$1" if self.backend == "postgres" else "?",
        )
        if self._pg is not None:
            row = await self._pg.fetchrow(sql, run_id)
        else:
            assert self._lite is not None
            row = self._lite.execute(sql, (run_id,)).fetchone()
        if row is None:
            return "missing", None
        return str(row[0]), (float(row[1]) if row[1] is not None else None)


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM: its peak so far) of a process in KiB."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


async def one_run_each(
    http: httpx.AsyncClient, rows: RunRows, workflow_id: str, n: int
) -> tuple[list[float], list[float]]:
    server, client = [], []
    for i in range(n):
        t0 = time.perf_counter()
        started = await http.post(f"/api/v1/workflows/{workflow_id}/runs", json={"input": {"i": i}})
        started.raise_for_status()
        run_id = started.json()["id"]
        deadline = t0 + 30
        while True:
            status, took = await rows.read(run_id)
            if status in TERMINAL:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"run {run_id} still {status} after 30 s")
            await asyncio.sleep(0.0005)
        client.append(time.perf_counter() - t0)
        if status != "succeeded" or took is None:
            raise RuntimeError(f"run {run_id} ended {status}")
        server.append(took)
    return server, client


async def drain_memory(
    url: str, location: str, backend: str, proc: subprocess.Popen[bytes], count: int
) -> dict[str, float]:
    """Bulk start ``count`` runs and sample ``proc``'s memory until none is left."""
    await bulk_start(url, WORKFLOW, count)
    rows = RunRows(backend, location)
    await rows.open()
    first, _ = rss_kib(proc.pid)
    peak = first
    t0 = time.perf_counter()
    try:
        count_sql = "SELECT count(*) FROM runs WHERE finished_at IS NULL"
        while True:
            rss, _ = rss_kib(proc.pid)
            peak = max(peak, rss)
            if rows._pg is not None:
                left = await rows._pg.fetchval(count_sql)
            else:
                assert rows._lite is not None
                left = rows._lite.execute(count_sql).fetchone()[0]
            if left == 0:
                break
            if time.perf_counter() - t0 > 900:
                raise TimeoutError(f"{left} runs left after 900 s")
            await asyncio.sleep(0.2)
    finally:
        await rows.close()
    last, _ = rss_kib(proc.pid)
    return {
        "runs": count,
        "drain_s": time.perf_counter() - t0,
        "rss_start_mib": first / 1024,
        "rss_peak_mib": max(peak, last) / 1024,
        "rss_end_mib": last / 1024,
    }


async def measure(
    backend: str, topology: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    log = workdir / f"serve-{backend}-{topology}.log"
    async with fresh_database(backend, args.pg_admin_url, workdir) as location:
        url = _flowyard_url(backend, location)
        port = free_port()
        procs = serve(url, port, workdir, log, topology)
        rows = RunRows(backend, location)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                await ready(http, procs, log)
                workflow_id = await login_and_save(http, WORKFLOW)
                await rows.open()
                await one_run_each(http, rows, workflow_id, args.warmup)
                server, client = await one_run_each(http, rows, workflow_id, args.runs)
                await rows.close()
                memory = (
                    await drain_memory(url, location, backend, procs[-1], args.drain_runs)
                    if args.drain_runs
                    else {}
                )
        finally:
            await rows.close()
            stop(procs)
    return {
        "backend": backend,
        "topology": topology,
        "runs": args.runs,
        "server_p50_ms": statistics.median(server) * 1000,
        "server_p99_ms": pct(server, 0.99) * 1000,
        "client_p50_ms": statistics.median(client) * 1000,
        "client_p99_ms": pct(client, 0.99) * 1000,
        "memory": memory,
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| backend | worker | runs | POST -> succeeded p50 / p99 (client) "
        "| created -> finished p50 / p99 (run row) | target p50 <= 10 ms | drain: runs, s "
        "| worker RSS start / peak / end |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["memory"]
        mem = (
            f"{m['rss_start_mib']:.0f} / {m['rss_peak_mib']:.0f} / {m['rss_end_mib']:.0f} MiB"
            if m
            else ""
        )
        drained = f"{m['runs']:,}, {m['drain_s']:.1f}" if m else ""
        verdict = (
            "met" if r["client_p50_ms"] <= 10 else f"missed by {r['client_p50_ms'] - 10:.1f} ms"
        )
        lines.append(
            f"| {r['backend']} | {r['topology']} | {r['runs']} "
            f"| {r['client_p50_ms']:.1f} / {r['client_p99_ms']:.1f} ms "
            f"| {r['server_p50_ms']:.1f} / {r['server_p99_ms']:.1f} ms "
            f"| {verdict} | {drained} | {mem} |"
        )
    return "\n".join(lines)


async def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="postgres,sqlite")
    p.add_argument(
        "--topologies",
        default=None,
        help="comma list of embedded,split (default: split on PostgreSQL, embedded on SQLite)",
    )
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--drain-runs", type=int, default=20_000, help="0: no memory line")
    p.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args(argv)
    machine = _machine()
    print(f"# latency at idle: {machine}, load average {os.getloadavg()[0]:.1f} at start")
    results = []
    with tempfile.TemporaryDirectory(prefix="flowyard-latency-") as tmp:
        for backend in args.backends.split(","):
            topologies = args.topologies or ("split" if backend == "postgres" else "embedded")
            for topology in topologies.split(","):
                print(f"-- {backend} / {topology}", flush=True)
                results.append(await measure(backend, topology, args, Path(tmp)))
    print(table(results))
    print(
        f"# load average {os.getloadavg()[0]:.1f} at the end; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
