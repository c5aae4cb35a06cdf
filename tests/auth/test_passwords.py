"""Password strength (zxcvbn) wherever a password is set, and the self-service change: it
needs the current password, is throttled like a login, and ends every session."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from flowyard.api.app import StartupRefused, first_start
from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from flowyard.domain.errors import InvalidInput
from flowyard.security import ThrottlePolicy
from support.auth import PASSWORD, auth_headers
from support.clock import FakeClock
from support.procs import flowyard_executable

API = "/api/v1"
NEW_PASSWORD = "a quiet lighthouse keeps nine ledgers"
WEAK = ["password", "Password123!", "hunter2hunter2", "qwertyuiop", "flowyard2031"]


def assert_too_weak(response: httpx.Response, pointer: str = "/password") -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["detail"].startswith("password too weak: ")
    [error] = body["errors"]
    assert error["pointer"] == pointer and error["code"] == "too_weak"
    assert "of 4" in error["message"]


async def login(c: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await c.post(f"{API}/auth/token", data={"username": username, "password": password})


@pytest.mark.parametrize("weak", WEAK)
async def test_weak_passwords_are_refused_with_the_reason(
    anon: httpx.AsyncClient, container: Container, weak: str
) -> None:
    admin = await auth_headers(container)
    created = await anon.post(
        f"{API}/users", json={"username": "pat", "password": weak}, headers=admin
    )
    assert_too_weak(created)
    users = (await anon.get(f"{API}/users", headers=admin)).json()["items"]
    assert [u["username"] for u in users] == ["admin"]


async def test_the_reason_is_zxcvbns_feedback_and_the_username_counts(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    common = await anon.post(
        f"{API}/users", json={"username": "pat", "password": "password"}, headers=admin
    )
    assert "common password" in common.json()["detail"]
    # Strong for anyone else, weak for the user it names.
    name = "quentinmarlowe"
    assert (
        await anon.post(
            f"{API}/users", json={"username": "x1", "password": name + "77"}, headers=admin
        )
    ).status_code == 201
    assert_too_weak(
        await anon.post(
            f"{API}/users", json={"username": name, "password": name + "77"}, headers=admin
        )
    )


async def test_an_admin_cannot_set_a_weak_password(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    user = await container.auth.create_user("rita", PASSWORD, Role.VIEWER)
    response = await anon.patch(
        f"{API}/users/{user.id}", json={"password": "password1"}, headers=admin
    )
    assert_too_weak(response)
    assert (await container.store.get_user_by_id(user.id)).password_hash == user.password_hash
    with pytest.raises(InvalidInput, match="too weak"):
        await container.auth.update_user(user.id, password="password1")


async def test_a_weak_admin_password_stops_the_first_start(container: Container) -> None:
    container.settings = container.settings.model_copy(
        update={"admin_password": SecretStr("password")}
    )
    with pytest.raises(StartupRefused, match="FLOWYARD_ADMIN_PASSWORD is too weak"):
        await first_start(container)
    assert await container.store.count_users() == 0


async def test_users_change_their_own_password(
    anon: httpx.AsyncClient, container: Container
) -> None:
    await container.auth.create_user("sam", PASSWORD, Role.VIEWER)
    phone = (await login(anon, "sam", PASSWORD)).json()
    laptop = (await login(anon, "sam", PASSWORD)).json()
    bearer = {"Authorization": f"Bearer {laptop['access_token']}"}
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}

    changed = await anon.post(f"{API}/auth/password", json=body, headers=bearer)
    assert changed.status_code == 200, changed.text
    fresh = changed.json()
    assert fresh["token_type"] == "bearer"

    # Every session ended: access and refresh tokens of both devices.
    for pair in (phone, laptop):
        headers = {"Authorization": f"Bearer {pair['access_token']}"}
        assert (await anon.get(f"{API}/runs", headers=headers)).status_code == 401
        refresh = {"refresh_token": pair["refresh_token"]}
        assert (await anon.post(f"{API}/auth/refresh", json=refresh)).status_code == 401
    # The answer is a new session; the new password logs in, the old one no more.
    new_bearer = {"Authorization": f"Bearer {fresh['access_token']}"}
    assert (await anon.get(f"{API}/runs", headers=new_bearer)).status_code == 200
    assert (await login(anon, "sam", NEW_PASSWORD)).status_code == 200
    assert (await login(anon, "sam", PASSWORD)).status_code == 401

    admin = await auth_headers(container)
    [entry] = (
        await anon.get(f"{API}/audit", params={"action": "auth.password"}, headers=admin)
    ).json()["items"]
    sam = await container.store.get_user_by_name("sam")
    assert (entry["actor"], entry["target_type"], entry["target_id"]) == (
        "user:sam",
        "user",
        sam.id,
    )
    assert entry["outcome"] == "success"
    assert PASSWORD not in str(entry) and NEW_PASSWORD not in str(entry)


async def test_a_wrong_current_password_or_a_weak_new_one_changes_nothing(
    anon: httpx.AsyncClient, container: Container
) -> None:
    await container.auth.create_user("tess", PASSWORD, Role.VIEWER)
    pair = (await login(anon, "tess", PASSWORD)).json()
    bearer = {"Authorization": f"Bearer {pair['access_token']}"}

    weak = await anon.post(
        f"{API}/auth/password",
        json={"current_password": PASSWORD, "new_password": "password"},
        headers=bearer,
    )
    assert_too_weak(weak, "/new_password")
    wrong = await anon.post(
        f"{API}/auth/password",
        json={"current_password": "not it at all", "new_password": NEW_PASSWORD},
        headers=bearer,
    )
    assert wrong.status_code == 422, wrong.text
    assert wrong.json()["errors"][0]["pointer"] == "/current_password"
    # Nothing changed: the session lives, the old password still logs in.
    assert (await anon.get(f"{API}/runs", headers=bearer)).status_code == 200
    assert (await login(anon, "tess", PASSWORD)).status_code == 200


async def test_guessing_the_current_password_is_throttled_like_a_login(
    anon: httpx.AsyncClient, container: Container
) -> None:
    clock = FakeClock(datetime.now(UTC))
    container.auth.clock = clock
    container.auth.throttle.policy = ThrottlePolicy(free_failures=2, backoff_max_s=5)
    await container.auth.create_user("uma", PASSWORD, Role.VIEWER)
    bearer = await auth_headers(container, "uma")
    guess = {"current_password": "guess", "new_password": NEW_PASSWORD}
    for _ in range(2):
        response = await anon.post(f"{API}/auth/password", json=guess, headers=bearer)
        assert response.status_code == 422
    throttled = await anon.post(f"{API}/auth/password", json=guess, headers=bearer)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"
    # The same counter as the login's (same user, same address).
    assert (await login(anon, "uma", PASSWORD)).status_code == 429
    clock.advance(1)
    right = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert (await anon.post(f"{API}/auth/password", json=right, headers=bearer)).is_success


async def test_api_keys_have_no_password_to_change(
    anon: httpx.AsyncClient, container: Container
) -> None:
    created = await container.auth.create_api_key("ci", Role.ADMIN)
    response = await anon.post(
        f"{API}/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers={"X-API-Key": created.key},
    )
    assert response.status_code == 403, response.text


def test_serve_refuses_to_start_with_a_weak_admin_password(tmp_path: Path) -> None:
    env = {**os.environ, "FLOWYARD_ADMIN_PASSWORD": "password", "FLOWYARD_LOAD_SAMPLES": "0"}
    db = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = subprocess.run(
        [flowyard_executable(), "serve", "--db", db, "--port", "0", "--workers", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "FLOWYARD_ADMIN_PASSWORD is too weak for the first admin" in result.stderr
    assert "common password" in result.stderr
    # One clear line before serving, not a traceback out of the ASGI lifespan.
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
