"""Baseline throughput: N runs of a 3-step no-op workflow, flowyard against a peer.

For each backend (SQLite, PostgreSQL) and each worker-process count K:

1. a fresh database (SQLite: a temp file; PostgreSQL: ``CREATE DATABASE bench_<rand>``,
   dropped at the end);
2. flowyard: save the workflow ``trigger -> set -> end``, time the bulk start of N runs
   (``store.start_runs`` in chunks of 1,000), then start K ``flowyard worker`` processes and
   wait until every run is terminal;
3. the peer on the same backend, same N, same 3-step chain, same K and concurrency:
   procrastinate on PostgreSQL, huey (SqliteHuey) on SQLite.

Drain time is measured from database timestamps: the first step/task start to the last run
end, so interpreter start-up of the worker processes is excluded. The wall time (worker
launch to "all terminal" seen by the 0.2 s poller) is printed too.

    python bench/throughput.py                      # full run (~2 min on 2 cores)
    python bench/throughput.py --runs 500           # quick check
    python bench/throughput.py --backends sqlite --procs 1 --no-peers
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from flowyard.bootstrap import build
from flowyard.domain.records import NewRun
from flowyard.settings import Settings
from flowyard.store.factory import normalize_url

BENCH_DIR = Path(__file__).resolve().parent
CHUNK = 1_000
STEPS_PER_RUN = 3
POLL_S = 0.2
WORKER_POLL_S = 0.05
BUSY_WARN = 0.5

WORKFLOW: dict[str, Any] = {
    "name": "bench-noop-3",
    "description": "Three no-op steps: the throughput baseline.",
    "start": "trigger",
    "nodes": [
        {"id": "trigger", "type": "trigger", "next": "set"},
        {"id": "set", "type": "set", "config": {"values": {"x": "{{ input.i }}"}}, "next": "end"},
        {"id": "end", "type": "end"},
    ],
}

PEERS = {"sqlite": "huey", "postgres": "procrastinate"}
TERMINAL_RUN = ("succeeded", "failed", "cancelled", "timed_out")


@dataclass
class Result:
    """One measurement: one system on one backend with K worker processes."""

    backend: str
    procs: int
    system: str
    runs: int
    concurrency: int
    start_s: float | None = None
    drain_db_s: float | None = None
    drain_wall_s: float | None = None
    succeeded: int = 0
    failed: int = 0
    steps_done: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    #: CPU cores busy (with other work: none of ours runs then) in the second before.
    busy_before: float | None = None

    @property
    def ok(self) -> bool:
        """A complete measurement: every run succeeded and was timed."""
        return self.error is None and self.succeeded == self.runs and bool(self.drain_db_s)

    def start_rate(self) -> float | None:
        """Runs started per second (bulk start)."""
        return self.runs / self.start_s if self.start_s else None

    def runs_rate(self) -> float | None:
        """Runs finished per second over the DB-timestamp drain window."""
        return self.runs / self.drain_db_s if self.ok and self.drain_db_s else None

    def steps_rate(self) -> float | None:
        """Steps (or peer tasks) executed per second over the same window."""
        return self.steps_done / self.drain_db_s if self.ok and self.drain_db_s else None


# -- helpers ---------------------------------------------------------------------------------


def _as_utc(value: Any) -> datetime | None:
    """DB timestamps: SQLite gives naive UTC text, PostgreSQL aware datetimes."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _pg_url(admin_url: str, database: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{database}"


@contextlib.asynccontextmanager
async def fresh_database(backend: str, admin_url: str, workdir: Path) -> AsyncIterator[str]:
    """A new empty database for one measurement; removed afterwards."""
    name = f"bench_{secrets.token_hex(4)}"
    if backend == "sqlite":
        path = workdir / f"{name}.db"
        try:
            yield str(path)
        finally:
            for leftover in workdir.glob(f"{name}.db*"):
                leftover.unlink()
        return
    import asyncpg

    admin = await asyncpg.connect(admin_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _pg_url(admin_url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _flowyard_url(backend: str, location: str) -> str:
    return f"sqlite:///{location}" if backend == "sqlite" else location


def spawn(
    cmds: Sequence[list[str]], env: dict[str, str], log: Path
) -> list[subprocess.Popen[bytes]]:
    """Start the worker processes, stdout/stderr appended to ``log``."""
    procs = []
    with log.open("ab") as fh:
        for cmd in cmds:
            procs.append(
                subprocess.Popen(
                    cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    return procs


def stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every worker we started, then SIGKILL what is left after 10 s."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _tail(log: Path, lines: int = 8) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def wait_done(
    terminal: Callable[[], Awaitable[int]],
    runs: int,
    procs: Sequence[subprocess.Popen[bytes]],
    timeout_s: float,
    log: Path,
) -> float:
    """Poll until ``terminal()`` reaches ``runs``; returns the wall time. Raises on timeout
    or when every worker process has died."""
    t0 = time.perf_counter()
    while True:
        done = await terminal()
        if done >= runs:
            return time.perf_counter() - t0
        if all(p.poll() is not None for p in procs):
            raise RuntimeError(f"all worker processes exited ({done}/{runs} done): {_tail(log)}")
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"only {done}/{runs} runs terminal after {timeout_s:.0f} s")
        await asyncio.sleep(POLL_S)


def _engine(url: str) -> AsyncEngine:
    return create_async_engine(normalize_url(url), pool_size=1, max_overflow=0)


async def _rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(sa.text(sql)))


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
    workers = spawn([cmd] * procs, env, log)
    try:
        in_list = ", ".join(f"'{s}'" for s in TERMINAL_RUN)

        async def terminal() -> int:
            rows = await _rows(engine, f"SELECT count(*) FROM runs WHERE status IN ({in_list})")
            return int(rows[0][0])

        res.drain_wall_s = await wait_done(terminal, args.runs, workers, args.timeout, log)
    except (RuntimeError, TimeoutError) as exc:
        res.error = str(exc)
    finally:
        stop(workers)
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


# -- peers -----------------------------------------------------------------------------------


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
    workers = spawn([cmd] * procs, _peer_env(), log)
    try:

        async def terminal() -> int:
            rows = await _rows(
                engine,
                "SELECT count(*) FILTER (WHERE task_name = 'bench_step3' AND status = 'succeeded')"
                " + count(*) FILTER (WHERE status IN ('failed', 'cancelled', 'aborted'))"
                " FROM procrastinate_jobs",
            )
            return int(rows[0][0])

        res.drain_wall_s = await wait_done(terminal, args.runs, workers, args.timeout, log)
    except (RuntimeError, TimeoutError) as exc:
        res.error = str(exc)
    finally:
        stop(workers)
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
    workers = spawn([cmd] * procs, _peer_env(), log)
    try:

        async def terminal() -> int:
            return await asyncio.to_thread(peer.finished, location)

        res.drain_wall_s = await wait_done(terminal, args.runs, workers, args.timeout, log)
    except (RuntimeError, TimeoutError) as exc:
        res.error = str(exc)
    finally:
        stop(workers)
    ok, failed, first, last = await asyncio.to_thread(peer.outcome, location)
    res.succeeded, res.failed = ok, failed
    # Every finished run executed its three tasks (step3 only runs after step1 and step2).
    res.steps_done = ok * STEPS_PER_RUN
    if first is not None and last is not None:
        res.drain_db_s = last - first
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
            if system == "flowyard":
                r = await bench_flowyard(backend, procs, args, location, log)
            elif system == "procrastinate":
                r = await bench_procrastinate(procs, args, location, log)
            else:
                r = await bench_huey(procs, args, location, log)
    except ImportError as exc:
        reason = f"not installed ({exc.name}): pip install -e '.[bench]'"
        r = Result(backend, procs, system, args.runs, args.concurrency, error=reason)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        r = Result(backend, procs, system, args.runs, args.concurrency, error=reason)
    r.busy_before = busy
    return r


def _cpu_times() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]  # total, idle + iowait


