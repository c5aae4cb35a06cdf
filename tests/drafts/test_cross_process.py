"""Edits from another process are seen live on SQLite (decision 0037): a real ``flowyard
serve`` subprocess and the real ``flowyard draft`` CLI, two processes on one SQLite file. A
WebSocket client of serve (``/stream?kind=drafts``) receives the CLI's draft changes within a
second, and a version the CLI publishes is what serve's cached read answers next."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from drafts.test_api import lead_routing
from stream.live import WsUrl, open_ws
from support.cli import cli_subprocess
from support.serve import serve_process

API = "/api/v1"
WF = f"{API}/workflows/lead-routing"
#: What the issue asks: a CLI edit reaches serve's streams within a second.
LIVE_WITHIN_S = 1.0


def draft_cli(tmp_path: Path, db_url: str, *args: str) -> dict[str, Any]:
    done = cli_subprocess(tmp_path, "draft", *args, "--db", db_url)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


async def next_draft_event(ws: ClientConnection, within_s: float) -> dict[str, Any]:
    async with asyncio.timeout(within_s):
        while True:
            event: dict[str, Any] = json.loads(await ws.recv())
            if event.get("type", "").startswith("draft."):
                return event


@pytest.mark.slow
async def test_a_cli_edit_reaches_serves_stream_and_a_publish_its_read_cache(
    tmp_path: Path,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    with serve_process(db_url, tmp_path / "serve.log") as server:
        await server.wait_ready()
        token = await server.login()
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=auth, timeout=30) as http:
            created = await http.post(f"{API}/workflows", json=lead_routing())
            assert created.status_code == 201, created.text
            for _ in range(2):  # the second read comes from the cache (the hub is live)
                assert (await http.get(WF)).headers["ETag"] == '"1"'
            metrics = (await http.get("/metrics")).text
            assert 'flowyard_read_cache_total{outcome="hit",part="workflow"}' in metrics

            url = WsUrl(server.url.replace("http", "ws") + f"{API}/stream?kind=drafts", token)
            async with open_ws(url) as ws:
                # Serve's own edit proves the stream follows drafts (events are not replayed).
                opened = await http.post(f"{WF}/draft")
                assert opened.status_code == 201, opened.text
                assert (await next_draft_event(ws, 10))["data"]["change"] == "opened"

                node = json.dumps({"id": "audit", "type": "log", "config": {"message": "cli"}})
                added = draft_cli(tmp_path, db_url, "add-node", "lead-routing", node,
                                  "--after", "east")  # fmt: skip
                returned = time.monotonic()
                event = await next_draft_event(ws, LIVE_WITHIN_S + 10)
                late_s = time.monotonic() - returned
                assert (event["data"]["change"], event["data"]["etag"]) == ("edited", added["etag"])
                assert event["data"]["summary"] == "add node audit after east"
                assert event["actor"].startswith("cli:")
                assert late_s <= LIVE_WITHIN_S, f"the CLI's edit reached serve {late_s:.2f} s late"

                published = draft_cli(tmp_path, db_url, "publish", "lead-routing")
                assert published["version"] == 2
                event = await next_draft_event(ws, LIVE_WITHIN_S + 10)
                assert (event["type"], event["data"]["version"]) == ("draft.published", 2)

            # Serve kept the workflow's row; the CLI's publish made it forget it.
            read = await http.get(WF)
            assert read.headers["ETag"] == '"2"', read.text
            nodes = [n["id"] for n in read.json()["version"]["definition"]["nodes"]]
            assert "audit" in nodes
