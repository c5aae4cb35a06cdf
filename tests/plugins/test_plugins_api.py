"""``GET /api/v1/plugins``: the registry's report of the node packs, to any role."""

from __future__ import annotations

import httpx

from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from support.api import admin_client
from support.auth import auth_headers

API = "/api/v1"


async def test_plugins_lists_flowyard_own_pack_with_its_types(
    api_client: httpx.AsyncClient,
) -> None:
    response = await api_client.get(f"{API}/plugins")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    [own] = [p for p in body["items"] if p["distribution"] == "flowyard"]
    assert (own["name"], own["value"], own["status"], own["error"]) == (
        "integrations",
        "flowyard.integrations:register",
        "loaded",
        None,
    )
    assert {"salesforce", "email", "slack", "sentiment"} <= set(own["types"])


async def test_a_viewer_may_read_the_plugins_and_nobody_anonymous(
    container: Container, anon: httpx.AsyncClient
) -> None:
    assert (await anon.get(f"{API}/plugins")).status_code == 401
    async with admin_client(container) as client:
        client.headers.update(await auth_headers(container, "viewer", Role.VIEWER))
        assert (await client.get(f"{API}/plugins")).status_code == 200


async def test_plugins_are_paged_by_position(
    api_client: httpx.AsyncClient, container: Container
) -> None:
    everything = container.registry.plugins()
    first = (await api_client.get(f"{API}/plugins", params={"limit": 1})).json()
    assert len(first["items"]) == 1
    assert first["next_cursor"] == ("1" if len(everything) > 1 else None)
    past = await api_client.get(f"{API}/plugins", params={"cursor": str(len(everything))})
    assert past.status_code == 200 and past.json() == {"items": [], "next_cursor": None}
    bad = await api_client.get(f"{API}/plugins", params={"cursor": "salesforce"})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
