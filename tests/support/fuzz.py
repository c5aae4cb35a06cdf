"""Fuzz the API with schemathesis against a real server (``make fuzz``; a bounded run is part
of the suite: tests/api/test_fuzz.py).

Starts ``flowyard serve`` on a fresh SQLite database in a temp directory (loopback, a free
port, the samples loaded, rate limits off), logs in as the first-start admin, and runs
``schemathesis run`` on ``/openapi.json`` with that token. Checks: no 5xx, responses match
their documented schema, status code and content type. Exit status: schemathesis's.

    python -m support.fuzz                  # from tests/: 50 examples per operation
    python -m support.fuzz --max-examples 5 --phases examples,fuzzing
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PASSWORD = "fuzzing the whole api"
CHECKS = (
    "not_a_server_error",
    "response_schema_conformance",
    "status_code_conformance",
    "content_type_conformance",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FLOWYARD_DB_URL": f"sqlite:///{workdir / 'fuzz.db'}",
        "FLOWYARD_KEY_FILE": str(workdir / "fuzz.key"),
        "FLOWYARD_ADMIN_PASSWORD": PASSWORD,
        "FLOWYARD_RATE_LIMIT_ENABLED": "false",
        "FLOWYARD_LOGIN_MAX_FAILURES": "0",
        "FLOWYARD_LOGIN_MAX_FAILURES_PER_IP": "0",
        "FLOWYARD_WORKERS": "1",
        "FLOWYARD_LOAD_SAMPLES": "true",
        "FLOWYARD_SAMPLES_DIR": str(ROOT / "examples"),
        "FLOWYARD_LOG_LEVEL": "WARNING",
    }
    with (workdir / "server.log").open("wb") as log:  # the child keeps its own handle
        return subprocess.Popen(
            [str(BIN / "flowyard"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not become ready")


def login(base: str) -> str:
    response = httpx.post(
        f"{base}/api/v1/auth/token", data={"username": "admin", "password": PASSWORD}
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def known_ids(base: str, token: str, workdir: Path) -> Path:
    """A schemathesis config naming a real workflow and run, so the operations on one are
    exercised beyond 404."""
    headers = {"Authorization": f"Bearer {token}"}
    started = httpx.post(
        f"{base}/api/v1/workflows/approval-state-machine/runs",
        json={"input": {"document": "fuzz.pdf", "author": "fuzz"}},
        headers=headers,
    )
    started.raise_for_status()
    config = workdir / "schemathesis.toml"
    config.write_text(
        "[parameters]\n"
        f'run_id = "{started.json()["id"]}"\n'
        'workflow_ref = "approval-state-machine"\n'
        'name = "reply_received"\n'
        'action = "submit"\n'
    )
    return config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=50)
    parser.add_argument("--phases", default="examples,coverage,fuzzing")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-time", type=int, default=None, help="seconds for the whole run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flowyard-fuzz-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = serve(workdir, port)
        code = 1
        try:
            wait_ready(base, proc)
            token = login(base)
            command = [
                str(BIN / "schemathesis"),
                "--config-file",
                str(known_ids(base, token, workdir)),
                "run",
                f"{base}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                ",".join(CHECKS),
                "--max-examples",
                str(args.max_examples),
                "--phases",
                args.phases,
                "--workers",
                "1",
                "--no-color",
                "--generation-database",
                "none",
                "--request-timeout",
                "30",
                "--suppress-health-check",
                "all",
            ]
            if args.seed is not None:
                command += ["--seed", str(args.seed)]
            if args.max_time is not None:
                command += ["--max-time", str(args.max_time)]
            # Serializers for the bodies schemathesis cannot send by itself (NDJSON, CSV).
            env = {
                **os.environ,
                "SCHEMATHESIS_HOOKS": "support.fuzz_hooks",
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")])
                ),
            }
            code = subprocess.run(command, check=False, env=env).returncode
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log = (workdir / "server.log").read_text(errors="replace")
        if code != 0 and "Traceback" in log:
            sys.stderr.write("--- server errors ---\n" + log[log.index("Traceback") :][-8000:])
        return code


if __name__ == "__main__":
    sys.exit(main())
