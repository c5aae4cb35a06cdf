"""API rate limits: per client address and per presented credential, 429 problem+json with
Retry-After, RateLimit-* headers, exempt probes, trusted proxies, and the window moving on a
fake clock. Rate limiting does not touch the store, so these run on SQLite only."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import limits.aio.storage.memory
import pydantic
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from flowyard.api import create_app
from flowyard.api.ratelimit import RateLimits, client_ip, parse_networks, presented_credential
from flowyard.bootstrap import Container
from flowyard.settings import Settings
from stream.live import live_app
from support.auth import auth_headers, token_for

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
REDIS_URL = "redis://127.0.0.1:6379"


class FakeTime:
    """Stands in for the ``time`` module inside `limits`' memory storage: a wall clock
    that only moves when told to."""

    def __init__(self, start: float = 2_000_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only (overrides the two-backend fixture of tests/conftest.py)."""
    return f"sqlite:///{tmp_path / 'flowyard.db'}"


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """Freeze the memory storage's clock (`limits` reads ``time.time()`` there)."""
    fake = FakeTime()
    monkeypatch.setattr(limits.aio.storage.memory, "time", fake)
    return fake


def app_with(container: Container, fake: FakeTime | None = None, **changes: Any) -> FastAPI:
    """The app on ``container`` with settings changed (and the fake clock, if any)."""
    app = create_app(container.settings.model_copy(update=changes), container=container)
    if fake is not None:
        app.state.rate_limits.clock = fake.time
    return app


@contextlib.asynccontextmanager
async def client(app: FastAPI, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, **kwargs)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def assert_429(response: httpx.Response, retry_after: int | None = None) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == 429
    assert body["type"].endswith("/rate-limited")
    assert body["title"] == "Too many requests"
    assert body["detail"]
    seconds = int(response.headers["Retry-After"])
    assert seconds >= 1
    assert body["retry_after"] == seconds
    if retry_after is not None:
        assert seconds == retry_after
    assert response.headers["RateLimit-Remaining"] == "0"
    return body


async def test_per_ip_limit_answers_429_problem_with_retry_after(
    container: Container, fake_time: FakeTime
) -> None:
    app = app_with(container, fake_time, rate_limit_per_ip="3/minute")
    headers = await auth_headers(container)
    async with client(app) as c:
        for remaining in (2, 1, 0):
            ok = await c.get(f"{API}/runs", headers=headers)
            assert ok.status_code == 200, ok.text
            assert ok.headers["RateLimit-Limit"] == "3"
            assert ok.headers["RateLimit-Remaining"] == str(remaining)
            assert ok.headers["RateLimit-Reset"] == "60"
            assert "Retry-After" not in ok.headers
        refused = await c.get(f"{API}/runs", headers=headers)
        body = assert_429(refused, retry_after=60)
        assert "client address" in body["detail"]
        assert refused.headers["RateLimit-Limit"] == "3"
        # Anonymous requests from the same address share the address's limit.
        assert_429(await c.get(f"{API}/runs"), retry_after=60)


async def test_refused_requests_are_not_counted(container: Container, fake_time: FakeTime) -> None:
    """Knocking while refused does not push the reset further away (moving window)."""
    app = app_with(container, fake_time, rate_limit_per_ip="2/minute")
    async with client(app) as c:
        await c.get(f"{API}/runs")
        fake_time.advance(10)
        await c.get(f"{API}/runs")
        for _ in range(5):
            fake_time.advance(5)
            assert_429(await c.get(f"{API}/runs"))
        # The first request (t=0) leaves the window at t=60; it is t=35.
        assert_429(await c.get(f"{API}/runs"), retry_after=25)


