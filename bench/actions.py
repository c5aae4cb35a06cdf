"""State-machine action latency over HTTP, idle and behind a queue of 50,000 pending steps.

For each backend (SQLite, PostgreSQL) and each scenario, a fresh database and one
``flowyard serve`` process (1 in-process worker, rate limits off, its own key file) on
loopback. The client (httpx, one connection) then, for each of N runs of the approval
sample (``examples/approval_state_machine.json``):

1. ``POST /api/v1/workflows/{id}/runs`` (timed: *start*),
2. ``POST /runs/{id}/actions/submit`` at once (timed: *submit*: the first action after the
   start, while no worker has run the run yet),
3. ``POST /runs/{id}/actions/approve`` at once (timed: *approve*: the next action the moment
   the previous one answered),
4. ``POST /runs/{id}/signals/ping`` (timed: *signal*, the peer: a write of the same size on
   the same path, which never waited for a worker).

Every answer must be 200/202: a 409 is counted and fails the run. Scenarios: *idle* (an
empty queue) and *backlog* (50,000 runs of the 3-step no-op workflow of
``bench/throughput.py`` bulk started first: 50,000 pending steps that the server's worker
keeps draining during the measurement). Reported: p50 / p99 / max in ms per request kind,
the ratio action p50 / signal p50, and the pending steps before and after.

    python bench/actions.py                      # both backends, both scenarios (~3 min)
    python bench/actions.py --backends sqlite --runs 100
    python bench/actions.py --json out.json
    python bench/actions.py --topology split     # workers in their own process
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from throughput import (
    WORKFLOW,
    _engine,
    _flowyard_url,
    _machine,
    _rows,
    _tail,
    bulk_start,
    fresh_database,
    spawn,
    stop,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = json.loads((ROOT / "examples" / "approval_state_machine.json").read_text())
PASSWORD = "bench-actions-purple-larch"
DOC = {"document": "q3-budget.pdf", "author": "ada"}
KINDS = ("start", "submit", "approve", "signal")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve(
    url: str, port: int, workdir: Path, log: Path, topology: str = "embedded"
) -> list[subprocess.Popen[bytes]]:
    """``flowyard serve`` with its in-process worker (``embedded``), or with none and one
    ``flowyard worker`` process beside it (``split``: the API's event loop serves only
    requests, as in a deployment with separate workers)."""
    env = {
        **os.environ,
        "FLOWYARD_ADMIN_PASSWORD": PASSWORD,
        "FLOWYARD_RATE_LIMIT_ENABLED": "0",
        "FLOWYARD_LOAD_PLUGINS": "0",
        "FLOWYARD_KEY_FILE": str(workdir / f"key-{port}"),
        "FLOWYARD_LOG_LEVEL": "WARNING",
    }
    if topology == "split":
        env["FLOWYARD_WORKERS"] = "0"
    flowyard = str(Path(sys.executable).with_name("flowyard"))
    cmds = [[flowyard, "serve", "--db", url, "--port", str(port)]]
    if topology == "split":
        cmds.append([flowyard, "worker", "--db", url])
    return spawn(cmds, env, log)


async def ready(
    http: httpx.AsyncClient, procs: Sequence[subprocess.Popen[bytes]], log: Path
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in procs):
            raise RuntimeError(f"serve exited: {_tail(log)}")
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"serve not ready after 60 s: {_tail(log)}")


async def login_and_save(http: httpx.AsyncClient, definition: dict[str, Any]) -> str:
    """Log ``http`` in as the admin and save ``definition``; its workflow id."""
    token = await http.post("/api/v1/auth/token", data={"username": "admin", "password": PASSWORD})
    token.raise_for_status()
    http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    created = await http.post("/api/v1/workflows", json=definition)
    created.raise_for_status()
    return str(created.json()["workflow"]["id"])


async def pending_steps(url: str) -> int:
    engine = _engine(url)
    try:
        rows = await _rows(
            engine, "select count(*) from steps where status in ('scheduled', 'retrying')"
        )
        return int(rows[0][0])
    finally:
        await engine.dispose()


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(
    backend: str, scenario: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    topology = args.topology
    log = workdir / f"serve-{backend}-{scenario}-{topology}.log"
    async with fresh_database(backend, args.pg_admin_url, workdir) as location:
        url = _flowyard_url(backend, location)
        started_backlog = 0.0
        if scenario == "backlog":
            started_backlog = await bulk_start(url, WORKFLOW, args.backlog)
        port = free_port()
        procs = serve(url, port, workdir, log, topology)
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                await ready(http, procs, log)
                workflow_id = await login_and_save(http, SAMPLE)
                before = await pending_steps(url)
                times: dict[str, list[float]] = {k: [] for k in KINDS}
                conflicts = 0
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    run = await http.post(
                        f"/api/v1/workflows/{workflow_id}/runs", json={"input": DOC}
                    )
                    times["start"].append(time.perf_counter() - t0)
                    run.raise_for_status()
                    run_id = run.json()["id"]
                    for action in ("submit", "approve"):
                        t0 = time.perf_counter()
                        moved = await http.post(f"/api/v1/runs/{run_id}/actions/{action}")
                        times[action].append(time.perf_counter() - t0)
                        if moved.status_code == 409:
                            conflicts += 1
                        elif moved.status_code != 200:
                            raise RuntimeError(f"{action}: {moved.status_code} {moved.text}")
                    t0 = time.perf_counter()
                    signal = await http.post(f"/api/v1/runs/{run_id}/signals/ping", json={})
                    times["signal"].append(time.perf_counter() - t0)
                    if signal.status_code == 409:
                        continue  # the run already ended: a refusal is a valid answer too
                    signal.raise_for_status()
                after = await pending_steps(url)
        finally:
            stop(procs)
    stats = {
        kind: {
            "p50_ms": statistics.median(values) * 1000,
            "p99_ms": pct(values, 0.99) * 1000,
            "max_ms": max(values) * 1000,
        }
        for kind, values in times.items()
    }
    return {
        "backend": backend,
        "scenario": scenario,
        "topology": topology,
        "runs": args.runs,
        "backlog_start_s": round(started_backlog, 2),
        "pending_before": before,
        "pending_after": after,
        "conflicts": conflicts,
        "stats": stats,
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    head = (
        "| backend | scenario | worker | pending steps (before -> after) | submit p50 / p99 | "
        "approve p50 / p99 | start p50 / p99 | signal p50 / p99 (peer) | "
        "approve / signal p50 | 409s |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in results:
        s = r["stats"]

        def cell(kind: str, s: dict[str, Any] = s) -> str:
            return f"{s[kind]['p50_ms']:.1f} / {s[kind]['p99_ms']:.1f} ms"

        ratio = s["approve"]["p50_ms"] / s["signal"]["p50_ms"]
        lines.append(
            f"| {r['backend']} | {r['scenario']} | {r['topology']} | {r['pending_before']:,} -> "
            f"{r['pending_after']:,} | {cell('submit')} | {cell('approve')} | "
            f"{cell('start')} | {cell('signal')} | {ratio:.2f}x | {r['conflicts']} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--scenarios", default="idle,backlog")
    p.add_argument("--runs", type=int, default=300, help="state-machine runs per measurement")
    p.add_argument("--backlog", type=int, default=50_000, help="pending runs in 'backlog'")
    p.add_argument(
        "--pg-admin-url",
        default=os.environ.get(
            "FLOWYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    p.add_argument(
        "--topology",
        choices=("embedded", "split"),
        default="embedded",
        help="embedded: serve's in-process worker; split: serve without workers + one "
        "'flowyard worker' process",
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--keep-logs", type=Path, help="write the server logs here, and keep them")
    return p.parse_args(argv)


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="flowyard-bench-actions-") as tmp:
        if args.keep_logs:
            tmp = str(args.keep_logs)
        for backend in args.backends.split(","):
            for scenario in args.scenarios.split(","):
                print(f"-- {backend} / {scenario}", file=sys.stderr, flush=True)
                results.append(await measure(backend, scenario, args, Path(tmp)))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"machine": _machine(), "results": results}, indent=2))
    return 1 if any(r["conflicts"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
