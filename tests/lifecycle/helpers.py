"""Builders for the lifecycle tests: http-node workflows, starting runs through the API,
polling until a condition holds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
#: The actor of API requests: the admin of ``support.auth``.
API_ACTOR = "user:admin"


def http_chain(name: str, base_url: str, *paths: str, **node_extra: Any) -> dict[str, Any]:
    """trigger -> one http POST node per path (ids n1, n2, ...) -> end (output: n1's body)."""
    ids = [f"n{i}" for i in range(1, len(paths) + 1)]
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "trigger", "next": ids[0]}]
    for i, (node_id, path) in enumerate(zip(ids, paths, strict=True)):
        nodes.append(
            {
                "id": node_id,
                "type": "http",
                "config": {"method": "POST", "url": base_url + path, "json": {"node": node_id}},
                "next": ids[i + 1] if i + 1 < len(ids) else "done",
                **node_extra,
            }
        )
    nodes.append({"id": "done", "type": "end", "config": {"output": "{{ steps.n1.output.body }}"}})
    return {"name": name, "start": "start", "nodes": nodes}


async def start(client: httpx.AsyncClient, definition: dict[str, Any], run_input: Any) -> str:
    """Save the definition (by name) and start one run; its id."""
    saved = await client.put(f"{API}/workflows/{definition['name']}", json=definition)
    if saved.status_code == 404:
        saved = await client.post(f"{API}/workflows", json=definition)
    assert saved.status_code in (200, 201), saved.text
    started = await client.post(
        f"{API}/workflows/{definition['name']}/runs", json={"input": run_input}
    )
    assert started.status_code == 202, started.text
    run_id: str = started.json()["id"]
    return run_id


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = 15, what: str = "condition"
) -> None:
    """Poll ``check`` until it is true (AssertionError after ``timeout_s``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def run_json(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """``GET /runs/{id}`` (the run with steps and events)."""
    response = await client.get(f"{API}/runs/{run_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_status(
    client: httpx.AsyncClient, run_id: str, *statuses: str, timeout_s: float = 15
) -> dict[str, Any]:
    """Poll the run until its status is one of ``statuses``; the run."""

    async def reached() -> bool:
        return (await run_json(client, run_id))["status"] in statuses

    await eventually(reached, timeout_s=timeout_s, what=f"run {run_id} to be {statuses}")
    return await run_json(client, run_id)


def step(run: dict[str, Any], node_id: str) -> dict[str, Any]:
    """The one step of ``node_id`` in a run detail."""
    [found] = [s for s in run["steps"] if s["node_id"] == node_id]
    return found


def status_of(run: dict[str, Any], node_id: str) -> str | None:
    """The status of ``node_id``'s step, None before it is scheduled."""
    found = [s["status"] for s in run["steps"] if s["node_id"] == node_id]
    return found[-1] if found else None


def events(run: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The run's events of one type."""
    return [e for e in run["events"] if e["type"] == kind]


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status`` and type suffix ``code``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].endswith("/" + code)
    assert body["title"] and body["detail"]
    return body