async def test_a_refusal_by_one_window_counts_in_no_other(
    container: Container, fake_time: FakeTime
) -> None:
    """Every limit is checked before any is counted: requests the minute limit refuses do
    not fill the 10-second window, so the minute limit's reset is the only wait."""
    app = app_with(container, fake_time, rate_limit_per_ip="2 per 10 seconds;3/minute")
    async with client(app) as c:
        for at in (0, 0, 11):
            fake_time.now = 2_000_000_000.0 + at
            assert (await c.get(f"{API}/runs")).status_code == 401
        for at in (58, 59):  # the minute is full (0, 0, 11)
            fake_time.now = 2_000_000_000.0 + at
            assert_429(await c.get(f"{API}/runs"))
        fake_time.now = 2_000_000_000.0 + 60.5  # the two requests of t=0 have left
        assert (await c.get(f"{API}/runs")).status_code == 401


async def test_a_burst_refused_by_the_address_uses_none_of_the_credentials_budget(
    container: Container, fake_time: FakeTime
) -> None:
    """2,000 requests of one token (1,408 refused) used to keep the token refused long after
    the address window had moved on: refusals counted against the credential."""
    app = app_with(
        container,
        fake_time,
        rate_limit_per_ip="2/second",
        rate_limit_per_principal="5/minute",
    )
    headers = await auth_headers(container)
    async with client(app) as c:
        answers = [(await c.get(f"{API}/runs", headers=headers)).status_code for _ in range(40)]
        assert answers == [200, 200] + [429] * 38
        fake_time.advance(1.5)  # the address window has moved on
        for _ in range(2):
            assert (await c.get(f"{API}/runs", headers=headers)).status_code == 200
        fake_time.advance(1.5)
        assert (await c.get(f"{API}/runs", headers=headers)).status_code == 200
        refused = await c.get(f"{API}/runs", headers=headers)  # 5 in the minute: the token's
        assert "credential" in assert_429(refused)["detail"]
        fake_time.advance(61)
        assert (await c.get(f"{API}/runs", headers=headers)).status_code == 200


async def test_window_moves_on(container: Container, fake_time: FakeTime) -> None:
    app = app_with(container, fake_time, rate_limit_per_ip="2/minute")
    async with client(app) as c:
        assert (await c.get(f"{API}/runs")).status_code == 401
        fake_time.advance(20)
        assert (await c.get(f"{API}/runs")).status_code == 401
        assert_429(await c.get(f"{API}/runs"), retry_after=40)
        fake_time.advance(30)
        assert_429(await c.get(f"{API}/runs"), retry_after=10)
        fake_time.advance(10.5)  # the first request has left the window, the second not
        again = await c.get(f"{API}/runs")
        assert again.status_code == 401
        assert again.headers["RateLimit-Remaining"] == "0"
        assert again.headers["RateLimit-Reset"] == "20"  # when the second one leaves
        assert_429(await c.get(f"{API}/runs"), retry_after=20)
        fake_time.advance(61)
        assert (await c.get(f"{API}/runs")).headers["RateLimit-Remaining"] == "1"


async def test_per_principal_limit_is_separate_from_the_address(
    container: Container, fake_time: FakeTime
) -> None:
    app = app_with(
        container, fake_time, rate_limit_per_ip="100/minute", rate_limit_per_principal="2/minute"
    )
    alice = {"Authorization": f"Bearer {await token_for(container, 'alice')}"}
    bob = {"Authorization": f"Bearer {await token_for(container, 'bob')}"}
    async with client(app) as c:
        for remaining in (1, 0):
            ok = await c.get(f"{API}/runs", headers=alice)
            assert ok.status_code == 200
            assert ok.headers["RateLimit-Limit"] == "2"  # the tighter of the two limits
            assert ok.headers["RateLimit-Remaining"] == str(remaining)
        body = assert_429(await c.get(f"{API}/runs", headers=alice), retry_after=60)
        assert "credential" in body["detail"]
        # Bob, and anonymous callers, from the same address are not affected.
        assert (await c.get(f"{API}/runs", headers=bob)).status_code == 200
        anonymous = await c.get(f"{API}/runs")
        assert anonymous.status_code == 401
        assert anonymous.headers["RateLimit-Limit"] == "100"
        assert anonymous.headers["RateLimit-Remaining"] == "96"


