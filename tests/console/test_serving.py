"""The console's files at ``/``: its pages' deep links answer index.html, bundles are cached
for good, index.html is revalidated, a strict CSP allows only this origin, and every other
path keeps the server's own answer (404 problem+json, 405)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from flowyard import console
from flowyard.api import create_app
from flowyard.settings import Settings

ASSET = re.compile(r"""(?:src|href)="(/assets/[^"]+)\"""")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(db_url=f"sqlite:///{tmp_path / 'd.db'}", workers=0))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.mark.parametrize("path", ["/", "/workflows", "/workflows/lead-routing/edit", "/runs/r1"])
async def test_every_console_path_answers_index_html(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<div id="root">' in response.text
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    again = await client.get(path, headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


async def test_bundles_are_local_typed_and_immutable(client: httpx.AsyncClient) -> None:
    html = (await client.get("/")).text
    assets = ASSET.findall(html)
    assert {Path(a).suffix for a in assets} == {".js", ".css"}
    assert "<script>" not in html  # no inline script: the CSP allows none
    assert not re.search(r"""(?:src|href)="(?:https?:)?//""", html)  # nothing from a CDN
    for asset in assets:
        response = await client.get(asset)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        kind = "text/javascript" if asset.endswith(".js") else "text/css"
        assert response.headers["content-type"].startswith(kind)
        assert "//cdn" not in response.text and "googleapis" not in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/assets/index-missing.js",
        "/assets/..%2f..%2fserve.py",
        "/assets/..%2Findex.html",
        "/assets/x.exe",
    ],
)
async def test_unknown_or_escaping_assets_are_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert "<div id" not in response.text


async def test_api_paths_keep_their_own_answers(client: httpx.AsyncClient) -> None:
    unknown = await client.get("/api/v1/no-such-thing")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    wrong_method = await client.delete("/api/v1/workflows")
    assert wrong_method.status_code == 405
    assert (await client.get("/api")).status_code == 404
    for outside in ("/nope", "/node-types", "/workflowsx", "/login"):
        response = await client.get(outside)
        assert response.status_code == 404, outside
        assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get("/openapi.json")).status_code == 200
    assert (await client.get("/docs")).headers["content-type"].startswith("text/html")
    assert (await client.post("/workflows")).status_code == 405  # a console path: GET only


async def test_a_checkout_without_a_build_says_how_to_build(tmp_path: Path) -> None:
    app = Starlette()
    console.install(app, tmp_path)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        response = await c.get("/runs")
    assert response.status_code == 200
    assert "make ui" in response.text
