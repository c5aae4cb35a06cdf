"""Debian's PgBouncer, started by a test in transaction mode in front of the test's database,
and always stopped (SIGINT, then SIGKILL) and reaped."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

PGBOUNCER = "/usr/sbin/pgbouncer"


def pgbouncer_or_skip() -> str:
    """The executable; without it the test is skipped, or fails under FLOWYARD_REQUIRE_PG=1
    (CI installs it: .ci/run)."""
    found = PGBOUNCER if os.path.exists(PGBOUNCER) else shutil.which("pgbouncer")
    if found is None:
        message = "pgbouncer is not installed (apt-get install -y pgbouncer)"
        if os.environ.get("FLOWYARD_REQUIRE_PG") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def pgbouncer(pg_url: str, *, server_connections: int = 10) -> Iterator[str]:
    """PgBouncer (pool_mode=transaction, at most ``server_connections`` server connections)
    in front of the database of ``pg_url``; yields the same URL through it."""
    executable = pgbouncer_or_skip()
    url = sa.make_url(pg_url)
    port = _free_port()
    # PgBouncer refuses to run as root: it is started as the database's system user, which
    # must read its config and write its log.
    as_user = "postgres" if os.geteuid() == 0 else None
    workdir = Path(tempfile.mkdtemp(prefix="flowyard-pgbouncer-"))
    workdir.chmod(0o777)
    (workdir / "users.txt").write_text(f'"{url.username or "postgres"}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={url.host or '127.0.0.1'} port={url.port or 5432}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {workdir / 'users.txt'}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {server_connections}\n"
        "max_client_conn = 2000\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
    )
    for path in workdir.iterdir():
        path.chmod(0o666)
    args = [executable, str(workdir / "pgbouncer.ini")]
    if as_user:
        pwd.getpwnam(as_user)  # a clear KeyError when the user does not exist
        args[1:1] = ["-u", as_user]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = workdir / "pgbouncer.log"
                raise AssertionError(
                    f"pgbouncer did not start: {log.read_text() if log.exists() else ''}"
                )
            time.sleep(0.05)
        yield url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # immediate shutdown: close every connection
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