async def test_api_keys_count_per_key(container: Container, fake_time: FakeTime) -> None:
    app = app_with(container, fake_time, rate_limit_per_principal="1/minute")
    admin = await auth_headers(container)
    async with client(app) as c:
        created = await c.post(f"{API}/api-keys", json={"name": "ci"}, headers=admin)
        key = {"X-API-Key": created.json()["key"]}
        assert (await c.get(f"{API}/runs", headers=key)).status_code == 200
        assert_429(await c.get(f"{API}/runs", headers=key))


async def test_random_tokens_do_not_get_around_the_address_limit(
    container: Container, fake_time: FakeTime
) -> None:
    app = app_with(container, fake_time, rate_limit_per_ip="3/minute")
    async with client(app) as c:
        for _ in range(3):
            forged = {"Authorization": f"Bearer {secrets.token_urlsafe(16)}"}
            assert (await c.get(f"{API}/runs", headers=forged)).status_code == 401
        forged = {"Authorization": f"Bearer {secrets.token_urlsafe(16)}"}
        assert_429(await c.get(f"{API}/runs", headers=forged))


async def test_probes_and_scrapes_are_exempt(container: Container, fake_time: FakeTime) -> None:
    app = app_with(container, fake_time, rate_limit_per_ip="1/minute")
    async with client(app) as c:
        for _ in range(5):
            for path in ("/healthz", "/readyz", "/metrics", f"{API}/healthz", f"{API}/readyz"):
                response = await c.get(path)
                assert response.status_code == 200, (path, response.text)
                assert "RateLimit-Limit" not in response.headers
        assert (await c.get(f"{API}/runs")).status_code == 401
        assert_429(await c.get(f"{API}/runs"))


async def test_429s_are_counted_by_the_http_metrics(
    container: Container, fake_time: FakeTime
) -> None:
    app = app_with(container, fake_time, rate_limit_per_ip="1/minute")
    async with client(app) as c:
        await c.get(f"{API}/runs")
        assert_429(await c.get(f"{API}/runs"))
        text = (await c.get("/metrics")).text
    assert any('status="429"' in line for line in text.splitlines() if "http_requests" in line)


async def test_refusals_are_logged_once_per_key_and_window(
    container: Container, fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowyard.api.ratelimit")
    app = app_with(container, fake_time, rate_limit_per_principal="1/minute")
    token = await token_for(container)
    async with client(app) as c:
        for _ in range(4):
            await c.get(f"{API}/runs", headers={"Authorization": f"Bearer {token}"})
        fake_time.advance(61)
        for _ in range(3):
            await c.get(f"{API}/runs", headers={"Authorization": f"Bearer {token}"})
    refusals = [r for r in caplog.records if "limit of 1 reached" in r.getMessage()]
    assert len(refusals) == 2  # one per window, however many refusals
    assert all(r.levelno == logging.INFO for r in refusals)
    assert token not in caplog.text


async def test_disabled_means_no_limit_and_no_headers(container: Container) -> None:
    app = app_with(container, rate_limit_enabled=False, rate_limit_per_ip="1/minute")
    async with client(app) as c:
        for _ in range(3):
            response = await c.get(f"{API}/runs")
            assert response.status_code == 401
            assert "RateLimit-Limit" not in response.headers


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    container: Container, fake_time: FakeTime
) -> None:
    untrusted = app_with(container, fake_time, rate_limit_per_ip="1/minute")
    async with client(untrusted) as c:
        assert (await c.get(f"{API}/runs", headers={"X-Forwarded-For": "10.0.0.1"})).status_code
        assert_429(await c.get(f"{API}/runs", headers={"X-Forwarded-For": "10.0.0.2"}))

    trusted = app_with(
        container, fake_time, rate_limit_per_ip="1/minute", trusted_proxies=["127.0.0.0/8"]
    )
    async with client(trusted) as c:
        for hop in ("10.0.0.1", "10.0.0.2"):
            response = await c.get(f"{API}/runs", headers={"X-Forwarded-For": hop})
            assert response.status_code == 401
        # A client cannot choose its key by writing hops left of the one the proxy added.
        spoofed = {"X-Forwarded-For": "192.0.2.7, 10.0.0.1"}
        assert_429(await c.get(f"{API}/runs", headers=spoofed))


