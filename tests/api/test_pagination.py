"""Every list pages with ``limit`` and ``cursor``: each item once, in order, no empty last
page (a last page exactly ``limit`` long has no ``next_cursor``), filters kept across pages;
on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import httpx

from flowyard.bootstrap import Container
from flowyard.domain.auth import ApiKeyRecord, Role
from support.auth import PASSWORD
from support.runs import wait_for_runs

API = "/api/v1"


def hello(name: str = "hello", greeting: str = "Hello") -> dict[str, Any]:
    return {
        "name": name,
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "greet"},
            {
                "id": "greet",
                "type": "set",
                "config": {"values": {"greeting": greeting}},
                "next": "done",
            },
            {"id": "done", "type": "end"},
        ],
    }


async def walk(
    api_client: httpx.AsyncClient, path: str, limit: int, **params: Any
) -> list[list[dict[str, Any]]]:
    """Every page of a list, following ``next_cursor``."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = await api_client.get(API + path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= limit
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursor does not advance"


async def assert_pages(
    api_client: httpx.AsyncClient, path: str, expected: list[Any], key: str = "id", **params: Any
) -> None:
    """Paging ``path`` by 1, 2, exactly the total and more gives ``expected`` (values of
    ``key``, in order), each page full but the last, and never an empty page after it."""
    total = len(expected)
    for limit in sorted({1, 2, max(total, 1), total + 1}):
        pages = await walk(api_client, path, limit, **params)
        got = [item[key] for page in pages for item in page]
        assert got == expected, (path, limit)
        assert len(pages) == max(1, math.ceil(total / limit)), (path, limit, len(pages))
        assert all(len(p) == limit for p in pages[:-1])
        if total:
            assert pages[-1], f"{path}: an empty last page with limit={limit}"


async def test_workflows_and_versions(api_client: httpx.AsyncClient) -> None:
    for name in ("d", "b", "a", "c"):
        assert (await api_client.post(f"{API}/workflows", json=hello(name))).status_code == 201
    await api_client.delete(f"{API}/workflows/c")
    await assert_pages(api_client, "/workflows", ["a", "b", "d"], key="name")
    await assert_pages(
        api_client, "/workflows", ["a", "b", "c", "d"], key="name", include_archived="true"
    )

    for greeting in ("Hi", "Hey", "Yo"):
        await api_client.put(f"{API}/workflows/a", json=hello("a", greeting))
    await assert_pages(api_client, "/workflows/a/versions", [4, 3, 2, 1], key="version")


async def test_runs_steps_and_events(api_client: httpx.AsyncClient, container: Container) -> None:
    await api_client.post(f"{API}/workflows", json=hello())
    await api_client.post(f"{API}/workflows", json=hello("other"))
    run_ids = [
        (await api_client.post(f"{API}/workflows/hello/runs", json={"input": {"i": i}})).json()[
            "id"
        ]
        for i in range(4)
    ]
    other = (await api_client.post(f"{API}/workflows/other/runs", json={})).json()["id"]
    await assert_pages(api_client, "/runs", sorted([*run_ids, other], reverse=True))
    await assert_pages(api_client, "/runs", sorted(run_ids, reverse=True), workflow="hello")

    await wait_for_runs(container, [run_ids[0]])
    run = run_ids[0]
    steps = (await api_client.get(f"{API}/runs/{run}")).json()["steps"]
    assert [s["node_id"] for s in steps] == ["start", "greet", "done"]
    await assert_pages(api_client, f"/runs/{run}/steps", [s["id"] for s in steps])
    await assert_pages(
        api_client, f"/runs/{run}/steps", [steps[1]["id"]], node_id="greet", status="succeeded"
    )
    await assert_pages(api_client, f"/runs/{run}/steps", [], status="failed")

    events = [e["id"] for e in (await api_client.get(f"{API}/runs/{run}")).json()["events"]]
    assert len(events) > 4
    await assert_pages(api_client, f"/runs/{run}/events", events)
    # ``after`` is the older name of the cursor; both together must agree.
    tail = (await api_client.get(f"{API}/runs/{run}/events", params={"after": events[1]})).json()
    assert [e["id"] for e in tail["items"]] == events[2:]
    both = {"after": events[1], "cursor": events[1]}
    assert (await api_client.get(f"{API}/runs/{run}/events", params=both)).status_code == 200
    differ = {"after": events[1], "cursor": events[2]}
    conflicting = await api_client.get(f"{API}/runs/{run}/events", params=differ)
    assert conflicting.status_code == 422
    assert conflicting.json()["errors"][0]["code"] == "conflicting_cursor"


async def test_users(api_client: httpx.AsyncClient, container: Container) -> None:
    made = {
        name: await container.auth.create_user(name, PASSWORD, role)
        for name, role in (("dora", Role.VIEWER), ("bob", Role.EDITOR), ("carl", Role.VIEWER))
    }
    await container.auth.update_user(made["carl"].id, disabled=True)
    await assert_pages(api_client, "/users", ["admin", "bob", "carl", "dora"], key="username")
    await assert_pages(api_client, "/users", ["carl", "dora"], key="username", role="viewer")
    await assert_pages(api_client, "/users", ["carl"], key="username", disabled="true")
    await assert_pages(
        api_client, "/users", ["dora"], key="username", role="viewer", disabled="false"
    )


async def test_api_keys_newest_first_even_with_equal_timestamps(
    api_client: httpx.AsyncClient, container: Container
) -> None:
    same = datetime(2025, 1, 1, tzinfo=UTC)
    for i in range(3):  # three keys created in the same microsecond
        await container.store.create_api_key(
            ApiKeyRecord(
                f"key_same{i}", f"same{i}", "h", "k", Role.VIEWER, None, None, None, None, same
            )
        )
    made = [
        (await container.auth.create_api_key(f"k{i}", Role.OPERATOR if i else Role.ADMIN)).record
        for i in range(2)
    ]
    await container.store.revoke_api_key(made[0].id, container.clock())
    newest_first = [made[1].id, made[0].id, "key_same0", "key_same1", "key_same2"]
    await assert_pages(api_client, "/api-keys", newest_first)
    await assert_pages(
        api_client, "/api-keys", ["key_same0", "key_same1", "key_same2"], role="viewer"
    )
    await assert_pages(api_client, "/api-keys", [made[0].id], revoked="true")
    await assert_pages(api_client, "/api-keys", [made[1].id], revoked="false", role="operator")

    bad = await api_client.get(f"{API}/api-keys", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422, bad.text
    assert bad.json()["errors"][0]["code"] == "invalid_cursor"


async def test_audit(api_client: httpx.AsyncClient) -> None:
    for name in ("a", "b", "c", "d"):
        await api_client.post(f"{API}/workflows", json=hello(name))
    entries = (await api_client.get(f"{API}/audit", params={"limit": 500})).json()["items"]
    assert len(entries) >= 4
    await assert_pages(api_client, "/audit", [e["id"] for e in entries])
    created = [e["id"] for e in entries if e["action"] == "workflow.create"]
    assert len(created) == 4
    await assert_pages(api_client, "/audit", created, action="workflow.create")
