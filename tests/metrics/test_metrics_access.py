"""Who may read ``GET /metrics`` (its labels name workflows): by default clients on loopback
without a token and everyone else with a viewer token; ``FLOWYARD_METRICS_ACCESS`` makes it
token-only or public; the deprecated ``FLOWYARD_METRICS_REQUIRE_AUTH`` still works. And the
answer's type is the text format 0.0.4 that the docs name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from flowyard.api import create_app
from flowyard.api.metrics import is_loopback
from flowyard.bootstrap import Container, build
from flowyard.domain.auth import Role
from flowyard.settings import MetricsAccess, Settings
from support.auth import auth_headers

LOCAL = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.7", 50000)
PROXY = ("10.0.0.2", 50000)
DOCS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # docs/api.md


@pytest.fixture
async def container(tmp_path: Path) -> AsyncIterator[Container]:
    built = await build(
        Settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", workers=0, load_plugins=False)
    )
    try:
        yield built
    finally:
        await built.close()


def app_with(container: Container, **settings: Any) -> FastAPI:
    container.settings = container.settings.model_copy(update=settings)
    return create_app(container.settings, container=container)


async def scrape(
    app: FastAPI, client: tuple[str, int], headers: dict[str, str] | None = None
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        return await c.get("/metrics", headers=headers)


async def test_by_default_loopback_reads_without_a_token_and_others_need_a_viewer(
    container: Container,
) -> None:
    app = app_with(container)
    viewer = await auth_headers(container, "scraper", Role.VIEWER)

    local = await scrape(app, LOCAL)
    local_v6 = await scrape(app, ("::1", 50000))
    remote = await scrape(app, REMOTE)
    remote_viewer = await scrape(app, REMOTE, viewer)
    remote_garbage = await scrape(app, REMOTE, {"Authorization": "Bearer nope"})

    assert (local.status_code, local_v6.status_code) == (200, 200)
    assert remote.status_code == 401
    assert remote.headers["content-type"].startswith("application/problem+json")
    assert "flowyard_" not in remote.text
    assert remote_viewer.status_code == 200
    assert remote_garbage.status_code == 401


async def test_behind_a_trusted_proxy_the_forwarded_client_counts(container: Container) -> None:
    app = app_with(container, trusted_proxies=["10.0.0.0/8", "127.0.0.1"])
    forwarded_remote = {"X-Forwarded-For": "203.0.113.7"}
    forwarded_local = {"X-Forwarded-For": "127.0.0.1"}

    # A proxy on the same host forwarding a remote client: not local.
    assert (await scrape(app, LOCAL, forwarded_remote)).status_code == 401
    assert (await scrape(app, PROXY, forwarded_remote)).status_code == 401
    assert (await scrape(app, PROXY, forwarded_local)).status_code == 200
    # An untrusted peer cannot claim to be local.
    untrusted = app_with(container, trusted_proxies=[])
    assert (await scrape(untrusted, REMOTE, forwarded_local)).status_code == 401


@pytest.mark.parametrize(
    ("settings", "local", "remote"),
    [
        ({"metrics_access": MetricsAccess.PUBLIC}, 200, 200),
        ({"metrics_access": MetricsAccess.TOKEN}, 401, 401),
        ({"metrics_require_auth": True}, 401, 401),  # deprecated: token
        ({"metrics_require_auth": False}, 200, 200),  # deprecated: public, as it was
    ],
)
async def test_access_can_be_set(
    container: Container, settings: dict[str, Any], local: int, remote: int
) -> None:
    app = app_with(container, **settings)
    assert (await scrape(app, LOCAL)).status_code == local
    assert (await scrape(app, REMOTE)).status_code == remote
    viewer = await auth_headers(container, "scraper", Role.VIEWER)
    assert (await scrape(app, REMOTE, viewer)).status_code == 200


def test_the_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().metrics_policy is MetricsAccess.LOOPBACK
    monkeypatch.setenv("FLOWYARD_METRICS_REQUIRE_AUTH", "true")
    assert Settings().metrics_policy is MetricsAccess.TOKEN
    monkeypatch.setenv("FLOWYARD_METRICS_ACCESS", "public")
    with pytest.raises(ValidationError, match="disagree"):
        Settings()
    monkeypatch.delenv("FLOWYARD_METRICS_REQUIRE_AUTH")
    assert Settings().metrics_policy is MetricsAccess.PUBLIC
    monkeypatch.setenv("FLOWYARD_METRICS_ACCESS", "everyone")
    with pytest.raises(ValidationError):
        Settings()


def test_loopback_addresses() -> None:
    assert all(is_loopback(a) for a in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"))
    assert not any(is_loopback(a) for a in ("10.0.0.1", "::ffff:10.0.0.1", "unknown", ""))


async def test_the_content_type_is_the_text_format_the_docs_name(container: Container) -> None:
    response = await scrape(app_with(container), LOCAL)
    assert response.headers["content-type"] == DOCS_CONTENT_TYPE
    families = {f.name for f in text_string_to_metric_families(response.text)}
    assert "flowyard_build_info" in families


async def test_the_document_tells_who_may_read_metrics(container: Container) -> None:
    transport = httpx.ASGITransport(app=app_with(container))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        operation = (await c.get("/openapi.json")).json()["paths"]["/metrics"]["get"]
    assert list(operation["responses"]["200"]["content"]) == [DOCS_CONTENT_TYPE]
    assert "loopback" in operation["responses"]["401"]["description"]