def test_client_ip_takes_the_rightmost_untrusted_hop() -> None:
    trusted = parse_networks("trusted_proxies", ["10.0.0.0/8", "::1"])

    def scope(peer: str, forwarded: str | None = None) -> dict[str, Any]:
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        return {"type": "http", "client": (peer, 1234), "headers": headers}

    assert client_ip(scope("203.0.113.9", "1.2.3.4")) == "203.0.113.9"
    assert client_ip(scope("203.0.113.9", "1.2.3.4"), trusted) == "203.0.113.9"
    assert client_ip(scope("10.1.1.1", "1.2.3.4, 5.6.7.8, 10.2.2.2"), trusted) == "5.6.7.8"
    assert client_ip(scope("::1", "10.9.9.9, 10.8.8.8"), trusted) == "10.9.9.9"
    assert client_ip(scope("10.1.1.1"), trusted) == "10.1.1.1"
    assert client_ip({"type": "http", "headers": []}) == "unknown"


async def test_one_ipv6_network_and_one_address_however_spelled_share_a_budget(
    container: Container, fake_time: FakeTime
) -> None:
    """An IPv6 client has a /64 of fresh addresses: they count as one client (like the login
    throttle); an IPv4 address spelled as IPv4-mapped IPv6 is the same client too."""
    app = app_with(
        container, fake_time, rate_limit_per_ip="1/minute", trusted_proxies=["127.0.0.0/8"]
    )
    async with client(app) as c:
        first = await c.get(f"{API}/runs", headers={"X-Forwarded-For": "2001:db8:1:2::1"})
        assert first.status_code == 401
        assert_429(await c.get(f"{API}/runs", headers={"X-Forwarded-For": "2001:db8:1:2::ff:1"}))
        other = await c.get(f"{API}/runs", headers={"X-Forwarded-For": "2001:db8:1:3::1"})
        assert other.status_code == 401  # another network
        assert (await c.get(f"{API}/runs", headers={"X-Forwarded-For": "10.0.0.9"})).status_code
        assert_429(await c.get(f"{API}/runs", headers={"X-Forwarded-For": "::ffff:10.0.0.9"}))


def test_client_addresses_are_canonical() -> None:
    def scope(peer: str) -> dict[str, Any]:
        return {"type": "http", "client": (peer, 1234), "headers": []}

    assert client_ip(scope("::FFFF:192.0.2.1")) == "192.0.2.1"
    assert client_ip(scope("2001:DB8:0:0::1")) == "2001:db8::1"


def test_presented_credential_is_read_not_checked() -> None:
    def scope(*headers: tuple[bytes, bytes], subprotocols: list[str] | None = None) -> Any:
        return {"type": "http", "headers": list(headers), "subprotocols": subprotocols or []}

    assert presented_credential(scope((b"authorization", b"Bearer abc"))) == "abc"
    assert presented_credential(scope((b"authorization", b"Basic abc"))) is None
    assert presented_credential(scope((b"x-api-key", b"fy_1_2"))) == "fy_1_2"
    assert presented_credential(scope(subprotocols=["flowyard.v1", "bearer.tok"])) == "tok"
    assert presented_credential(scope()) is None