async def _busy_cores(seconds: float = 1.0) -> float | None:
    """Cores kept busy by other processes, sampled while none of ours runs (Linux only)."""
    try:
        total0, idle0 = _cpu_times()
        await asyncio.sleep(seconds)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
    return round(busy * (os.cpu_count() or 1), 2)


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


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def table(results: Sequence[Result]) -> str:
    """The results as a Markdown table, each flowyard row with its ratio to the peer."""
    by_key = {(r.backend, r.procs, r.system): r for r in results}
    head = (
        "| backend | procs | system | runs/s | steps/s | ratio flowyard/peer (runs/s)"
        " | start runs/s | start ratio | drain (db) s | drain (wall) s | succeeded | busy before |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in results:
        peer = by_key.get((r.backend, r.procs, PEERS[r.backend]))
        is_fy = r.system == "flowyard" and peer is not None
        lines.append(
            f"| {r.backend} | {r.procs} | {r.system} | {_fmt(r.runs_rate())}"
            f" | {_fmt(r.steps_rate())}"
            f" | {_ratio(r.runs_rate(), peer.runs_rate()) if is_fy and peer else ''}"
            f" | {_fmt(r.start_rate())}"
            f" | {_ratio(r.start_rate(), peer.start_rate()) if is_fy and peer else ''}"
            f" | {_fmt(r.drain_db_s, 2)} | {_fmt(r.drain_wall_s, 2)}"
            f" | {r.succeeded}/{r.runs}{'' if r.ok else ' INCOMPLETE'} | {_fmt(r.busy_before, 1)} |"
        )
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        mem = round(int(first.split()[1]) / 1024 / 1024, 1)
    return {
        "cpus": os.cpu_count(),
        "mem_gib": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=2000, help="runs per measurement (default 2000)")
    p.add_argument("--backends", default="sqlite,postgres", help="comma list: sqlite,postgres")
    p.add_argument("--procs", default="1,4", help="worker process counts (default 1,4)")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent steps per process")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--timeout", type=float, default=None, help="seconds per drain")
    p.add_argument("--json", type=Path, default=None, help="write results here")
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.procs = [int(k) for k in args.procs.split(",") if k.strip()]
    if unknown := set(args.backends) - set(PEERS):
        p.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if args.runs < 1 or args.concurrency < 1 or any(k < 1 for k in args.procs):
        p.error("--runs, --concurrency and --procs must be positive")
    if args.timeout is None:
        args.timeout = 120 + args.runs * 0.1
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement, print the table, optionally write JSON; exit 1 on failures."""
    args = parse_args(argv)
    machine = _machine()
    print(
        f"flowyard throughput: {args.runs} runs x {STEPS_PER_RUN} steps, concurrency "
        f"{args.concurrency}/process, procs {args.procs}, backends {args.backends}, "
        f"{machine['cpus']} CPUs, Python {machine['python']}",
        flush=True,
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="flowyard-bench-") as tmp:
        workdir = Path(tmp)
        for backend in args.backends:
            for procs in args.procs:
                systems = ["flowyard"] + ([PEERS[backend]] if args.peers else [])
                for system in systems:
                    r = await measure(system, backend, procs, args, workdir)
                    results.append(r)
                    _report(r, _log_path(workdir, backend, system, procs))
    print()
    print(table(results))
    print(
        "\nruns/s and steps/s use the DB-timestamp window (first step start -> last run end);"
        " ratios > 1 mean flowyard is faster. busy before: cores used by other processes"
        " in the second before each measurement."
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
