"""Passwords, JWTs (expired, forged, alg:none), refresh rotation and API keys."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt

from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from flowyard.security import derive_key, load_master_key
from support.auth import PASSWORD, auth_headers

API = "/api/v1"


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(f"{API}/auth/token", data={"username": username, "password": password})


def claims(**extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "sub": "admin",
        "role": "admin",
        "typ": "access",
        "jti": "x",
        "iat": now,
        "exp": now + timedelta(minutes=5),
        **extra,
    }


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, default=str).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def test_password_login_gives_a_working_token_pair(
    anon: httpx.AsyncClient, container: Container
) -> None:
    await container.auth.create_user("alice", PASSWORD, Role.EDITOR)
    assert (await login(anon, "alice", "wrong password")).status_code == 401
    assert (await login(anon, "nobody", PASSWORD)).status_code == 401
    response = await login(anon, "alice", PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0
    decoded = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert {"exp", "iat", "sub", "role", "jti"} <= decoded.keys()
    assert decoded["sub"] == "alice" and decoded["role"] == "editor"
    me = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await anon.get(f"{API}/workflows", headers=me)).status_code == 200
    # A refresh token is no access token.
    refresh_as_access = {"Authorization": f"Bearer {body['refresh_token']}"}
    assert (await anon.get(f"{API}/workflows", headers=refresh_as_access)).status_code == 401


async def test_expired_forged_and_unsigned_tokens_are_refused(
    anon: httpx.AsyncClient, container: Container
) -> None:
    await auth_headers(container)  # the admin exists
    key = derive_key(load_master_key(container.settings), "jwt")
    past = datetime.now(UTC) - timedelta(hours=1)
    good = jwt.encode(claims(), key, algorithm="HS256")
    tokens = {
        "expired": jwt.encode(claims(exp=past, iat=past), key, algorithm="HS256"),
        "forged": jwt.encode(claims(), b"another key of 32 bytes at least!!", algorithm="HS256"),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.",
        "tampered": good[: good.rindex(".")].rsplit(".", 1)[0]
        + "."
        + b64(claims(sub="admin", role="admin", jti="y"))
        + good[good.rindex(".") :],
        "garbage": "not-a-token",
    }
    assert (await anon.get(f"{API}/runs", headers={"Authorization": f"Bearer {good}"})).is_success
    for name, token in tokens.items():
        response = await anon.get(f"{API}/runs", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name


async def test_disabled_user_is_refused(anon: httpx.AsyncClient, container: Container) -> None:
    headers = await auth_headers(container, "carol", Role.VIEWER)
    assert (await anon.get(f"{API}/runs", headers=headers)).status_code == 200
    await container.auth.update_user("carol", disabled=True)
    assert (await anon.get(f"{API}/runs", headers=headers)).status_code == 401
    assert (await login(anon, "carol", PASSWORD)).status_code == 401


async def test_refresh_rotates_and_reuse_revokes_the_family(
    anon: httpx.AsyncClient, container: Container
) -> None:
    await container.auth.create_user("dave", PASSWORD, Role.VIEWER)
    first = (await login(anon, "dave", PASSWORD)).json()["refresh_token"]
    rotated = await anon.post(f"{API}/auth/refresh", json={"refresh_token": first})
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["refresh_token"]
    assert second != first
    # Reusing the used token: refused, and the family (incl. the new token) is revoked.
    reused = await anon.post(f"{API}/auth/refresh", json={"refresh_token": first})
    assert reused.status_code == 401
    assert reused.headers["www-authenticate"] == "Bearer"
    assert (
        await anon.post(f"{API}/auth/refresh", json={"refresh_token": second})
    ).status_code == 401
    # Another login is a new family.
    other = (await login(anon, "dave", PASSWORD)).json()
    assert (
        await anon.post(f"{API}/auth/refresh", json={"refresh_token": other["refresh_token"]})
    ).is_success


async def test_logout_revokes_the_family(anon: httpx.AsyncClient, container: Container) -> None:
    await container.auth.create_user("erin", PASSWORD, Role.VIEWER)
    pair = (await login(anon, "erin", PASSWORD)).json()
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    body = {"refresh_token": pair["refresh_token"]}
    assert (await anon.post(f"{API}/auth/logout", json=body)).status_code == 401
    assert (await anon.post(f"{API}/auth/logout", json=body, headers=headers)).status_code == 204
    assert (await anon.post(f"{API}/auth/refresh", json=body)).status_code == 401


async def test_api_key_shown_once_usable_and_revocable(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    created = await anon.post(
        f"{API}/api-keys", json={"name": "ci", "role": "operator"}, headers=admin
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    key_id = created.json()["id"]
    assert key.startswith(f"fy_{created.json()['prefix']}_")
    listed = (await anon.get(f"{API}/api-keys", headers=admin)).json()["items"]
    assert key not in json.dumps(listed)
    assert listed[0]["last_used_at"] is None and "hash" not in listed[0]

    bearer = {"Authorization": f"Bearer {key}"}
    assert (await anon.get(f"{API}/runs", headers=bearer)).status_code == 200
    assert (await anon.get(f"{API}/runs", headers={"X-API-Key": key})).status_code == 200
    # Its role applies: an operator may not create workflows or users.
    assert (await anon.get(f"{API}/users", headers=bearer)).status_code == 403
    [meta] = (await anon.get(f"{API}/api-keys", headers=admin)).json()["items"]
    assert meta["last_used_at"] is not None

    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert (await anon.get(f"{API}/runs", headers={"X-API-Key": wrong})).status_code == 401

    assert (await anon.delete(f"{API}/api-keys/{key_id}", headers=admin)).status_code == 204
    assert (await anon.get(f"{API}/runs", headers=bearer)).status_code == 401


async def test_expired_api_key_is_refused(anon: httpx.AsyncClient, container: Container) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    created = await container.auth.create_api_key("old", Role.ADMIN, expires_at=past)
    response = await anon.get(f"{API}/runs", headers={"X-API-Key": created.key})
    assert response.status_code == 401