async def test_storage_keys_never_hold_the_raw_credential(
    container: Container, fake_time: FakeTime
) -> None:
    app = app_with(container, fake_time)
    token = await token_for(container)
    async with client(app) as c:
        await c.get(f"{API}/runs", headers={"Authorization": f"Bearer {token}"})
    storage: Any = app.state.rate_limits.storage
    keys = list(storage.events)
    assert len(keys) == 2  # the address and the credential
    assert not any(token in key for key in keys)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rate_limit_per_ip", "bogus", "rate_limit_per_ip"),
        ("rate_limit_per_principal", "0/minute", "rate_limit_per_principal"),
        ("trusted_proxies", ["not-an-address"], "trusted_proxies"),
        ("rate_limit_storage", "nope://here", "rate_limit_storage"),
    ],
)
def test_invalid_settings_fail_the_start(
    container: Container, field: str, value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        app_with(container, **{field: value})


def test_invalid_limit_strings_fail_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWYARD_RATE_LIMIT_PER_IP", "lots")
    with pytest.raises(pydantic.ValidationError, match="rate_limit_per_ip"):
        Settings()
    monkeypatch.setenv("FLOWYARD_RATE_LIMIT_PER_IP", "20/second;1200/minute")
    monkeypatch.setenv("FLOWYARD_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16")
    settings = Settings()
    assert settings.rate_limit_per_ip == "20/second;1200/minute"
    assert settings.trusted_proxies == ["10.0.0.1", "192.168.0.0/16"]
    monkeypatch.setenv("FLOWYARD_TRUSTED_PROXIES", '["10.0.0.2"]')
    assert Settings().trusted_proxies == ["10.0.0.2"]


async def test_several_limits_in_one_setting(container: Container, fake_time: FakeTime) -> None:
    app = app_with(container, fake_time, rate_limit_per_ip="2/second;3/minute")
    async with client(app) as c:
        await c.get(f"{API}/runs")
        await c.get(f"{API}/runs")
        assert_429(await c.get(f"{API}/runs"), retry_after=1)
        fake_time.advance(1.5)
        last = await c.get(f"{API}/runs")
        assert last.status_code == 401
        assert last.headers["RateLimit-Limit"] == "3"
        assert_429(await c.get(f"{API}/runs"), retry_after=59)


async def test_websocket_handshake_counts_once_and_is_refused_with_429(
    settings: Settings,
) -> None:
    limited = settings.model_copy(update={"rate_limit_per_ip": "2/minute"})
    async with live_app(limited) as live:
        url = live.ws("/stream")
        async with connect(url, subprotocols=_protocols(live.token)):
            pass
        assert (await live.http.get("/runs")).status_code == 200
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, subprotocols=_protocols(live.token)):
                pass
        response = refused.value.response
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1


def _protocols(token: str) -> Any:
    return ["flowyard.v1", f"bearer.{token}"]


def _redis_up() -> bool:
    if importlib.util.find_spec("redis") is None:
        return False
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 6379), 0.5):
        return True
    return False


@pytest.fixture
def redis_available() -> Iterator[None]:
    if not _redis_up():
        pytest.skip("needs the 'redis' extra and Redis on 127.0.0.1:6379")
    yield


async def test_redis_storage_is_shared_by_processes(
    container: Container, redis_available: None
) -> None:
    """Two apps (as two processes would) share one budget through Redis."""
    changes: dict[str, Any] = {
        "rate_limit_storage": REDIS_URL,
        "rate_limit_per_principal": "2/minute",
        "trusted_proxies": ["127.0.0.1"],
    }
    first, second = app_with(container, **changes), app_with(container, **changes)
    # A fresh address and credential: nothing of other runs shares these keys.
    headers = {
        "Authorization": f"Bearer {secrets.token_urlsafe(24)}",
        "X-Forwarded-For": f"198.51.100.{secrets.randbelow(250) + 1}",
    }
    try:
        async with client(first) as a, client(second) as b:
            assert (await a.get(f"{API}/runs", headers=headers)).status_code == 401
            assert (await b.get(f"{API}/runs", headers=headers)).status_code == 401
            assert_429(await a.get(f"{API}/runs", headers=headers))
            assert_429(await b.get(f"{API}/runs", headers=headers))
    finally:
        await first.state.rate_limits.close()
        await second.state.rate_limits.close()


async def test_storage_failure_lets_requests_through(
    container: Container, redis_available: None, caplog: pytest.LogCaptureFixture
) -> None:
    app = app_with(container, rate_limit_storage="redis://127.0.0.1:1", rate_limit_per_ip="1/hour")
    limits_: RateLimits = app.state.rate_limits
    try:
        async with client(app) as c:
            for _ in range(3):
                response = await c.get(f"{API}/runs")
                assert response.status_code == 401
                assert "RateLimit-Limit" not in response.headers
    finally:
        await limits_.close()
    warnings = [r for r in caplog.records if "storage failed" in r.getMessage()]
    assert len(warnings) == 1
