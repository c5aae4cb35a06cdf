"""Versioning over the API, on both backends: runs stay on their version, a run starts on a
chosen version, two versions diff, and a failed run retries on the latest version."""

from __future__ import annotations

import copy
from typing import Any

import httpx

from flowyard.bootstrap import Container
from support.runs import wait_for_runs

API = "/api/v1"

V1: dict[str, Any] = {
    "name": "versioned",
    "start": "start",
    "nodes": [
        {"id": "start", "type": "trigger", "next": "work"},
        {"id": "work", "type": "fail", "config": {"error": "work.broken", "message": "v1 bug"}},
    ],
}


def v2() -> dict[str, Any]:
    definition = copy.deepcopy(V1)
    definition["description"] = "fixed"
    definition["nodes"][1] = {
        "id": "work",
        "type": "set",
        "config": {"values": {"fixed": True}},
        "next": "done",
    }
    definition["nodes"].append({"id": "done", "type": "end", "config": {"output": "v2"}})
    return definition


async def run_on(api_client: httpx.AsyncClient, ref: str, **body: Any) -> dict[str, Any]:
    response = await api_client.post(f"{API}/workflows/{ref}/runs", json={"input": {}, **body})
    assert response.status_code in (201, 202), response.text
    run: dict[str, Any] = response.json()
    return run


async def test_runs_keep_their_version_and_may_start_on_an_older_one(
    api_client: httpx.AsyncClient, container: Container
) -> None:
    assert (await api_client.post(f"{API}/workflows", json=V1)).status_code == 201
    first = await run_on(api_client, "versioned")
    assert (await api_client.put(f"{API}/workflows/versioned", json=v2())).status_code == 200
    latest = await run_on(api_client, "versioned")
    pinned = await run_on(api_client, "versioned", version=1)
    await wait_for_runs(container, [first["id"], latest["id"], pinned["id"]])

    runs = {
        r: (await api_client.get(f"{API}/runs/{r}")).json() for r in (first["id"], latest["id"])
    }
    assert runs[first["id"]]["workflow_version"] == 1
    assert runs[first["id"]]["status"] == "failed"  # still v1, though v2 exists
    assert runs[latest["id"]]["workflow_version"] == 2
    assert runs[latest["id"]]["status"] == "succeeded"
    assert pinned["workflow_version"] == 1
    missing = await api_client.post(f"{API}/workflows/versioned/runs", json={"version": 9})
    assert missing.status_code == 404
    versions = (await api_client.get(f"{API}/workflows/versioned/versions")).json()
    items = versions["items"] if isinstance(versions, dict) else versions
    assert [v["version"] for v in items] == [2, 1]


async def test_a_diff_between_two_versions(api_client: httpx.AsyncClient) -> None:
    await api_client.post(f"{API}/workflows", json=V1)
    await api_client.put(f"{API}/workflows/versioned", json=v2())
    diff = (await api_client.get(f"{API}/workflows/versioned/versions/1/diff/2")).json()
    assert diff["identical"] is False
    assert diff["fields"] == {"description": {"from": None, "to": "fixed"}}
    assert diff["nodes"]["added"] == ["done"]
    assert diff["nodes"]["removed"] == []
    assert set(diff["nodes"]["changed"]["work"]) == {"type", "config", "next"}
    same = (await api_client.get(f"{API}/workflows/versioned/versions/2/diff/2")).json()
    assert same["identical"] is True
    gone = await api_client.get(f"{API}/workflows/versioned/versions/1/diff/7")
    assert gone.status_code == 404


async def test_retry_a_failed_run_on_the_latest_definition(
    api_client: httpx.AsyncClient, container: Container
) -> None:
    await api_client.post(f"{API}/workflows", json=V1)
    run = await run_on(api_client, "versioned")
    await wait_for_runs(container, [run["id"]])
    await api_client.put(f"{API}/workflows/versioned", json=v2())

    same = await api_client.post(f"{API}/runs/{run['id']}/retry")  # on v1: fails again
    assert same.json()["workflow_version"] == 1
    await wait_for_runs(container, [run["id"]])
    assert (await api_client.get(f"{API}/runs/{run['id']}")).json()["status"] == "failed"

    moved = await api_client.post(
        f"{API}/runs/{run['id']}/retry", json={"use_latest_definition": True}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["workflow_version"] == 2
    await wait_for_runs(container, [run["id"]])
    done = (await api_client.get(f"{API}/runs/{run['id']}")).json()
    assert (done["status"], done["output"]) == ("succeeded", "v2")
    events = (await api_client.get(f"{API}/runs/{run['id']}/events")).json()
    events = events["items"] if isinstance(events, dict) else events
    retried = [e for e in events if e["type"] == "run.retried"]
    assert retried[-1]["data"]["workflow_version"] == {"from": 1, "to": 2}


async def test_retry_on_a_latest_version_without_the_failed_node_is_a_409(
    api_client: httpx.AsyncClient, container: Container
) -> None:
    await api_client.post(f"{API}/workflows", json=V1)
    run = await run_on(api_client, "versioned")
    await wait_for_runs(container, [run["id"]])
    renamed = v2()
    renamed["nodes"][1]["id"] = "job"
    renamed["nodes"][0]["next"] = "job"
    await api_client.put(f"{API}/workflows/versioned", json=renamed)
    response = await api_client.post(
        f"{API}/runs/{run['id']}/retry", json={"use_latest_definition": True}
    )
    assert response.status_code == 409
    assert "no node 'work'" in response.json()["detail"]
