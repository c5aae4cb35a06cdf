"""``flowyard serve`` stops within ``shutdown_grace_s`` on SIGTERM, with streams open (global
and per run), clients that left mid-stream before, and a step still in flight; it exits 0
and the streams are closed with 1012 (Service Restart)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from live import chain, collect
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from support.http import RecordingServer, Reply
from support.serve import ServeProcess, serve_process

GRACE_S = 3.0
#: Releasing the interrupted step, closing and exiting (0.1-0.2 s measured on a busy machine).
SLACK_S = 1.5


def hanging(url: str) -> dict[str, Any]:
    """trigger -> an HTTP call that does not answer for a minute -> end."""
    return {
        "name": "hanging",
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "call"},
            {"id": "call", "type": "http", "config": {"method": "GET", "url": url}, "next": "e"},
            {"id": "e", "type": "end"},
        ],
    }


async def ws(server: ServeProcess, path: str, token: str) -> ClientConnection:
    """A stream connection offering the token (an unbounded client buffer)."""
    url = f"ws://127.0.0.1:{server.port}/api/v1{path}"
    offered = [Subprotocol("flowyard.v1"), Subprotocol(f"bearer.{token}")]
    return await connect(url, subprotocols=offered, max_queue=None)


async def start_runs(http: httpx.AsyncClient, definition: dict[str, Any], runs: int) -> list[str]:
    saved = await http.post("/workflows", json=definition)
    assert saved.status_code == 201, saved.text
    ref = saved.json()["workflow"]["id"]
    ids = []
    for i in range(runs):
        started = await http.post(f"/workflows/{ref}/runs", json={"input": {"i": i}})
        assert started.status_code == 202, started.text
        ids.append(started.json()["id"])
    return ids


@pytest.mark.slow
async def test_sigterm_with_open_streams_stops_within_the_grace_period(
    tmp_path: Path, http_server: RecordingServer
) -> None:
    http_server.script("/hang", [Reply(delay_s=60)])
    env = {
        "FLOWYARD_SHUTDOWN_GRACE_S": str(GRACE_S),
        "FLOWYARD_WORKERS": "1",
        "FLOWYARD_EGRESS_ALLOW": "127.0.0.1",  # the loopback fake (outbound's egress policy)
    }
    with serve_process(f"sqlite:///{tmp_path / 'f.db'}", tmp_path / "serve.log", env) as server:
        await server.wait_ready()
        token = await server.login()
        base = f"{server.url}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers) as http:
            await start_runs(http, chain("busy", steps=3), 40)
            # Clients that leave while their stream is busy (issue 9: their producers leaked
            # and the server then waited for them forever).
            for count in (1, 7, 25, 60, 3):
                left = await ws(server, "/stream", token)
                await collect(left, count=count, timeout_s=10)
                await left.close()
            (run_id,) = await start_runs(http, hanging(f"{http_server.url}/hang"), 1)
            async with asyncio.timeout(20):
                while not any(r.path == "/hang" for r in http_server.requests):
                    await asyncio.sleep(0.05)  # the step is in flight
        streams = [
            await ws(server, "/stream", token),
            await ws(server, f"/runs/{run_id}/stream", token),
        ]
        for stream in streams:
            await collect(stream, count=1, timeout_s=10)

        started = time.monotonic()
        server.send(signal.SIGTERM)
        code = await server.wait_exit(GRACE_S + SLACK_S + 10)
        elapsed = time.monotonic() - started
        closes = []
        for stream in streams:
            await collect(stream, timeout_s=5)
            closes.append(stream.close_code)
        log = server.log()

    assert code == 0, log
    assert elapsed < GRACE_S + SLACK_S, (elapsed, log)
    assert closes == [1012, 1012]
    assert "Traceback" not in log, log
