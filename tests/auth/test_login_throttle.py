"""Login throttling: a capped exponential backoff per (username, client address) and per
client address, counted in the database (every API process agrees), refused with 429 and
Retry-After before the password is checked, never longer than ``login_backoff_max_s`` for
whoever stops failing; and a disabled account answers exactly like a wrong password."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI

from flowyard.api import create_app
from flowyard.bootstrap import Container, build
from flowyard.domain.auth import Role
from flowyard.security import ThrottlePolicy
from flowyard.security.passwords import PasswordHashing
from flowyard.security.throttle import address_key, pair_key
from flowyard.settings import Settings
from support.auth import PASSWORD, auth_headers
from support.clock import FakeClock

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
MAX_S = 5.0
POLICY = ThrottlePolicy(
    free_failures=3,
    free_failures_per_address=20,
    backoff_base_s=1.0,
    backoff_max_s=MAX_S,
    forget_after_s=900,
)
#: These tests count failed password checks, not their cost: a cheap argon2id (~1 ms, 1 MiB)
#: instead of the production profile (~0.17 s of CPU and 64 MiB per check).
CHEAP_HASHING = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
#: Two clients behind the proxy the apps trust.
CLIENT_A = {"X-Forwarded-For": "203.0.113.5"}
CLIENT_B = {"X-Forwarded-For": "198.51.100.7"}


def throttle(container: Container, policy: ThrottlePolicy = POLICY) -> FakeClock:
    """Give the container's auth service ``policy``, cheap password hashing and a clock that
    moves when told to (starting now: tokens it stamps must pass PyJWT's checks on the real
    clock)."""
    clock = FakeClock(datetime.now(UTC))
    container.auth.clock = clock
    container.auth.throttle.policy = policy
    container.auth.passwords = PasswordHashing(hasher=CHEAP_HASHING)
    return clock


def app_with(container: Container, **changes: Any) -> FastAPI:
    settings = container.settings.model_copy(update={"trusted_proxies": ["127.0.0.1"], **changes})
    return create_app(settings, container=container)


@contextlib.asynccontextmanager
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def login(
    c: httpx.AsyncClient, username: str, password: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    data = {"username": username, "password": password}
    return await c.post(f"{API}/auth/token", data=data, headers=headers)


def retry_after(response: httpx.Response) -> int:
    """The wait of a throttled answer, checked to be a well-formed 429 within the cap."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["type"].endswith("/rate-limited") and body["status"] == 429
    assert "failed logins" in body["detail"] and "access_token" not in body
    # RateLimit-* are the API limit's (when on), never doubled by the login throttle's.
    assert len(response.headers.get_list("ratelimit-limit")) <= 1
    assert len(response.headers.get_list("retry-after")) == 1
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= MAX_S
    assert body["retry_after"] == seconds
    return seconds


async def fail_many(
    c: httpx.AsyncClient, clock: FakeClock, username: str, n: int, headers: dict[str, str]
) -> None:
    """``n`` wrong passwords, each one checked: a throttled attempt waits and tries again."""
    failed = 0
    while failed < n:
        response = await login(c, username, "wrong password", headers)
        if response.status_code == 429:
            clock.advance(retry_after(response))
            continue
        assert response.status_code == 401, response.text
        failed += 1


def test_the_backoff_doubles_and_is_capped() -> None:
    waits = [POLICY.backoff_s(n, POLICY.free_failures) for n in range(9)]
    assert waits == [0, 0, 0, 1, 2, 4, 5, 5, 5]
    assert POLICY.backoff_s(10_000, 0) == MAX_S  # no overflow however many
    assert not ThrottlePolicy(backoff_max_s=0).enabled


#: 5: inside the doubling; 25: past both caps (the pair's wait is capped from its 6th failure,
#: the address's from its 23rd, 20 being free), each failure costing an argon2 check.
@pytest.mark.parametrize("failures", [5, 25])
async def test_wrong_passwords_never_lock_the_right_one_out(
    container: Container, failures: int
) -> None:
    clock = throttle(container)
    await container.auth.create_user("alice", PASSWORD, Role.VIEWER)
    async with client(app_with(container)) as c:
        await fail_many(c, clock, "alice", failures, CLIENT_A)
        # Another client logs in at once: the failures were not its own.
        assert (await login(c, "alice", PASSWORD, CLIENT_B)).status_code == 200
        # The failing client with the right password: refused for a few seconds at most
        # (before the password is checked), then let in.
        throttled = await login(c, "alice", PASSWORD, CLIENT_A)
        clock.advance(retry_after(throttled))
        assert (await login(c, "alice", PASSWORD, CLIENT_A)).status_code == 200
    # A success forgets the pair's failures; the address keeps its own.
    pair, address = pair_key("alice", "203.0.113.5"), address_key("203.0.113.5")
    rows = await container.store.login_failures([pair, address])
    assert [(r.key, r.failures) for r in rows] == [(address, failures)]


