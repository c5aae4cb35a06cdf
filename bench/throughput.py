"""Throughput: N runs of a 3-step no-op workflow, flowyard against its peers in the same run.

For each backend and each worker-process count K:

1. a fresh database (SQLite: a temp file; PostgreSQL: ``CREATE DATABASE bench_<rand>``,
   dropped at the end);
2. flowyard: save the workflow ``trigger -> set -> end``, time the bulk start of N runs
   (``store.start_runs`` in chunks of 1,000), then start K ``flowyard worker`` processes and
   wait until every run is terminal;
3. each peer of that backend (``peers.py``), same N, same 3-step chain, same K processes:
   DBOS (a queue, concurrency 200) and Celery (Redis, 8 threads a process) by default;
   procrastinate (PostgreSQL) and huey (SQLite) on request.

Drain time is measured from each system's own timestamps: the first step/task start to the
last run end, so interpreter start-up of the worker processes is excluded. The wall time
(worker launch to "all terminal" seen by the 0.2 s poller) is printed too. The table gives
flowyard's runs/s over each peer's, next to issue 13's target (DBOS >= 10x, Celery >= 7x).

    python bench/throughput.py                      # `make bench`: 50,000 runs, PostgreSQL, 2 procs
    python bench/throughput.py --runs 2000          # quick check
    python bench/throughput.py --backends sqlite,postgres --procs 1,4 --peers huey,procrastinate
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowyard.bootstrap import build
from flowyard.domain.records import NewRun
from flowyard.settings import Settings
from harness import (  # re-exported: the other benches import them from here
    BENCH_DIR,
    BUSY_WARN,
    CHUNK,
    POLL_S,
    STEPS_PER_RUN,
    TERMINAL_RUN,
    WORKER_POLL_S,
    WORKFLOW,
    Result,
    _as_utc,
    _busy_cores,
    _engine,
    _flowyard_url,
    _fmt,
    _machine,
    _pg_url,
    _ratio,
    _rows,
    _tail,
    drain,
    fresh_database,
    spawn,
    stop,
    wait_done,
)

__all__ = [
    "BENCH_DIR",
    "BUSY_WARN",
    "CHUNK",
    "POLL_S",
    "STEPS_PER_RUN",
    "TERMINAL_RUN",
    "WORKER_POLL_S",
    "WORKFLOW",
    "Result",
    "_as_utc",
    "_busy_cores",
    "_engine",
    "_flowyard_url",
    "_fmt",
    "_machine",
    "_pg_url",
    "_ratio",
    "_rows",
    "_tail",
    "bulk_start",
    "drain",
    "fresh_database",
    "spawn",
    "stop",
    "wait_done",
]

#: The backend each peer is measured on (Celery's store is Redis; it is compared with
#: flowyard on PostgreSQL, the deployment it would replace).
PEER_BACKEND = {
    "dbos": "postgres",
    "celery": "postgres",
    "procrastinate": "postgres",
    "huey": "sqlite",
}
#: Issue 13's targets: flowyard's runs/s over the peer's.
TARGETS = {"dbos": 10.0, "celery": 7.0}
DEFAULT_PEERS = "dbos,celery"

# -- flowyard --------------------------------------------------------------------------------


async def bulk_start(url: str, workflow: dict[str, Any], count: int) -> float:
    """Save ``workflow`` and start ``count`` runs of it (input ``{"i": i}``) in chunks of
    CHUNK; returns the seconds the starts took."""
    container = await build(Settings(db_url=url, load_plugins=False))
    try:
        record, version, _ = await container.service.save_workflow(workflow, "bench")
        new_runs = [
            NewRun(
                workflow_id=record.id,
                workflow_version=version.version,
                start_node="trigger",
                start_node_type="trigger",
                input={"i": i},
            )
            for i in range(count)
        ]
        t0 = time.perf_counter()
        for lo in range(0, len(new_runs), CHUNK):
            await container.store.start_runs(new_runs[lo : lo + CHUNK], datetime.now(UTC))
        return time.perf_counter() - t0
    finally:
        await container.close()


async def bench_flowyard(
    backend: str, procs: int, args: argparse.Namespace, location: str, log: Path
) -> Result:
    """Bulk start N runs, drain them with K ``flowyard worker`` processes."""
    res = Result(backend, procs, "flowyard", args.runs, args.concurrency)
    url = _flowyard_url(backend, location)
    res.start_s = await bulk_start(url, WORKFLOW, args.runs)

    env = {
        **os.environ,
        "FLOWYARD_POLL_INTERVAL_S": str(WORKER_POLL_S),
        "FLOWYARD_LOAD_PLUGINS": "0",
    }
    exe = str(Path(sys.executable).with_name("flowyard"))
    cmd = [exe, "worker", "--db", url, "--concurrency", str(args.concurrency)]
    engine = _engine(url)
    in_list = ", ".join(f"'{s}'" for s in TERMINAL_RUN)

    async def terminal() -> int:
        rows = await _rows(engine, f"SELECT count(*) FROM runs WHERE status IN ({in_list})")
        return int(rows[0][0])

    await drain(res, [cmd] * procs, env, terminal, args.timeout, log)
    try:
        for status, count in await _rows(
            engine, "SELECT status, count(*) FROM runs GROUP BY status"
        ):
            if status == "succeeded":
                res.succeeded = int(count)
            else:
                res.failed += int(count)
                res.notes.append(f"{count} runs {status}")
        step_rows = await _rows(engine, "SELECT status, count(*) FROM steps GROUP BY status")
        res.steps_done = sum(int(c) for s, c in step_rows if s == "succeeded")
        extra = {s: int(c) for s, c in step_rows if s != "succeeded"}
        if extra:
            res.notes.append(f"steps not succeeded: {extra}")
        [(first, last)] = await _rows(
            engine,
            "SELECT (SELECT min(created_at) FROM run_events WHERE type = 'step.started'),"
            " (SELECT max(finished_at) FROM runs)",
        )
        first_at, last_at = _as_utc(first), _as_utc(last)
        if first_at and last_at:
            res.drain_db_s = (last_at - first_at).total_seconds()
    finally:
        await engine.dispose()
    return res


# -- driver ----------------------------------------------------------------------------------


async def measure(
    system: str, backend: str, procs: int, args: argparse.Namespace, workdir: Path
) -> Result:
    """One measurement in its own fresh database; failures become a Result with an error."""
    log = _log_path(workdir, backend, system, procs)
    busy = await _busy_cores()
    try:
        async with fresh_database(backend, args.pg_url, workdir) as location:
            r = await _run(system, backend, procs, args, location, log)
    except ImportError as exc:
        reason = f"not installed ({exc.name}): pip install -e '.[bench]'"
        r = Result(backend, procs, system, args.runs, args.concurrency, error=reason)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        r = Result(backend, procs, system, args.runs, args.concurrency, error=reason)
    r.busy_before = busy
    return r


async def _run(
    system: str, backend: str, procs: int, args: argparse.Namespace, location: str, log: Path
) -> Result:
    if system == "flowyard":
        return await bench_flowyard(backend, procs, args, location, log)
    import peers

    match system:
        case "dbos":
            return await peers.bench_dbos(procs, args, location, log)
        case "celery":
            return await peers.bench_celery(procs, args, log)
        case "procrastinate":
            return await peers.bench_procrastinate(procs, args, location, log)
        case "huey":
            return await peers.bench_huey(procs, args, location, log)
    raise AssertionError(system)


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "-"


def _log_path(workdir: Path, backend: str, system: str, procs: int) -> Path:
    return workdir / f"{backend}-{system}-{procs}p.log"


def _report(r: Result, log: Path) -> None:
    """One progress line per measurement; problems are printed, never hidden."""
    status = "ok" if r.ok else f"INCOMPLETE: {r.error or r.notes}"
    print(
        f"  {r.backend:8} {r.procs}p {r.system:13} start {_fmt(r.start_rate())} runs/s"
        f"  drain {_fmt(r.drain_db_s, 2)} s (wall {_fmt(r.drain_wall_s, 2)} s)"
        f"  {_fmt(r.runs_rate())} runs/s  {r.succeeded}/{r.runs}  {status}",
        flush=True,
    )
    for note in r.notes:
        print(f"    note: {note}")
    if not r.ok and r.error and log.exists():
        print(f"    worker log tail:\n{_tail(log)}")


def table(results: Sequence[Result]) -> str:
    """The results as a Markdown table, each peer's row with flowyard's runs/s over its own
    (same backend group, same K) and the target, if issue 13 sets one."""
    by_key = {(r.backend, r.procs, r.system): r for r in results}
    head = (
        "| backend | procs | system | runs/s | steps/s | flowyard / this (runs/s) | target"
        " | start runs/s | drain (own clock) s | drain (wall) s | succeeded | busy before |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in results:
        fy = by_key.get((r.backend, r.procs, "flowyard"))
        ratio = target = ""
        if r.system != "flowyard" and fy is not None:
            ratio = _ratio(fy.runs_rate(), r.runs_rate())
            if r.system in TARGETS:
                target = _verdict(fy.runs_rate(), r.runs_rate(), TARGETS[r.system])
        lines.append(
            f"| {r.backend} | {r.procs} | {r.system} | {_fmt(r.runs_rate())}"
            f" | {_fmt(r.steps_rate())} | {ratio} | {target} | {_fmt(r.start_rate())}"
            f" | {_fmt(r.drain_db_s, 2)} | {_fmt(r.drain_wall_s, 2)}"
            f" | {r.succeeded}/{r.runs}{'' if r.ok else ' INCOMPLETE'} | {_fmt(r.busy_before, 1)} |"
        )
    return "\n".join(lines)


def _verdict(ours: float | None, theirs: float | None, target: float) -> str:
    if not ours or not theirs:
        return f">= {target:g}x: not measured"
    got = ours / theirs
    return (
        f">= {target:g}x: met"
        if got >= target
        else f">= {target:g}x: MISSED ({got / target:.0%} of it)"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=50_000, help="runs per measurement (default 50000)")
    p.add_argument("--backends", default="postgres", help="comma list: sqlite,postgres")
    p.add_argument("--procs", default="2", help="worker process counts (default 2)")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent steps per process")
    p.add_argument(
        "--peers",
        default=DEFAULT_PEERS,
        help=f"comma list of {', '.join(PEER_BACKEND)}, or none (default {DEFAULT_PEERS})",
    )
    p.add_argument("--no-peers", dest="peers", action="store_const", const="none")
    p.add_argument("--celery-threads", type=int, default=8, help="threads per Celery worker")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--timeout", type=float, default=None, help="seconds per drain")
    p.add_argument("--json", type=Path, default=None, help="write results here")
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.procs = [int(k) for k in args.procs.split(",") if k.strip()]
    args.peers = [s.strip() for s in args.peers.split(",") if s.strip() not in ("", "none")]
    if unknown := set(args.backends) - {"sqlite", "postgres"}:
        p.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if unknown := set(args.peers) - set(PEER_BACKEND):
        p.error(f"unknown peer(s): {', '.join(sorted(unknown))}")
    positive = (args.runs, args.concurrency, args.celery_threads, *args.procs)
    if any(n < 1 for n in positive):
        p.error("--runs, --concurrency, --celery-threads and --procs must be positive")
    if args.timeout is None:
        args.timeout = 120 + args.runs * 0.05
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement, print the table, optionally write JSON; exit 1 on failures."""
    args = parse_args(argv)
    machine = _machine()
    print(
        f"flowyard throughput: {args.runs} runs x {STEPS_PER_RUN} steps, concurrency "
        f"{args.concurrency}/process, procs {args.procs}, backends {args.backends}, "
        f"{machine['cpus']} CPUs, Python {machine['python']}, load average {_load()}",
        flush=True,
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="flowyard-bench-") as tmp:
        workdir = Path(tmp)
        for backend in args.backends:
            for procs in args.procs:
                systems = ["flowyard"] + [s for s in args.peers if PEER_BACKEND[s] == backend]
                for system in systems:
                    r = await measure(system, backend, procs, args, workdir)
                    results.append(r)
                    _report(r, _log_path(workdir, backend, system, procs))
    print()
    print(table(results))
    print(
        "\nruns/s and steps/s use each system's own clock (first step start -> last run end);"
        " ratios > 1 mean flowyard is faster. busy before: cores used by other processes"
        f" in the second before each measurement. Load average at the end: {_load()}."
    )
    if any((r.busy_before or 0) > BUSY_WARN for r in results):
        print(
            f"WARNING: other processes kept > {BUSY_WARN} core busy before some measurements;"
            " rerun on a quiet machine before quoting these numbers."
        )
    if args.json:
        payload = {
            "machine": machine,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "results": [
                {
                    **asdict(r),
                    "runs_per_s": r.runs_rate(),
                    "steps_per_s": r.steps_rate(),
                    "start_runs_per_s": r.start_rate(),
                }
                for r in results
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
