"""``/docs`` and ``/redoc`` work offline: every URL in their HTML is local, the assets are
served with the right types, and a Content-Security-Policy allows nothing else."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from flowyard.api import create_app
from flowyard.settings import Settings

URL = re.compile(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(db_url=f"sqlite:///{tmp_path / 'd.db'}", workers=0))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def referenced(html: str) -> list[str]:
    """The URLs an HTML page loads or points at (src, href, and the UIs' ``url:`` options)."""
    return URL.findall(html)


def inline_scripts(html: str) -> list[str]:
    return re.findall(r"<script>(.*?)</script>", html, re.DOTALL)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_local_assets(client: httpx.AsyncClient, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    urls = referenced(html)
    assert "/openapi.json" in urls
    assets = [u for u in urls if u.startswith("/docs/assets/")]
    assert assets, urls
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "http://" not in html and "https://" not in html  # no CDN, no fonts service
    for url in assets:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
        expected = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
        kind = expected[Path(url).suffix]
        assert asset.headers["content-type"].split(";")[0] == kind, url
        assert asset.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_docs_pages_carry_a_content_security_policy(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    directives = response.headers["content-security-policy"].split("; ")
    policy = dict(d.split(" ", 1) for d in directives)
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    sources = set(policy["script-src"].split())
    scripts = inline_scripts(response.text)
    assert scripts or page == "/redoc"  # ReDoc's page has none
    # Each inline script is allowed by its hash; nothing from elsewhere, nothing inline else.
    hashes = {
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts
    }
    assert sources - {"'self'"} == hashes


async def test_unknown_assets_are_not_found(client: httpx.AsyncClient) -> None:
    for name in ("nope.js", "..%2Fcore.py", "consts.py"):
        assert (await client.get(f"/docs/assets/{name}")).status_code == 404
