"""The last enabled admin cannot be demoted, disabled or deleted (409, ``reason:
last_admin``), checked in the store transaction: on SQLite and PostgreSQL, also when two
admins demote each other at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from flowyard.domain.errors import Conflict
from support.auth import PASSWORD, auth_headers

API = "/api/v1"


def assert_last_admin(response: httpx.Response, username: str) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"].endswith("/conflict")
    assert body["reason"] == "last_admin"
    assert f"{username!r}" in body["detail"] and "last enabled admin" in body["detail"]


async def test_the_last_admin_is_kept(anon: httpx.AsyncClient, container: Container) -> None:
    admin = await auth_headers(container)  # creates 'admin', the only admin
    user = await container.store.get_user_by_name("admin")
    for method, body in (
        ("PATCH", {"role": "editor"}),
        ("PATCH", {"disabled": True}),
        ("PATCH", {"role": "viewer", "password": "another password"}),
        ("DELETE", None),
    ):
        response = await anon.request(method, f"{API}/users/{user.id}", json=body, headers=admin)
        assert_last_admin(response, "admin")
    kept = await container.store.get_user_by_name("admin")
    assert (kept.role, kept.disabled, kept.password_hash) == (
        Role.ADMIN,
        False,
        user.password_hash,
    )
    # What does not remove the last admin still works (a new password ends the sessions).
    allowed = await anon.patch(
        f"{API}/users/{user.id}",
        json={"role": "admin", "password": "another password"},
        headers=admin,
    )
    assert allowed.status_code == 200, allowed.text
    admin = await auth_headers(container)
    audit = (await anon.get(f"{API}/audit", params={"action": "user.delete"}, headers=admin)).json()
    assert audit["items"][0]["outcome"] == "conflict"


async def test_another_enabled_admin_lifts_the_protection(
    anon: httpx.AsyncClient, container: Container
) -> None:
    admin = await auth_headers(container)
    backup_id = (await container.auth.create_user("backup", PASSWORD, Role.ADMIN)).id
    asleep = await container.auth.create_user("asleep", PASSWORD, Role.ADMIN)
    await container.auth.update_user(asleep.id, disabled=True)  # two enabled admins: allowed

    admin_id = (await container.store.get_user_by_name("admin")).id
    demoted = await anon.patch(f"{API}/users/{admin_id}", json={"role": "viewer"}, headers=admin)
    assert demoted.status_code == 200, demoted.text
    # 'backup' is now the last enabled admin: the disabled one does not count.
    backup = await auth_headers(container, "backup")
    assert_last_admin(
        await anon.patch(f"{API}/users/{backup_id}", json={"disabled": True}, headers=backup),
        "backup",
    )
    assert_last_admin(await anon.delete(f"{API}/users/{backup_id}", headers=backup), "backup")
    # Deleting or demoting admins that are disabled is fine.
    assert (await anon.delete(f"{API}/users/{asleep.id}", headers=backup)).status_code == 204


async def test_unknown_user_is_still_404(anon: httpx.AsyncClient, container: Container) -> None:
    admin = await auth_headers(container)
    missing = await anon.patch(f"{API}/users/ghost", json={"role": "viewer"}, headers=admin)
    assert missing.status_code == 404
    assert (await anon.delete(f"{API}/users/ghost", headers=admin)).status_code == 404


@pytest.mark.parametrize("change", ["demote", "disable", "delete"])
async def test_two_admins_removing_each_other_at_once_leave_one(
    container: Container, change: str
) -> None:
    store = container.store
    first = await container.auth.create_user("first", PASSWORD, Role.ADMIN)
    second = await container.auth.create_user("second", PASSWORD, Role.ADMIN)

    async def remove(user_id: str) -> None:
        if change == "delete":
            await store.delete_user(user_id, now=datetime.now(UTC))
        elif change == "disable":
            await store.update_user(user_id, {"disabled": True}, container.clock())
        else:
            await store.update_user(user_id, {"role": Role.VIEWER}, container.clock())

    for _ in range(3):
        results = await asyncio.gather(remove(first.id), remove(second.id), return_exceptions=True)
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(refused) == 1 and isinstance(refused[0], Conflict), results
        enabled_admins = [u for u in await store.list_users(role=Role.ADMIN) if not u.disabled]
        assert len(enabled_admins) == 1
        # Restore two admins for the next round.
        survivor = enabled_admins[0]
        other = second if survivor.id == first.id else first
        if change == "delete":
            other = await container.auth.create_user(other.username, PASSWORD, Role.ADMIN)
        else:
            await store.update_user(
                other.id, {"role": Role.ADMIN, "disabled": False}, container.clock()
            )
        first, second = survivor, other
