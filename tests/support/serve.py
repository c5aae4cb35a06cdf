"""A real ``flowyard serve`` subprocess on a free port: start, log in, signal, always reap.

Its output goes to a log file (no pipe to fill); the port is the one uvicorn reports after
binding port 0, so parallel tests never race for a port.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from support.auth import PASSWORD
from support.procs import flowyard_executable

_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class ServeProcess:
    """``flowyard serve --db URL --port 0`` with ``FLOWYARD_*`` overrides; the admin's
    password is :data:`support.auth.PASSWORD`."""

    def __init__(
        self, db_url: str, log_path: Path, *, env: Mapping[str, str] | None = None
    ) -> None:
        self.db_url = db_url
        self.log_path = log_path
        self.env = dict(env or {})
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The running process (after :meth:`start`)."""
        if self._proc is None:
            raise RuntimeError("the server was not started")
        return self._proc

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (after :meth:`wait_ready`)."""
        if self.port is None:
            raise RuntimeError("the server is not ready")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeProcess:
        """Spawn the server; its stdout and stderr go to :attr:`log_path`."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FLOWYARD_") or k == "FLOWYARD_SECRET_KEY"
        }
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "FLOWYARD_LOAD_PLUGINS": "0",
                "FLOWYARD_ADMIN_PASSWORD": PASSWORD,
                "FLOWYARD_HOST": "127.0.0.1",
                "FLOWYARD_PORT": "0",
                **self.env,
            }
        )
        args = [flowyard_executable(), "serve", "--db", self.db_url]
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

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the server listens (uvicorn logged its port)."""
        deadline = time.monotonic() + timeout_s
        while (found := _LISTENING.search(self.log())) is None:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"serve not ready within {timeout_s} s:\n{self.log()}")
            await asyncio.sleep(0.05)
        self.port = int(found.group(1))

    async def login(self, username: str = "admin", password: str = PASSWORD) -> str:
        """An access token of ``username``."""
        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.post(
                "/api/v1/auth/token", data={"username": username, "password": password}
            )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` if the process still runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def wait_exit(self, timeout_s: float) -> int:
        """Wait for the process to exit; its exit code. Raises if it takes longer."""
        deadline = time.monotonic() + timeout_s
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"serve still running after {timeout_s} s:\n{self.log()}")
            await asyncio.sleep(0.02)
        return code

    def close(self) -> None:
        """Kill the process if it still runs and reap it. Safe to call twice."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(timeout=10)


@contextmanager
def serve_process(
    db_url: str, log_path: Path, env: Mapping[str, str] | None = None
) -> Iterator[ServeProcess]:
    """A started :class:`ServeProcess` that is always killed and reaped."""
    server = ServeProcess(db_url, log_path, env=env).start()
    try:
        yield server
    finally:
        server.close()