async def test_unknown_usernames_are_throttled_alike(container: Container) -> None:
    clock = throttle(container)
    await container.auth.create_user("known", PASSWORD, Role.VIEWER)
    async with client(app_with(container)) as c:
        answers = {}
        for name in ("known", "nobody"):
            for _ in range(POLICY.free_failures):
                assert (await login(c, name, "wrong password", CLIENT_A)).status_code == 401
            answers[name] = retry_after(await login(c, name, "wrong password", CLIENT_A))
            clock.advance(60)
        assert answers["known"] == answers["nobody"] == 1


async def test_failures_are_forgotten_after_the_window(container: Container) -> None:
    clock = throttle(container)
    async with client(app_with(container)) as c:
        await fail_many(c, clock, "bob", 8, CLIENT_A)
        clock.advance(POLICY.forget_after_s + 1)
        for _ in range(POLICY.free_failures):
            assert (await login(c, "bob", "wrong password", CLIENT_A)).status_code == 401


async def test_spraying_from_one_address_is_slowed_for_every_username(
    container: Container,
) -> None:
    clock = throttle(container)
    await container.auth.create_user("dave", PASSWORD, Role.VIEWER)
    async with client(app_with(container)) as c:
        for n in range(POLICY.free_failures_per_address):
            assert (await login(c, f"user{n}", "Winter2031!", CLIENT_A)).status_code == 401
        # A new username from the same address waits; another address does not.
        wait = retry_after(await login(c, "user-new", "Winter2031!", CLIENT_A))
        assert (await login(c, "dave", PASSWORD, CLIENT_B)).status_code == 200
        # dave behind the spraying address gets in once the (capped) wait is over.
        assert retry_after(await login(c, "dave", PASSWORD, CLIENT_A)) == wait
        clock.advance(wait)
        assert (await login(c, "dave", PASSWORD, CLIENT_A)).status_code == 200
        # A success does not wipe the address's slate: the next guess from it waits too.
        retry_after(await login(c, "user-new", "Winter2031!", CLIENT_A))


async def test_parallel_guesses_do_not_all_pass_one_check(container: Container) -> None:
    throttle(container)
    async with client(app_with(container)) as c:
        answers = await asyncio.gather(
            *(login(c, "erin", f"guess {n}", CLIENT_A) for n in range(12))
        )
    statuses = sorted(r.status_code for r in answers)
    # Only the free tries reach the password check; every other one waits.
    assert statuses == [401] * POLICY.free_failures + [429] * (12 - POLICY.free_failures)


async def test_two_app_instances_share_the_counts(container: Container) -> None:
    """Two containers (two API processes' worth) on one database."""
    clock = throttle(container)
    await container.auth.create_user("frank", PASSWORD, Role.VIEWER)
    other = await build(container.settings)
    try:
        other.auth.clock = clock
        other.auth.throttle.policy = POLICY
        async with client(app_with(container)) as one, client(app_with(other)) as two:
            for c in (one, two, one):
                assert (await login(c, "frank", "wrong password", CLIENT_A)).status_code == 401
            retry_after(await login(two, "frank", PASSWORD, CLIENT_A))
            retry_after(await login(one, "frank", PASSWORD, CLIENT_A))
            clock.advance(MAX_S)
            assert (await login(two, "frank", PASSWORD, CLIENT_A)).status_code == 200
    finally:
        await other.close()
    # The success took the pair's row away; the address keeps its count of failures.
    rows = await container.store.login_failures(
        [pair_key("frank", "203.0.113.5"), address_key("203.0.113.5")]
    )
    assert [(r.key, r.failures) for r in rows] == [(address_key("203.0.113.5"), 3)]


async def test_a_disabled_account_answers_exactly_like_a_wrong_password(
    container: Container,
) -> None:
    throttle(container)
    await container.auth.create_user("gina", PASSWORD, Role.VIEWER)
    await container.auth.create_user("hank", PASSWORD, Role.VIEWER)
    hank = await container.store.get_user_by_name("hank")
    await container.auth.update_user(hank.id, disabled=True)
    admin = await auth_headers(container)
    # No API rate limits: their RateLimit-Remaining would count the requests apart.
    async with client(app_with(container, rate_limit_enabled=False)) as c:
        wrong = await login(c, "gina", "wrong password", CLIENT_A)
        disabled = await login(c, "hank", PASSWORD, CLIENT_B)
        unknown = await login(c, "ivan", PASSWORD, CLIENT_A)
        for answer in (disabled, unknown):
            assert answer.status_code == wrong.status_code == 401
            assert answer.content == wrong.content
            assert answer.headers.multi_items() == wrong.headers.multi_items()
        assert wrong.json()["detail"] == "invalid username or password"
        # The audit log (admins only) tells the three apart: the disabled user's password
        # was verified (it was right) although the answer does not say so.
        entries = (
            await c.get(f"{API}/audit", params={"action": "auth.token"}, headers=admin)
        ).json()["items"]
    reasons = [(e["actor"], e["outcome"], e["detail"]) for e in entries[::-1]]
    assert reasons == [
        ("user:gina", "unauthenticated", {"reason": "wrong_password", "status": 401}),
        ("user:hank", "unauthenticated", {"reason": "disabled", "status": 401}),
        ("user:ivan", "unauthenticated", {"reason": "unknown_user", "status": 401}),
    ]


