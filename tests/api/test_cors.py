"""CORS: off unless origins are configured; preflights answered before routing (so never
refused by the authorization dependency); rate-limit and resource headers exposed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from flowyard.api import create_app
from flowyard.bootstrap import Container
from flowyard.settings import Settings
from support.auth import auth_headers

API = "/api/v1"
ORIGIN = "https://ui.example.com"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only (CORS does not touch the store)."""
    return f"sqlite:///{tmp_path / 'flowyard.db'}"


def app_with(container: Container, **changes: Any) -> FastAPI:
    return create_app(container.settings.model_copy(update=changes), container=container)


@contextlib.asynccontextmanager
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def preflight(method: str = "POST", origin: str = ORIGIN) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_no_origins_no_cors_headers(container: Container) -> None:
    async with client(app_with(container)) as c:
        response = await c.get("/healthz", headers={"Origin": ORIGIN})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
        refused = await c.options(f"{API}/workflows", headers=preflight())
        assert refused.status_code in (403, 405)
        assert "access-control-allow-origin" not in refused.headers


async def test_preflight_is_answered_without_authentication(container: Container) -> None:
    app = app_with(container, cors_origins=[ORIGIN])
    async with client(app) as c:
        for path, method in ((f"{API}/workflows", "POST"), (f"{API}/runs/r1/cancel", "POST")):
            response = await c.options(path, headers=preflight(method))
            assert response.status_code == 200, response.text
            assert response.headers["access-control-allow-origin"] == ORIGIN
            assert method in response.headers["access-control-allow-methods"]
            allowed = response.headers["access-control-allow-headers"].lower()
            assert "authorization" in allowed and "content-type" in allowed
            assert "access-control-allow-credentials" not in response.headers
        # A preflight is not an API request: it is not rate limited either.
        assert "ratelimit-limit" not in response.headers


async def test_other_origins_are_refused(container: Container) -> None:
    app = app_with(container, cors_origins=[ORIGIN])
    async with client(app) as c:
        response = await c.options(
            f"{API}/workflows", headers=preflight(origin="https://evil.example")
        )
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers
        simple = await c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers


async def test_responses_expose_resource_and_rate_limit_headers(container: Container) -> None:
    app = app_with(container, cors_origins=[ORIGIN], rate_limit_per_ip="1/minute")
    headers = {"Origin": ORIGIN, **await auth_headers(container)}
    async with client(app) as c:
        ok = await c.get(f"{API}/runs", headers=headers)
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == ORIGIN
        listed = ok.headers["access-control-expose-headers"]
        exposed = {h.strip().lower() for h in listed.split(",")}
        assert exposed >= {
            "etag",
            "location",
            "retry-after",
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
        }
        # A 429 carries CORS headers too, so a browser script can read Retry-After.
        refused = await c.get(f"{API}/runs", headers=headers)
        assert refused.status_code == 429
        assert refused.headers["access-control-allow-origin"] == ORIGIN


async def test_credentials_when_allowed(container: Container) -> None:
    app = app_with(container, cors_origins=[ORIGIN], cors_allow_credentials=True)
    async with client(app) as c:
        response = await c.options(f"{API}/workflows", headers=preflight())
        assert response.headers["access-control-allow-credentials"] == "true"
        assert response.headers["access-control-allow-origin"] == ORIGIN


def test_wildcard_with_credentials_is_refused(container: Container) -> None:
    with pytest.raises(ValueError, match="cors_origins"):
        app_with(container, cors_origins=["*"], cors_allow_credentials=True)


def test_origins_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWYARD_CORS_ORIGINS", "https://a.example, https://b.example")
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("FLOWYARD_CORS_ORIGINS", '["https://c.example"]')
    assert Settings().cors_origins == ["https://c.example"]
    monkeypatch.setenv("FLOWYARD_CORS_ORIGINS", "")
    assert Settings().cors_origins == []
    monkeypatch.setenv("FLOWYARD_CORS_ALLOW_CREDENTIALS", "true")
    assert Settings().cors_allow_credentials is True
