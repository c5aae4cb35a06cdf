"""``flowyard worker`` subprocesses for durability tests: start, wait until ready, signal, and
always reap (no zombie, no open pipe: output goes to a log file)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

#: What ``flowyard worker`` prints on stderr once it is built and about to claim.
READY_LINE = "flowyard worker:"


def flowyard_executable() -> str:
    """The ``flowyard`` console script of the running interpreter's environment."""
    candidate = Path(sys.executable).with_name("flowyard")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("flowyard")
    if found is None:
        raise RuntimeError("the 'flowyard' console script is not installed (pip install -e .)")
    return found


class WorkerProcess:
    """One ``flowyard worker --db URL`` process with ``FLOWYARD_*`` overrides."""

    def __init__(
        self,
        db_url: str,
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.db_url = db_url
        self.log_path = log_path
        self.env = dict(env or {})
        self.concurrency = concurrency
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The running process (after :meth:`start`)."""
        if self._proc is None:
            raise RuntimeError("the worker was not started")
        return self._proc

    @property
    def pid(self) -> int:
        """Its process id (worker ids start with ``<host>:<pid>-``)."""
        return self.proc.pid

    def start(self) -> WorkerProcess:
        """Spawn the worker; its stdout and stderr go to :attr:`log_path`."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FLOWYARD_")
            or k in ("FLOWYARD_SECRET_KEY", "FLOWYARD_EGRESS_ALLOW")
        }
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "FLOWYARD_LOAD_PLUGINS": "0",
                "FLOWYARD_LOG_LEVEL": "INFO",
                **self.env,
            }
        )
        args = [flowyard_executable(), "--log-level", "WARNING", "worker", "--db", self.db_url]
        if self.concurrency is not None:
            args += ["--concurrency", str(self.concurrency)]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )
        return self

    def log(self) -> str:
        """Everything the process wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def running(self) -> bool:
        """True until the process exits."""
        return self._proc is not None and self._proc.poll() is None

    def ready(self) -> bool:
        """True once the worker printed its ready line (it may have exited since)."""
        return READY_LINE in self.log()

    async def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Wait until the worker printed its ready line (it migrated and will claim now)."""
        deadline = time.monotonic() + timeout_s
        while READY_LINE not in self.log():
            if not self.running():
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready within {timeout_s} s:\n{self.log()}")
            await asyncio.sleep(0.05)

    async def wait_exit(self, timeout_s: float) -> int:
        """Wait for the process to exit; its exit code. Raises if it takes longer."""
        deadline = time.monotonic() + timeout_s
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker still running after {timeout_s} s:\n{self.log()}")
            await asyncio.sleep(0.02)
        return code

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` if the process still runs."""
        if self.running():
            self.proc.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL (no cleanup at all, like a machine dying) and reap."""
        self.send(signal.SIGKILL)
        return self.proc.wait(timeout=10)

    def close(self) -> None:
        """Kill the process if it still runs and reap it. Safe to call twice."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(timeout=10)


class WorkerGroup:
    """Workers started by one test; :meth:`close` kills and reaps every one of them."""

    def __init__(self, db_url: str, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.db_url = db_url
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.workers: list[WorkerProcess] = []

    async def start(
        self,
        *,
        env: Mapping[str, str] | None = None,
        concurrency: int | None = None,
        ready_timeout_s: float = 20.0,
    ) -> WorkerProcess:
        """Start one more worker and wait until it is ready."""
        log_path = self.log_dir / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess(
            self.db_url, log_path, env={**self.env, **(env or {})}, concurrency=concurrency
        )
        self.workers.append(worker)
        worker.start()
        await worker.wait_ready(ready_timeout_s)
        return worker

    def spawn(
        self, *, env: Mapping[str, str] | None = None, concurrency: int | None = None
    ) -> WorkerProcess:
        """Start one more worker without waiting until it is ready (see
        :meth:`WorkerProcess.ready`); it is killed and reaped by :meth:`close` like the rest."""
        log_path = self.log_dir / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess(
            self.db_url, log_path, env={**self.env, **(env or {})}, concurrency=concurrency
        )
        self.workers.append(worker)
        worker.start()
        return worker

    def logs(self) -> str:
        """Every worker's output, for assertion messages."""
        return "\n".join(f"--- {w.log_path.name} (pid {w.pid})\n{w.log()}" for w in self.workers)

    def close(self) -> None:
        """Kill and reap every worker still running."""
        for worker in self.workers:
            worker.close()


@contextmanager
def worker_group(
    db_url: str, log_dir: Path, env: Mapping[str, str] | None = None
) -> Iterator[WorkerGroup]:
    """A :class:`WorkerGroup` that is always cleaned up."""
    group = WorkerGroup(db_url, log_dir, env)
    try:
        yield group
    finally:
        group.close()
