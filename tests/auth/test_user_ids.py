"""Users are found by id or by name, never by "id or name": a user may be named like another
user's id. Tokens name their user by id, so a user deleted and created again under the same
name does not inherit the old tokens."""

from __future__ import annotations

import httpx
import pytest

from flowyard.bootstrap import Container
from flowyard.domain.auth import Role, check_username
from flowyard.domain.errors import InvalidInput, NotFound
from support.auth import PASSWORD, auth_headers

API = "/api/v1"


async def test_a_user_named_like_another_users_id_is_not_confused_with_it(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)  # 'admin', an admin
    admin_id = (await container.store.get_user_by_name("admin")).id
    # A viewer whose *name* is the admin's id.
    mallory = await container.auth.create_user(admin_id, PASSWORD, Role.VIEWER)
    assert mallory.id != admin_id

    assert (await container.store.get_user_by_id(admin_id)).username == "admin"
    assert (await container.store.get_user_by_name(admin_id)).id == mallory.id
    with pytest.raises(NotFound):
        await container.store.get_user_by_id("admin")  # a name is no id
    with pytest.raises(NotFound):
        await container.store.get_user_by_name(mallory.id)  # an id is no name

    # Her token is hers: a viewer's, whatever her name.
    login = await anon.post(f"{API}/auth/token", data={"username": admin_id, "password": PASSWORD})
    assert login.status_code == 200, login.text
    bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    assert (await anon.get(f"{API}/users", headers=bearer)).status_code == 403
    assert (await anon.get(f"{API}/runs", headers=bearer)).status_code == 200

    # /users/{user_id} takes ids only: the admin's id is the admin, not mallory.
    changed = await anon.patch(f"{API}/users/{admin_id}", json={"role": "admin"}, headers=admin)
    assert changed.json()["username"] == "admin"
    by_name = await anon.patch(f"{API}/users/admin", json={"role": "viewer"}, headers=admin)
    assert by_name.status_code == 404
    assert (await container.store.get_user_by_id(admin_id)).role is Role.ADMIN
    assert (await container.store.get_user_by_id(mallory.id)).role is Role.VIEWER


async def test_a_recreated_user_does_not_inherit_tokens(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    old = await auth_headers(container, "nina", Role.EDITOR)
    pair = (
        await anon.post(f"{API}/auth/token", data={"username": "nina", "password": PASSWORD})
    ).json()
    nina = await container.store.get_user_by_name("nina")
    assert (await anon.delete(f"{API}/users/{nina.id}", headers=admin)).status_code == 204
    await container.auth.create_user("nina", PASSWORD, Role.ADMIN)  # same name, new user
    assert (await anon.get(f"{API}/runs", headers=old)).status_code == 401
    refreshed = await anon.post(
        f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert refreshed.status_code == 401


async def test_a_refused_user_create_is_audited_against_the_existing_user(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    made = await anon.post(
        f"{API}/users", json={"username": "olga", "password": PASSWORD}, headers=admin
    )
    again = await anon.post(
        f"{API}/users", json={"username": "olga", "password": PASSWORD}, headers=admin
    )
    assert again.status_code == 409
    entries = (
        await anon.get(f"{API}/audit", params={"action": "user.create"}, headers=admin)
    ).json()["items"]
    assert [(e["outcome"], e["target_type"], e["target_id"]) for e in entries] == [
        ("conflict", "user", made.json()["id"]),
        ("success", "user", made.json()["id"]),
    ]


async def test_the_api_refuses_the_usernames_the_cli_refuses(
    anon: httpx.AsyncClient, container: Container
) -> None:
    """One rule (``flowyard.domain.auth.check_username``) for the API and the CLI."""
    admin = await auth_headers(container)
    for bad in ("ada lovelace", "ada/lovelace", "ada\n", "", "a" * 129):
        with pytest.raises(InvalidInput):
            check_username(bad)
        body = {"username": bad, "password": PASSWORD}
        response = await anon.post(f"{API}/users", json=body, headers=admin)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["errors"][0]["pointer"] == "/username"
    for good in ("ada", "ada.lovelace@example.com", "a" * 128, "A_1-b"):
        check_username(good)
