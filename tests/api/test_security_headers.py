"""Security headers: ``X-Content-Type-Options: nosniff`` on every response, ``Cache-Control:
no-store`` on every ``/api/v1`` response (tokens, refresh, new API keys, and user-specific
data), no ``Server`` header and no version on ``/healthz`` from a real ``flowyard serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from flowyard import __version__
from flowyard.bootstrap import Container, build
from flowyard.domain.auth import Role
from flowyard.settings import Settings
from support.auth import PASSWORD, auth_headers
from support.serve import serve_process

API = "/api/v1"


@pytest.fixture
async def container(tmp_path: Path) -> AsyncIterator[Container]:
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'h.db'}",
        workers=0,
        load_plugins=False,
        max_request_bytes=2048,
        cors_origins=["https://console.example"],
    )
    built = await build(settings)
    try:
        yield built
    finally:
        await built.close()


def client(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers)


async def test_token_responses_are_not_stored(app: FastAPI, container: Container) -> None:
    await container.auth.create_user("alice", PASSWORD, Role.VIEWER)
    async with client(app) as c:
        login = await c.post(f"{API}/auth/token", data={"username": "alice", "password": PASSWORD})
        refreshed = await c.post(
            f"{API}/auth/refresh", json={"refresh_token": login.json()["refresh_token"]}
        )
    async with client(app, await auth_headers(container)) as c:
        key = await c.post(f"{API}/api-keys", json={"name": "ci", "role": "viewer"})
    for response in (login, refreshed, key):
        assert response.status_code in (200, 201), response.text
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_every_api_answer_is_not_stored_and_every_answer_is_nosniff(
    app: FastAPI, container: Container
) -> None:
    async with client(app, await auth_headers(container)) as c:
        api = [
            await c.get(f"{API}/workflows"),  # 200, user-specific data
            await c.get(f"{API}/runs/run_nope"),  # 404
            await c.post(f"{API}/workflows", content=b"x" * 4096),  # 413 (body limit)
            await c.options(  # a CORS preflight
                f"{API}/workflows",
                headers={
                    "Origin": "https://console.example",
                    "Access-Control-Request-Method": "POST",
                },
            ),
            await c.get(f"{API}/healthz"),
        ]
    async with client(app) as anonymous:
        api.append(await anonymous.get(f"{API}/workflows"))  # 401
        root = [
            await anonymous.get("/healthz"),
            await anonymous.get("/metrics"),
            await anonymous.get("/openapi.json"),
            await anonymous.get("/nope"),
        ]
    assert [r.status_code for r in api] == [200, 404, 413, 200, 200, 401]
    for response in api:
        assert response.headers["cache-control"] == "no-store", response.request.url
        assert response.headers["x-content-type-options"] == "nosniff", response.request.url
    for response in root:
        assert response.headers["x-content-type-options"] == "nosniff", response.request.url
        assert "no-store" not in response.headers.get("cache-control", "")


async def test_an_unexpected_error_carries_the_headers_too(app: FastAPI) -> None:
    @app.get(f"{API}/boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("boom")

    from flowyard.api.security import RULES, Rule

    RULES[("GET", f"{API}/boom")] = Rule(None, "boom")
    try:
        async with client(app) as c:
            response = await c.get(f"{API}/boom")
    finally:
        del RULES[("GET", f"{API}/boom")]
    assert response.status_code == 500
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


async def test_healthz_does_not_tell_the_version_and_the_document_tells_the_api_version(
    app: FastAPI, container: Container
) -> None:
    async with client(app) as c:
        health = await c.get("/healthz")
        spec = (await c.get("/openapi.json")).json()
        metrics = await c.get("/metrics")  # loopback: allowed without a token
    assert health.json() == {"status": "ok"}
    assert __version__ not in health.text
    assert spec["info"]["version"] == "1"
    assert f'flowyard_build_info{{version="{__version__}"}} 1.0' in metrics.text


@pytest.mark.slow
async def test_flowyard_serve_sends_no_server_header(tmp_path: Path) -> None:
    with serve_process(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "serve.log") as server:
        await server.wait_ready()
        token = await server.login()
        async with httpx.AsyncClient(base_url=server.url) as c:
            health = await c.get("/healthz")
            login = await c.post(
                f"{API}/auth/token", data={"username": "admin", "password": PASSWORD}
            )
            listed = await c.get(f"{API}/runs", headers={"Authorization": f"Bearer {token}"})
            missing = await c.get("/nope")
    for response in (health, login, listed, missing):
        assert "server" not in response.headers, response.headers
        assert response.headers["x-content-type-options"] == "nosniff"
    assert health.json() == {"status": "ok"}
    assert login.headers["cache-control"] == "no-store"
    assert listed.headers["cache-control"] == "no-store"