async def test_throttled_logins_are_audited(container: Container) -> None:
    clock = throttle(container, ThrottlePolicy(free_failures=1, backoff_max_s=MAX_S))
    admin = await auth_headers(container)
    async with client(app_with(container)) as c:
        assert (await login(c, "jill", "wrong", CLIENT_A)).status_code == 401
        assert (await login(c, "jill", "wrong", CLIENT_A)).status_code == 429
        clock.advance(1)
        response = await c.get(f"{API}/audit", params={"action": "auth.token"}, headers=admin)
    entries = response.json()["items"]
    got = [(e["action"], e["actor"], e["outcome"], e["detail"]) for e in entries]
    assert got[::-1] == [
        ("auth.token", "user:jill", "unauthenticated", {"reason": "unknown_user", "status": 401}),
        ("auth.token", "user:jill", "throttled", {"status": 429}),
    ]
    assert entries[0]["source_ip"] == "203.0.113.5"


async def test_a_zero_cap_turns_throttling_off(container: Container) -> None:
    throttle(container, ThrottlePolicy(free_failures=0, backoff_max_s=0))
    async with client(app_with(container)) as c:
        for _ in range(8):
            assert (await login(c, "kate", "wrong", CLIENT_A)).status_code == 401
    assert await container.store.login_failures([address_key("203.0.113.5")]) == []


async def test_login_throttling_works_without_the_api_rate_limits(
    container: Container,
) -> None:
    throttle(container, ThrottlePolicy(free_failures=1, backoff_max_s=MAX_S))
    async with client(app_with(container, rate_limit_enabled=False)) as c:
        assert (await login(c, "liam", "wrong", CLIENT_A)).status_code == 401
        throttled = await login(c, "liam", "wrong", CLIENT_A)
        assert retry_after(throttled) == 1
        assert "ratelimit-limit" not in throttled.headers


async def test_the_settings_make_the_policy(db_url: str) -> None:
    settings = Settings(
        db_url=db_url,
        workers=0,
        load_plugins=False,
        login_free_failures=2,
        login_free_failures_per_ip=7,
        login_backoff_base_s=0.5,
        login_backoff_max_s=3,
        login_failure_window_s=60,
    )
    built = await build(settings)
    try:
        assert built.auth.throttle.policy == ThrottlePolicy(2, 7, 0.5, 3.0, 60)
    finally:
        await built.close()


async def test_a_successful_login_logs_no_error(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    """Clearing the old per-process throttle raced the `limits` memory storage's expiry task
    (``Task exception was never retrieved ... KeyError``) when the storage held many keys."""
    caplog.set_level(logging.WARNING)
    await container.auth.create_user("mona", PASSWORD, Role.VIEWER)
    async with client(app_with(container, trusted_proxies=[])) as c:
        for n in range(150):  # many keys in the rate-limit storage
            await c.get(f"{API}/runs", headers={"Authorization": f"Bearer junk{n}"})
        for _ in range(6):  # a race: each round is another chance to lose it
            for _ in range(2):
                assert (await login(c, "mona", "wrong")).status_code == 401
            assert (await login(c, "mona", PASSWORD)).status_code == 200
            for _ in range(3):
                await c.get(f"{API}/runs")
                await asyncio.sleep(0.05)
    gc.collect()
    await asyncio.sleep(0.1)
    gc.collect()
    assert "KeyError" not in caplog.text
    assert "never retrieved" not in caplog.text


@pytest.mark.parametrize(
    "spellings",
    [
        # One attacker's /64: every guess from a fresh address of it.
        [f"2001:db8:1:2:{n:x}::{n + 1:x}" for n in range(8)],
        # One IPv4 client, spelled every way a proxy or a dual-stack listener may.
        ["203.0.113.5", "::ffff:203.0.113.5", "[::FFFF:CB00:7105]:443", "203.0.113.5:5012"] * 2,
    ],
    ids=["ipv6-/64", "ipv4-spellings"],
)
async def test_one_client_is_one_client_however_it_is_addressed(
    container: Container, spellings: list[str]
) -> None:
    throttle(container)
    async with client(app_with(container)) as c:
        answers = [
            (await login(c, "nina", "wrong password", {"X-Forwarded-For": address})).status_code
            for address in spellings
        ]
        # Another /64 (or address) is another client.
        other = await login(c, "nina", "wrong password", {"X-Forwarded-For": "2001:db8:1:3::1"})
    assert answers[: POLICY.free_failures] == [401] * POLICY.free_failures
    assert answers[POLICY.free_failures] == 429
    assert other.status_code == 401


async def test_the_ipv6_prefix_is_a_setting(db_url: str) -> None:
    settings = Settings(db_url=db_url, workers=0, load_plugins=False, client_ipv6_prefix=56)
    built = await build(settings)
    try:
        assert built.auth.throttle.policy.ipv6_prefix == 56
    finally:
        await built.close()
    with pytest.raises(ValueError, match="client_ipv6_prefix"):
        Settings(db_url=db_url, client_ipv6_prefix=0)
