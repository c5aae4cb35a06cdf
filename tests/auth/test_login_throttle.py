"""Login throttling: failed logins per username and per address, 429 with Retry-After before
the password is checked, reset by a successful login, and audited as ``throttled``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import limits.aio.storage.memory
import pytest
from fastapi import FastAPI

from flowyard.api import create_app
from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from support.auth import PASSWORD, auth_headers

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
WINDOW_S = 900


class FakeTime:
    """Stands in for the ``time`` module of `limits`' memory storage."""

    def __init__(self) -> None:
        self.now = 2_000_000_000.0

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(limits.aio.storage.memory, "time", fake)
    return fake


def app_with(container: Container, fake: FakeTime, **changes: Any) -> FastAPI:
    settings = container.settings.model_copy(update={"login_max_failures": 5, **changes})
    app = create_app(settings, container=container)
    app.state.container = container
    app.state.rate_limits.clock = fake.time
    return app


@contextlib.asynccontextmanager
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def login(
    c: httpx.AsyncClient, username: str, password: str, **headers: str
) -> httpx.Response:
    data = {"username": username, "password": password}
    return await c.post(f"{API}/auth/token", data=data, headers=headers)


def assert_throttled(response: httpx.Response, retry_after: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["type"].endswith("/rate-limited")
    assert body["status"] == 429
    assert "failed logins" in body["detail"]
    assert response.headers["Retry-After"] == str(retry_after)
    assert "access_token" not in body
    # RateLimit-* are the API limit's (when on), never doubled by the login throttle's.
    assert len(response.headers.get_list("ratelimit-limit")) <= 1
    assert len(response.headers.get_list("retry-after")) == 1


async def test_failures_of_a_username_throttle_it_even_with_the_right_password(
    container: Container, fake_time: FakeTime
) -> None:
    await container.auth.create_user("alice", PASSWORD, Role.VIEWER)
    app = app_with(container, fake_time)
    async with client(app) as c:
        for _ in range(5):
            assert (await login(c, "alice", "wrong")).status_code == 401
            fake_time.advance(10)
        # t=50: the first failure (t=0) leaves the window at t=900.
        throttled = await login(c, "alice", PASSWORD)
        assert_throttled(throttled, WINDOW_S - 50)
        assert throttled.headers["RateLimit-Limit"] == "1200"  # the API's per-address limit
        assert_throttled(await login(c, "alice", "wrong"), WINDOW_S - 50)
        # Another username is not throttled.
        await container.auth.create_user("bob", PASSWORD, Role.VIEWER)
        assert (await login(c, "bob", PASSWORD)).status_code == 200
        fake_time.advance(WINDOW_S - 50 + 1)
        assert (await login(c, "alice", PASSWORD)).status_code == 200


async def test_a_successful_login_forgets_the_usernames_failures(
    container: Container, fake_time: FakeTime
) -> None:
    await container.auth.create_user("carol", PASSWORD, Role.VIEWER)
    app = app_with(container, fake_time)
    async with client(app) as c:
        for _ in range(4):
            assert (await login(c, "carol", "wrong")).status_code == 401
        assert (await login(c, "carol", PASSWORD)).status_code == 200
        for _ in range(5):
            assert (await login(c, "carol", "wrong")).status_code == 401
        assert_throttled(await login(c, "carol", PASSWORD), WINDOW_S)


async def test_unknown_usernames_are_throttled_alike(
    container: Container, fake_time: FakeTime
) -> None:
    app = app_with(container, fake_time, login_max_failures=2)
    async with client(app) as c:
        for _ in range(2):
            assert (await login(c, "nobody", "x")).status_code == 401
        assert_throttled(await login(c, "nobody", "x"), WINDOW_S)


async def test_failures_from_one_address_throttle_every_username(
    container: Container, fake_time: FakeTime
) -> None:
    await container.auth.create_user("dave", PASSWORD, Role.VIEWER)
    app = app_with(
        container,
        fake_time,
        login_max_failures_per_ip=3,
        trusted_proxies=["127.0.0.1"],
    )
    attacker = {"X-Forwarded-For": "203.0.113.5"}
    async with client(app) as c:
        for name in ("u1", "u2", "u3"):
            assert (await login(c, name, "guess", **attacker)).status_code == 401
        assert_throttled(await login(c, "dave", PASSWORD, **attacker), WINDOW_S)
        # The same user from another address logs in; the address stays throttled after.
        assert (await login(c, "dave", PASSWORD)).status_code == 200
        assert_throttled(await login(c, "u4", "guess", **attacker), WINDOW_S)


async def test_throttled_logins_are_audited(container: Container, fake_time: FakeTime) -> None:
    app = app_with(container, fake_time, login_max_failures=1)
    admin = await auth_headers(container)
    async with client(app) as c:
        assert (await login(c, "erin", "wrong")).status_code == 401
        assert (await login(c, "erin", "wrong")).status_code == 429
        response = await c.get(f"{API}/audit", params={"action": "auth.token"}, headers=admin)
    entries = response.json()["items"]
    got = [(e["action"], e["actor"], e["outcome"], e["detail"]) for e in entries]
    assert got[::-1] == [
        ("auth.token", "user:erin", "unauthenticated", {"status": 401}),
        ("auth.token", "user:erin", "throttled", {"status": 429}),
    ]
    assert entries[0]["source_ip"] == "127.0.0.1"


async def test_zero_turns_throttling_off(container: Container, fake_time: FakeTime) -> None:
    app = app_with(container, fake_time, login_max_failures=0, login_max_failures_per_ip=0)
    async with client(app) as c:
        for _ in range(8):
            assert (await login(c, "frank", "wrong")).status_code == 401


async def test_login_throttling_works_without_the_api_rate_limits(
    container: Container, fake_time: FakeTime
) -> None:
    app = app_with(container, fake_time, rate_limit_enabled=False, login_max_failures=1)
    async with client(app) as c:
        assert (await login(c, "gina", "wrong")).status_code == 401
        throttled = await login(c, "gina", "wrong")
        assert_throttled(throttled, WINDOW_S)
        assert "ratelimit-limit" not in throttled.headers
