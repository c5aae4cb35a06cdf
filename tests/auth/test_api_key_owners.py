"""An API key acts for the user who made it: never with more than the owner's current role,
and not at all while the owner is disabled (refused exactly like a revoked key)."""

from __future__ import annotations

import httpx

from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from support.auth import auth_headers

API = "/api/v1"


async def make_key(anon: httpx.AsyncClient, headers: dict[str, str], role: str) -> str:
    created = await anon.post(f"{API}/api-keys", json={"name": "ci", "role": role}, headers=headers)
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


async def test_a_key_never_grants_more_than_its_owner_has_now(
    anon: httpx.AsyncClient, container: Container
) -> None:
    root = await auth_headers(container)
    olga_headers = await auth_headers(container, "olga", Role.ADMIN)
    olga = await container.store.get_user_by_name("olga")
    key = {"X-API-Key": await make_key(anon, olga_headers, "admin")}
    assert (await anon.get(f"{API}/users", headers=key)).status_code == 200
    # Olga is demoted to viewer: her admin key reads like a viewer, and writes nothing.
    demoted = await anon.patch(f"{API}/users/{olga.id}", json={"role": "viewer"}, headers=root)
    assert demoted.status_code == 200, demoted.text
    assert (await anon.get(f"{API}/users", headers=key)).status_code == 403
    assert (await anon.get(f"{API}/runs", headers=key)).status_code == 200
    made = await anon.post(f"{API}/api-keys", json={"name": "more"}, headers=key)
    assert made.status_code == 403
    # A key of a lesser role than its owner keeps its own.
    await anon.patch(f"{API}/users/{olga.id}", json={"role": "admin"}, headers=root)
    viewer_key = {"X-API-Key": await make_key(anon, olga_headers, "viewer")}
    assert (await anon.get(f"{API}/users", headers=viewer_key)).status_code == 403


async def test_a_disabled_owners_key_is_refused_like_a_revoked_one(
    anon: httpx.AsyncClient, container: Container
) -> None:
    root = await auth_headers(container)
    pete_headers = await auth_headers(container, "pete", Role.ADMIN)
    pete = await container.store.get_user_by_name("pete")
    key = {"X-API-Key": await make_key(anon, pete_headers, "operator")}
    revoked_key = await make_key(anon, root, "operator")
    [revoked_meta] = [
        k
        for k in (await anon.get(f"{API}/api-keys", headers=root)).json()["items"]
        if revoked_key.startswith(f"fy_{k['prefix']}_")
    ]
    await anon.delete(f"{API}/api-keys/{revoked_meta['id']}", headers=root)
    revoked = await anon.get(f"{API}/runs", headers={"X-API-Key": revoked_key})
    assert revoked.status_code == 401

    assert (await anon.get(f"{API}/runs", headers=key)).status_code == 200
    disabled = await anon.patch(f"{API}/users/{pete.id}", json={"disabled": True}, headers=root)
    assert disabled.status_code == 200, disabled.text
    refused = await anon.get(f"{API}/runs", headers=key)
    assert refused.status_code == 401
    assert refused.content == revoked.content
    assert refused.headers["www-authenticate"] == revoked.headers["www-authenticate"]
    # Enabled again: the key works again (it was never revoked).
    await anon.patch(f"{API}/users/{pete.id}", json={"disabled": False}, headers=root)
    assert (await anon.get(f"{API}/runs", headers=key)).status_code == 200


async def test_deleting_a_user_revokes_their_keys(
    anon: httpx.AsyncClient, container: Container
) -> None:
    """A deleted admin's admin key must not keep working with nobody behind it."""
    root = await auth_headers(container)
    gone_headers = await auth_headers(container, "gone", Role.ADMIN)
    gone = await container.store.get_user_by_name("gone")
    key = {"X-API-Key": await make_key(anon, gone_headers, "admin")}
    assert (await anon.get(f"{API}/users", headers=key)).status_code == 200
    deleted = await anon.delete(f"{API}/users/{gone.id}", headers=root)
    assert deleted.status_code == 204, deleted.text
    refused = await anon.get(f"{API}/users", headers=key)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    listed = (await anon.get(f"{API}/api-keys", headers=root)).json()["items"]
    assert [k["revoked_at"] is not None for k in listed if k["name"] == "ci"] == [True]
