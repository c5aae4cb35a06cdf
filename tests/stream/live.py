"""A live uvicorn server on 127.0.0.1 in the test's event loop, and websocket helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from flowyard.api import create_app
from flowyard.settings import Settings
from support.auth import token_for

API = "/api/v1"


class WsUrl(str):
    """A websocket URL that carries the token to offer (in the subprotocol, so the server
    does not wait for an auth message)."""

    token: str

    def __new__(cls, url: str, token: str) -> WsUrl:
        """Make one."""
        made = super().__new__(cls, url)
        made.token = token
        return made


def protocols(url: str) -> list[Subprotocol]:
    """The subprotocols to offer for ``url``."""
    token = getattr(url, "token", "none")
    return [Subprotocol("flowyard.v1"), Subprotocol(f"bearer.{token}")]


@dataclass
class Live:
    """A running app: its base URLs, an admin token and an HTTP client sending it."""

    app: FastAPI
    port: int
    http: httpx.AsyncClient
    token: str

    def ws(self, path: str) -> WsUrl:
        """A websocket URL under the API prefix."""
        return WsUrl(f"ws://127.0.0.1:{self.port}{API}{path}", self.token)


@contextlib.asynccontextmanager
async def live_app(settings: Settings) -> AsyncIterator[Live]:
    """Serve ``create_app(settings)`` (with its lifespan) until the block ends."""
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", ws="websockets-sansio", lifespan="on")
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        token = await token_for(app.state.container, "stream-tester")
        headers = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{port}{API}"
        # A loaded CI machine answers slower than httpx's 5 s default: the tests check what
        # is answered, their own deadlines bound how long.
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            yield Live(app, port, http, token)
    finally:
        server.should_exit = True
        async with asyncio.timeout(20):
            await task
        sock.close()


@dataclass
class Received:
    """What a websocket client got before the server closed (or the client stopped)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    @property
    def ids(self) -> list[int]:
        """Event ids in arrival order."""
        return [e["id"] for e in self.events]


async def collect(
    ws: ClientConnection, *, count: int | None = None, timeout_s: float = 30
) -> Received:
    """Receive events until the server closes (or ``count`` events arrived)."""
    got = Received()
    async with asyncio.timeout(timeout_s):
        try:
            while count is None or len(got.events) < count:
                got.events.append(json.loads(await ws.recv()))
        except ConnectionClosed:
            pass
    if count is None:
        got.close_code = ws.close_code
    return got


async def stream_all(url: str, *, timeout_s: float = 30) -> Received:
    """Connect and receive until the server closes."""
    async with connect(url, subprotocols=protocols(url)) as ws:
        return await collect(ws, timeout_s=timeout_s)


def open_ws(url: str) -> Any:
    """An ``async with`` websocket connection offering a token subprotocol."""
    return connect(url, subprotocols=protocols(url))


def chain(name: str, slow_url: str | None = None, steps: int = 3) -> dict[str, Any]:
    """trigger -> ``steps`` x (set [, slow HTTP call]) -> end."""
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "trigger", "next": "s0"}]
    for i in range(steps):
        after = f"s{i + 1}" if i + 1 < steps else "done"
        if slow_url is None:
            nodes.append(
                {"id": f"s{i}", "type": "set", "config": {"values": {"i": i}}, "next": after}
            )
            continue
        nodes.append(
            {"id": f"s{i}", "type": "set", "config": {"values": {"i": i}}, "next": f"h{i}"}
        )
        nodes.append(
            {
                "id": f"h{i}",
                "type": "http",
                "config": {"method": "GET", "url": slow_url},
                "next": after,
            }
        )
    nodes.append({"id": "done", "type": "end"})
    return {"name": name, "start": "start", "nodes": nodes}


async def start(live: Live, definition: dict[str, Any], runs: int = 1) -> tuple[str, list[str]]:
    """Save ``definition``; start ``runs`` runs: (workflow id, run ids)."""
    saved = await live.http.post("/workflows", json=definition)
    assert saved.status_code == 201, saved.text
    workflow_id = saved.json()["workflow"]["id"]
    run_ids = []
    for i in range(runs):
        started = await live.http.post(f"/workflows/{workflow_id}/runs", json={"input": {"i": i}})
        assert started.status_code == 202, started.text
        run_ids.append(started.json()["id"])
    return workflow_id, run_ids


async def history(live: Live, run_id: str) -> list[dict[str, Any]]:
    """GET /runs/{id}/events (every page)."""
    response = await live.http.get(f"/runs/{run_id}/events", params={"limit": 5000})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])
