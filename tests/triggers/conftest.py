"""A live server (uvicorn on a loopback port, one in-process worker) with a workflow and the
credentials hooks check deliveries against; senders sign as the providers document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from flowyard.settings import Settings
from stream.live import Live, live_app

#: The webhook_secret credential's secret and Meta verify token, and a Twilio auth token.
SECRET = "whsec-test-0123456789"
VERIFY_TOKEN = "verify-me-please"
TWILIO_TOKEN = "twilio-auth-token-0123456789"

GREETER: dict[str, Any] = {
    "name": "greeter",
    "input_schema": {
        "type": "object",
        "required": ["email"],
        "properties": {"email": {"type": "string", "format": "email"}},
    },
    "start": "start",
    "nodes": [
        {"id": "start", "type": "trigger", "next": "done"},
        {"id": "done", "type": "end", "config": {"output": {"greeting": "hi {{ input.email }}"}}},
    ],
}


@dataclass
class Hooked:
    """The live app and helpers for hooks."""

    live: Live

    @property
    def http(self) -> httpx.AsyncClient:
        """The admin's client (base URL /api/v1)."""
        return self.live.http

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>/api/v1``."""
        return f"http://127.0.0.1:{self.live.port}/api/v1"

    async def hook(self, **fields: Any) -> dict[str, Any]:
        """Create a hook on ``greeter`` (201) and return it."""
        body = {"workflow": "greeter", "name": "h", **fields}
        made = await self.http.post("/hooks", json=body)
        assert made.status_code == 201, made.text
        hook: dict[str, Any] = made.json()
        return hook

    async def runs(self) -> list[dict[str, Any]]:
        """Every run of greeter."""
        page = await self.http.get("/runs", params={"workflow": "greeter"})
        items: list[dict[str, Any]] = page.json()["items"]
        return items

    async def audit(self, action: str) -> list[dict[str, Any]]:
        """Audit entries of ``action``, newest first."""
        page = await self.http.get("/audit", params={"limit": 200})
        return [e for e in page.json()["items"] if e["action"] == action]


@pytest.fixture
async def hooked(db_url: str) -> AsyncIterator[Hooked]:
    """A live app on ``db_url`` with the greeter workflow and three credentials."""
    settings = Settings(
        db_url=db_url, workers=1, poll_interval_s=0.05, reap_interval_s=0.5, load_plugins=False
    )
    async with live_app(settings) as live:
        made = await live.http.post("/workflows", json=GREETER)
        assert made.status_code == 201, made.text
        for name, type_, data in (
            ("hook-secret", "webhook_secret", {"secret": SECRET, "verify_token": VERIFY_TOKEN}),
            ("twilio-main", "twilio", {"account_sid": "AC123", "auth_token": TWILIO_TOKEN}),
        ):
            cred = await live.http.post(
                "/credentials", json={"name": name, "type": type_, "data": data}
            )
            assert cred.status_code == 201, cred.text
        yield Hooked(live)
