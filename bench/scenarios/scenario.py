"""The seed's debugging scenarios (issue 13, part 6), reproduced and diagnosed.

Each scenario starts real ``flowyard worker`` processes (with ``--metrics-port``) on a fresh
PostgreSQL database, makes the trouble happen, and runs ``flowyard doctor`` on the workers'
metrics as an operator would; then applies the fix doctor names and measures again.

    python bench/scenarios/scenario.py slow-workers   # 5,000 jobs queued, few done a minute
    python bench/scenarios/scenario.py duplicates     # a frozen worker's steps run twice
    python bench/scenarios/scenario.py pool-stress    # a connection pool too small for the work

Loopback only; every process is stopped at the end; each scenario takes about a minute.
docs/operations.md ("Diagnosing") walks through what each prints.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from flowyard.bootstrap import build
from flowyard.domain.clock import utc_now
from flowyard.domain.records import NewRun
from flowyard.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from throughput import _engine, _rows, fresh_database, spawn, stop

FLOWYARD = str(Path(sys.executable).with_name("flowyard"))


class _Slow(BaseHTTPRequestHandler):
    delay_s = 0.0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(self.delay_s)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def slow_server(delay_s: float) -> ThreadingHTTPServer:
    handler = type("Slow", (_Slow,), {"delay_s": delay_s})
    server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 1024})
    server = server_class(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def workflow(url: str) -> dict[str, Any]:
    return {
        "name": "scenario",
        "start": "call",
        "nodes": [
            {
                "id": "call",
                "type": "http",
                "config": {"method": "POST", "url": url, "json": {"i": "{{ input.i }}"}},
                "next": "done",
            },
            {"id": "done", "type": "end"},
        ],
    }


async def bulk_start(db: str, definition: dict[str, Any], count: int) -> None:
    """``count`` runs whose first step (the call) is due now, started in one go."""
    container = await build(Settings(db_url=db, load_plugins=False))
    try:
        record, version, _ = await container.service.save_workflow(definition, "scenario")
        new_runs = [
            NewRun(
                workflow_id=record.id,
                workflow_version=version.version,
                start_node="call",
                start_node_type="http",
                input={"i": i},
            )
            for i in range(count)
        ]
        await container.store.start_runs(new_runs, utc_now())
    finally:
        await container.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Workers:
    """``flowyard worker`` processes with metrics ports; stopped by :meth:`stop`."""

    def __init__(self, db: str, log: Path, env: dict[str, str]) -> None:
        self.db, self.log, self.env = db, log, env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []

    def start(self, count: int, concurrency: int) -> None:
        cmds = []
        for _ in range(count):
            port = free_port()
            self.urls.append(f"http://127.0.0.1:{port}/metrics")
            cmds.append(
                [FLOWYARD, "worker", "--db", self.db, "--concurrency", str(concurrency),
                 "--metrics-port", str(port)]
            )  # fmt: skip
        self.procs += spawn(cmds, self.env, self.log)
        wait_ready(self.urls)

    def stop(self) -> None:
        stop(self.procs)
        self.procs, self.urls = [], []


def wait_ready(urls: list[str], timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    for url in urls:
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")
            time.sleep(0.2)


def doctor(urls: list[str], interval_s: float, env: dict[str, str]) -> subprocess.Popen[str]:
    print(f"$ flowyard doctor {' '.join(urls)} --interval {interval_s:g}", flush=True)
    return subprocess.Popen(
        [FLOWYARD, "doctor", *urls, "--interval", str(interval_s)], env=env, text=True
    )


async def finished_steps(db: str) -> int:
    engine = _engine(db)
    try:
        rows = await _rows(
            engine, "SELECT count(*) FROM steps WHERE status = 'succeeded' AND node_id = 'call'"
        )
        return int(rows[0][0])
    finally:
        await engine.dispose()


async def rate(db: str, seconds: float) -> float:
    before = await finished_steps(db)
    await asyncio.sleep(seconds)
    return (await finished_steps(db) - before) / seconds


async def slow_workers(db: str, env: dict[str, str], log: Path) -> None:
    server = slow_server(1.0)
    url = f"http://127.0.0.1:{server.server_port}/work"
    await bulk_start(db, workflow(url), 5_000)
    workers = Workers(db, log, env)
    try:
        workers.start(2, concurrency=2)
        print("5,000 runs queued; 2 workers x concurrency 2; each call takes 1 s", flush=True)
        await asyncio.sleep(8)  # long enough for the oldest due step to age
        print(f"calls finished per minute: {await rate(db, 5) * 60:.0f}", flush=True)
        doctor(workers.urls, 5, env).wait()
        workers.stop()
        print("\nthe fix doctor names: more concurrency (the steps wait on I/O)", flush=True)
        workers.start(2, concurrency=64)
        await asyncio.sleep(3)
        print(f"calls finished per minute: {await rate(db, 5) * 60:.0f}", flush=True)
    finally:
        workers.stop()
        server.shutdown()


async def duplicates(db: str, env: dict[str, str], log: Path) -> None:
    server = slow_server(2.0)
    url = f"http://127.0.0.1:{server.server_port}/work"
    await bulk_start(db, workflow(url), 200)
    short = {**env, "FLOWYARD_LEASE_S": "3", "FLOWYARD_REAP_INTERVAL_S": "0.5"}
    workers = Workers(db, log, short)
    try:
        workers.start(2, concurrency=8)
        print("200 runs; 2 workers with a 3 s lease; calls take 2 s", flush=True)
        await asyncio.sleep(2)
        frozen = workers.procs[0]
        checking = doctor(workers.urls, 20, env)
        await asyncio.sleep(2)  # doctor's first scrape is done
        print(f"SIGSTOP worker {frozen.pid} for 8 s (a stalled event loop, a paused VM)")
        os.kill(frozen.pid, signal.SIGSTOP)
        await asyncio.sleep(8)
        os.kill(frozen.pid, signal.SIGCONT)
        checking.wait()
    finally:
        workers.stop()
        server.shutdown()
    engine = _engine(db)
    try:
        rows = await _rows(
            engine,
            "SELECT count(*) FROM run_events"
            " WHERE type = 'step.started' AND data->>'attempt' = '2'",
        )
        print(f"steps started a second time: {rows[0][0]}")
    finally:
        await engine.dispose()


async def pool_stress(db: str, env: dict[str, str], log: Path) -> None:
    server = slow_server(0.0)
    url = f"http://127.0.0.1:{server.server_port}/work"
    await bulk_start(db, workflow(url), 15_000)
    workers = Workers(db, log, {**env, "FLOWYARD_DB_POOL_SIZE": "1"})
    try:
        workers.start(1, concurrency=256)
        print("15,000 runs; 1 worker x concurrency 256 on a pool of 1 connection", flush=True)
        await asyncio.sleep(2)
        print(f"calls finished per second: {await rate(db, 3):.0f}", flush=True)
        doctor(workers.urls, 4, env).wait()
        workers.stop()
        print("\nthe fix doctor names: a larger pool", flush=True)
        workers.env = {**env, "FLOWYARD_DB_POOL_SIZE": "10"}
        workers.start(1, concurrency=256)
        await asyncio.sleep(2)
        print(f"calls finished per second: {await rate(db, 3):.0f}", flush=True)
        doctor(workers.urls, 4, env).wait()
    finally:
        workers.stop()
        server.shutdown()


SCENARIOS = {"slow-workers": slow_workers, "duplicates": duplicates, "pool-stress": pool_stress}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get(
            "FLOWYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    env = {
        **os.environ,
        "FLOWYARD_EGRESS_ALLOW": "127.0.0.1",
        "FLOWYARD_LOAD_PLUGINS": "0",
        "FLOWYARD_POLL_INTERVAL_S": "0.1",
    }
    env.pop("FLOWYARD_DB", None)
    with tempfile.TemporaryDirectory(prefix="flowyard-scenario-") as tmp:
        log = Path(tmp) / "workers.log"
        async with fresh_database("postgres", args.pg_admin_url, Path(tmp)) as db:
            await SCENARIOS[args.scenario](db, env, log)


if __name__ == "__main__":
    asyncio.run(main())
