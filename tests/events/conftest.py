"""Event triggers over real HTTP: a live server (uvicorn on a loopback port, one worker and
the trigger dispatcher) with a source workflow whose runs end as their input says, and two
target workflows that echo their input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from flowyard.settings import Settings
from stream.live import Live, live_app

#: Ends with the output {"total": input.total}, or fails when input.fail is true.
SOURCE: dict[str, Any] = {
    "name": "orders",
    "start": "start",
    "nodes": [
        {"id": "start", "type": "trigger", "next": "check"},
        {
            "id": "check",
            "type": "condition",
            "config": {"cases": [{"when": "input.fail", "next": "boom"}], "default": "done"},
        },
        {"id": "boom", "type": "fail", "config": {"error": "order.bad", "message": "bad"}},
        {"id": "done", "type": "end", "config": {"output": {"total": "{{ input.total }}"}}},
    ],
}


def echo(name: str) -> dict[str, Any]:
    """A workflow whose output is its input, requiring an object input."""
    return {
        "name": name,
        "input_schema": {"type": "object"},
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "done"},
            {"id": "done", "type": "end", "config": {"output": "{{ input }}"}},
        ],
    }


@dataclass
class Events:
    """The live app and helpers."""

    live: Live

    @property
    def http(self) -> httpx.AsyncClient:
        """The admin's client (base URL /api/v1)."""
        return self.live.http

    async def trigger(self, **fields: Any) -> dict[str, Any]:
        """Create an event trigger (201) and return it."""
        made = await self.http.post("/event-triggers", json=fields)
        assert made.status_code == 201, made.text
        body: dict[str, Any] = made.json()
        return body

    async def runs(self, workflow: str) -> list[dict[str, Any]]:
        """Every run of ``workflow``, newest first."""
        page = await self.http.get("/runs", params={"workflow": workflow, "limit": 200})
        assert page.status_code == 200, page.text
        items: list[dict[str, Any]] = page.json()["items"]
        return items

    async def wait_runs(
        self, workflow: str, count: int, *, timeout_s: float = 20, ended: bool = True
    ) -> list[dict[str, Any]]:
        """Poll until ``workflow`` has ``count`` runs (ended ones, by default)."""
        async with asyncio.timeout(timeout_s):
            while True:
                runs = await self.runs(workflow)
                done = [r for r in runs if not ended or r["status"] in ("succeeded", "failed")]
                if len(done) >= count:
                    return runs
                await asyncio.sleep(0.05)

    async def output(self, run_id: str) -> Any:
        """A run's output."""
        got = await self.http.get(f"/runs/{run_id}")
        assert got.status_code == 200, got.text
        return got.json()["output"]


@pytest.fixture
async def events(db_url: str) -> AsyncIterator[Events]:
    """A live app on ``db_url`` with ``orders``, ``shipping`` and ``audit-trail``."""
    settings = Settings(
        db_url=db_url, workers=1, poll_interval_s=0.05, reap_interval_s=0.5, load_plugins=False
    )
    async with live_app(settings) as live:
        for definition in (SOURCE, echo("shipping"), echo("audit-trail")):
            made = await live.http.post("/workflows", json=definition)
            assert made.status_code == 201, made.text
        yield Events(live)
