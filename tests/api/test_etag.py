"""Conditional requests on workflows: ETag, If-Match (412) and If-None-Match (304), on
SQLite and PostgreSQL; of concurrent writers that read the same ETag exactly one wins."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from flowyard.bootstrap import Container
from flowyard.domain.errors import Conflict, PreconditionFailed

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"


def hello(greeting: str = "Hello", name: str = "hello") -> dict[str, Any]:
    return {
        "name": name,
        "start": "start",
        "nodes": [
            {"id": "start", "type": "trigger", "next": "greet"},
            {
                "id": "greet",
                "type": "set",
                "config": {"values": {"greeting": greeting + " {{ input.name }}"}},
                "next": "done",
            },
            {"id": "done", "type": "end"},
        ],
    }


def assert_412(response: httpx.Response, current_etag: str) -> dict[str, Any]:
    assert response.status_code == 412, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/precondition-failed")
    assert body["status"] == 412
    assert body["current_etag"] == current_etag
    assert current_etag in body["detail"]
    return body


async def versions(api_client: httpx.AsyncClient, ref: str = "hello") -> list[int]:
    page = (await api_client.get(f"{API}/workflows/{ref}/versions")).json()
    return [v["version"] for v in page["items"]]


async def test_etag_follows_the_latest_version(api_client: httpx.AsyncClient) -> None:
    created = await api_client.post(f"{API}/workflows", json=hello())
    assert created.headers["etag"] == '"1"'
    assert (await api_client.get(f"{API}/workflows/hello")).headers["etag"] == '"1"'
    updated = await api_client.put(
        f"{API}/workflows/hello", json=hello("Hi"), headers={"If-Match": '"1"'}
    )
    assert updated.status_code == 200, updated.text
    assert updated.headers["etag"] == '"2"'
    assert updated.json()["version"]["version"] == 2
    fetched = await api_client.get(f"{API}/workflows/hello")
    assert fetched.headers["etag"] == '"2"'
    assert fetched.json()["version"]["version"] == fetched.json()["workflow"]["latest_version"]


async def test_stale_if_match_is_412_and_saves_nothing(api_client: httpx.AsyncClient) -> None:
    await api_client.post(f"{API}/workflows", json=hello())
    await api_client.put(f"{API}/workflows/hello", json=hello("Hi"), headers={"If-Match": '"1"'})

    stale = await api_client.put(
        f"{API}/workflows/hello", json=hello("Hey"), headers={"If-Match": '"1"'}
    )
    body = assert_412(stale, '"2"')
    assert body["latest_version"] == 2 and body["archived"] is False
    assert "version 2" in body["detail"]
    assert await versions(api_client) == [2, 1]
    current = (await api_client.get(f"{API}/workflows/hello")).json()["version"]["definition"]
    assert current == hello("Hi")

    # Precondition before content: a stale write with a broken definition is still 412.
    broken = await api_client.put(
        f"{API}/workflows/hello", json={"name": "hello"}, headers={"If-Match": '"1"'}
    )
    assert_412(broken, '"2"')
    audit = (await api_client.get(f"{API}/audit", params={"action": "workflow.update"})).json()
    assert [e["outcome"] for e in audit["items"]][:2] == ["conflict", "conflict"]


@pytest.mark.parametrize(
    ("if_match", "status"),
    [
        ("*", 200),
        ('"1"', 200),
        ("1", 200),  # a bare tag is taken as quoted
        ('"7", "1"', 200),  # any tag of a list
        ('W/"1"', 412),  # If-Match compares strongly: a weak tag never matches
        ('"1-archived"', 412),
        ('"nonsense"', 412),
    ],
)
async def test_if_match_forms(api_client: httpx.AsyncClient, if_match: str, status: int) -> None:
    await api_client.post(f"{API}/workflows", json=hello())
    response = await api_client.put(
        f"{API}/workflows/hello", json=hello("Hi"), headers={"If-Match": if_match}
    )
    assert response.status_code == status, response.text
    assert await versions(api_client) == ([2, 1] if status == 200 else [1])


async def test_without_if_match_the_last_writer_wins(api_client: httpx.AsyncClient) -> None:
    await api_client.post(f"{API}/workflows", json=hello())
    for greeting in ("Hi", "Hey"):
        assert (
            await api_client.put(f"{API}/workflows/hello", json=hello(greeting))
        ).status_code == 200
    assert await versions(api_client) == [3, 2, 1]


async def test_unknown_workflow_is_404_whatever_the_precondition(
    api_client: httpx.AsyncClient,
) -> None:
    for method in ("PUT", "DELETE"):
        response = await api_client.request(
            method, f"{API}/workflows/nope", json=hello("x", "nope"), headers={"If-Match": "*"}
        )
        assert response.status_code == 404, (method, response.text)


async def test_if_none_match_gives_304(api_client: httpx.AsyncClient) -> None:
    await api_client.post(f"{API}/workflows", json=hello())
    for header in ('"1"', 'W/"1"', '"0", "1"', "*"):
        response = await api_client.get(f"{API}/workflows/hello", headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.headers["etag"] == '"1"'
        assert response.content == b""
    changed = await api_client.get(f"{API}/workflows/hello", headers={"If-None-Match": '"0"'})
    assert changed.status_code == 200 and changed.json()["version"]["version"] == 1


async def test_archiving_changes_the_etag_and_honours_if_match(
    api_client: httpx.AsyncClient,
) -> None:
    await api_client.post(f"{API}/workflows", json=hello())
    await api_client.put(f"{API}/workflows/hello", json=hello("Hi"))

    stale = await api_client.delete(f"{API}/workflows/hello", headers={"If-Match": '"1"'})
    assert_412(stale, '"2"')
    assert (await api_client.get(f"{API}/workflows/hello")).json()["workflow"]["archived"] is False

    archived = await api_client.delete(f"{API}/workflows/hello", headers={"If-Match": '"2"'})
    assert archived.status_code == 200, archived.text
    assert archived.json()["archived"] is True
    assert archived.headers["etag"] == '"2-archived"'
    # A client holding the pre-archive copy must not be told it is current.
    fetched = await api_client.get(f"{API}/workflows/hello", headers={"If-None-Match": '"2"'})
    assert fetched.status_code == 200 and fetched.json()["workflow"]["archived"] is True
    assert fetched.headers["etag"] == '"2-archived"'

    # Archiving again changes nothing (and keeps matching).
    again = await api_client.delete(f"{API}/workflows/hello", headers={"If-Match": '"2-archived"'})
    assert again.status_code == 200 and again.json()["updated_at"] == archived.json()["updated_at"]

    # A write based on the pre-archive state is refused; one based on the archived state
    # saves a version and brings the workflow back.
    assert_412(
        await api_client.put(
            f"{API}/workflows/hello", json=hello("Yo"), headers={"If-Match": '"2"'}
        ),
        '"2-archived"',
    )
    revived = await api_client.put(
        f"{API}/workflows/hello", json=hello("Yo"), headers={"If-Match": '"2-archived"'}
    )
    assert revived.status_code == 200, revived.text
    assert revived.headers["etag"] == '"3"'
    assert revived.json()["workflow"]["archived"] is False


async def test_concurrent_updates_with_one_etag_exactly_one_wins(
    api_client: httpx.AsyncClient,
) -> None:
    await api_client.post(f"{API}/workflows", json=hello())
    for round_ in range(1, 6):
        tag = f'"{round_}"'
        responses = await asyncio.gather(
            *(
                api_client.put(
                    f"{API}/workflows/hello",
                    json=hello(f"Hi {round_}.{i}"),
                    headers={"If-Match": tag},
                )
                for i in range(3)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 412, 412], [r.text for r in responses]
        [winner] = [r for r in responses if r.status_code == 200]
        assert winner.headers["etag"] == f'"{round_ + 1}"'
        for loser in responses:
            if loser.status_code == 412:
                assert_412(loser, f'"{round_ + 1}"')
    assert await versions(api_client) == [6, 5, 4, 3, 2, 1]


async def test_concurrent_archive_and_update_exactly_one_wins(
    api_client: httpx.AsyncClient,
) -> None:
    await api_client.post(f"{API}/workflows", json=hello())
    put, delete = await asyncio.gather(
        api_client.put(f"{API}/workflows/hello", json=hello("Hi"), headers={"If-Match": '"1"'}),
        api_client.delete(f"{API}/workflows/hello", headers={"If-Match": '"1"'}),
    )
    assert sorted([put.status_code, delete.status_code]) == [200, 412]
    state = (await api_client.get(f"{API}/workflows/hello")).json()["workflow"]
    if put.status_code == 200:
        assert (state["latest_version"], state["archived"]) == (2, False)
    else:
        assert (state["latest_version"], state["archived"]) == (1, True)


async def test_store_checks_the_expectation_in_its_transaction(container: Container) -> None:
    store = container.store
    wf, _ = await store.create_workflow("race", None, hello(name="race"), None)
    results = await asyncio.gather(
        *(
            store.add_version(wf.id, hello(f"v{i}", "race"), None, expected_latest=1)
            for i in range(4)
        ),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 3
    assert all(isinstance(e, PreconditionFailed) and isinstance(e, Conflict) for e in failed)
    assert [v.version for v in await store.list_versions(wf.id)] == [2, 1]
    with pytest.raises(PreconditionFailed):
        await store.archive_workflow(wf.id, expected_latest=1)
    with pytest.raises(PreconditionFailed):
        await store.add_version(wf.id, hello("x", "race"), None, expected_archived=True)
    archived = await store.archive_workflow(wf.id, expected_latest=2, expected_archived=False)
    assert archived.archived
