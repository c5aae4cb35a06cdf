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


def unverified(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


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
    alice = await container.store.get_user_by_name("alice")
    decoded = unverified(body["access_token"])
    assert {"exp", "iat", "sub", "name", "role", "jti", "fam"} <= decoded.keys()
    # Tokens name the user by id; the name is for display only.
    assert decoded["sub"] == alice.id and decoded["name"] == "alice"
    assert decoded["role"] == "editor"
    refresh = unverified(body["refresh_token"])
    assert (refresh["sub"], refresh["fam"]) == (alice.id, decoded["fam"])
    me = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await anon.get(f"{API}/workflows", headers=me)).status_code == 200
    # A refresh token is no access token.
    refresh_as_access = {"Authorization": f"Bearer {body['refresh_token']}"}
    assert (await anon.get(f"{API}/workflows", headers=refresh_as_access)).status_code == 401


async def test_expired_forged_and_unsigned_tokens_are_refused(
    anon: httpx.AsyncClient, container: Container
) -> None:
    headers = await auth_headers(container)  # the admin exists, with a live session
    live = unverified(headers["Authorization"].split()[1])
    key = derive_key(load_master_key(container.settings), "jwt")
    past = datetime.now(UTC) - timedelta(hours=1)

    def claims(**extra: Any) -> dict[str, Any]:
        return {**live, "exp": datetime.now(UTC) + timedelta(minutes=5), **extra}

    good = jwt.encode(claims(), key, algorithm="HS256")
    tokens = {
        "expired": jwt.encode(claims(exp=past, iat=past), key, algorithm="HS256"),
        "forged": jwt.encode(claims(), b"another key of 32 bytes at least!!", algorithm="HS256"),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.",
        "tampered": good[: good.rindex(".")].rsplit(".", 1)[0]
        + "."
        + b64(claims(role="admin", jti="y"))
        + good[good.rindex(".") :],
        "garbage": "not-a-token",
        # Issued before tokens named users by id and session (no ``name``, no ``fam``).
        "old format": jwt.encode(
            {k: v for k, v in claims(sub="admin").items() if k not in ("name", "fam")},
            key,
            algorithm="HS256",
        ),
    }
    assert (await anon.get(f"{API}/runs", headers={"Authorization": f"Bearer {good}"})).is_success
    for name, token in tokens.items():
        response = await anon.get(f"{API}/runs", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        # A short generic answer: nothing of the JWT library's words.
        assert response.json()["detail"] == "invalid token", (name, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


async def test_disabled_user_is_refused(anon: httpx.AsyncClient, container: Container) -> None:
    headers = await auth_headers(container, "carol", Role.VIEWER)
    assert (await anon.get(f"{API}/runs", headers=headers)).status_code == 200
    carol = await container.store.get_user_by_name("carol")
    await container.auth.update_user(carol.id, disabled=True)
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
    soon = datetime.now(UTC) + timedelta(minutes=1)
    created = await container.auth.create_api_key("old", Role.ADMIN, expires_at=soon)
    assert (await anon.get(f"{API}/runs", headers={"X-API-Key": created.key})).is_success
    container.auth.clock = lambda: soon
    response = await anon.get(f"{API}/runs", headers={"X-API-Key": created.key})
    assert response.status_code == 401
    assert response.json()["detail"] == "API key expired"


async def test_an_api_key_cannot_be_created_expired(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    for expires_at, why in (
        (past, "in the past"),
        ("2099-01-01T00:00:00", "timezone"),  # naive: which zone?
    ):
        body = {"name": "ci", "expires_at": expires_at}
        response = await anon.post(f"{API}/api-keys", json=body, headers=admin)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert why in response.text
        assert response.json()["errors"][0]["pointer"] == "/expires_at"
    keys = (await anon.get(f"{API}/api-keys", headers=admin)).json()["items"]
    assert keys == []
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    made = await anon.post(
        f"{API}/api-keys", json={"name": "ci", "expires_at": later}, headers=admin
    )
    assert made.status_code == 201, made.text


async def test_logout_ends_the_access_tokens_of_the_session(
    anon: httpx.AsyncClient, container: Container
) -> None:
    await container.auth.create_user("fay", PASSWORD, Role.VIEWER)
    first = (await login(anon, "fay", PASSWORD)).json()
    other = (await login(anon, "fay", PASSWORD)).json()  # another session (device)
    # Rotation keeps the session: the rotated tokens belong to it.
    rotated = (
        await anon.post(f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]})
    ).json()
    assert unverified(rotated["access_token"])["fam"] == unverified(first["access_token"])["fam"]
    bearer = {"Authorization": f"Bearer {rotated['access_token']}"}
    body = {"refresh_token": rotated["refresh_token"]}
    assert (await anon.post(f"{API}/auth/logout", json=body, headers=bearer)).status_code == 204
    for access in (first["access_token"], rotated["access_token"]):
        response = await anon.get(f"{API}/runs", headers={"Authorization": f"Bearer {access}"})
        assert response.status_code == 401, response.text
        assert "session ended" in response.json()["detail"]
    assert (await anon.post(f"{API}/auth/refresh", json=body)).status_code == 401
    # The other session goes on.
    other_bearer = {"Authorization": f"Bearer {other['access_token']}"}
    assert (await anon.get(f"{API}/runs", headers=other_bearer)).status_code == 200
