"""What the throughput benches share: the workload, one measurement's result, a fresh
database per measurement, worker processes started and stopped, polling until done, and
the machine's description. ``throughput.py`` re-exports these for the other benches."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

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


async def drain(
    res: Result,
    cmds: Sequence[list[str]],
    env: dict[str, str],
    terminal: Callable[[], Awaitable[int]],
    timeout_s: float,
    log: Path,
) -> None:
    """Start the worker processes ``cmds``, wait until ``terminal()`` reaches the runs (the
    wall time, or the error, goes to ``res``) and stop them whatever happened."""
    workers = spawn(cmds, env, log)
    try:
        res.drain_wall_s = await wait_done(terminal, res.runs, workers, timeout_s, log)
    except (RuntimeError, TimeoutError) as exc:
        res.error = str(exc)
    finally:
        stop(workers)


def _engine(url: str) -> AsyncEngine:
    return create_async_engine(normalize_url(url), pool_size=1, max_overflow=0)


async def _rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(sa.text(sql)))


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


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


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
