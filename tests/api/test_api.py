"""Acceptance tests of the REST API (in-process ASGI), on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from flowyard.api import create_app
from flowyard.api.deps import get_actor
from flowyard.bootstrap import Container
from flowyard.settings import Settings
from support.auth import auth_headers
from support.definitions import FIVE_MISTAKES, FIVE_POINTERS
from support.http import RecordingServer
from support.runs import wait_for_runs

EXAMPLE = Path(__file__).parents[2] / "examples" / "lead_routing_http.json"
PROBLEM_JSON = "application/problem+json"
API = "/api/v1"

LEAD = {"email": "lead@example.com", "region": "East Coast"}


def lead_routing() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())


def hello(name: str = "hello", greeting: str = "Hello") -> dict[str, Any]:
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
            {"id": "done", "type": "end", "config": {"output": "{{ steps.greet.output }}"}},
        ],
    }


def mounted(container: Container, settings: Settings | None = None) -> FastAPI:
    """The app on an existing container (ASGITransport runs no lifespan)."""
    return create_app(settings, container=container)


def client_for(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers
    )


@pytest.fixture
def client(api_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The suite's admin client (``api_client``), by the name this module's tests use."""
    return api_client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status`` and type suffix ``code``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].endswith("/" + code)
    assert body["title"] and body["detail"]
    return body


async def create(client: httpx.AsyncClient, definition: dict[str, Any]) -> str:
    response = await client.post(f"{API}/workflows", json=definition)
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["workflow"]["id"]
    return workflow_id


async def execute(container: Container, run_ids: list[str], timeout_s: float = 30) -> None:
    """Execute runs with an in-process worker until every one has ended."""
    await wait_for_runs(container, run_ids, timeout_s=timeout_s)


# -- workflows --------------------------------------------------------------------------------


def test_an_app_made_on_a_container_holds_it_before_any_lifespan() -> None:
    # In-process clients (ASGITransport) run no lifespan: the app must hold it at once.
    container = cast(Container, object())
    assert create_app(Settings(), container=container).state.container is container
    assert not hasattr(create_app(Settings()).state, "container")


async def test_create_workflow(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/workflows", json=lead_routing())
    assert response.status_code == 201, response.text
    body = response.json()
    workflow_id = body["workflow"]["id"]
    assert body["created"] is True
    assert body["workflow"]["name"] == "lead-routing-http"
    assert body["workflow"]["latest_version"] == 1
    assert body["version"]["version"] == 1
    assert body["version"]["definition"] == lead_routing()
    assert response.headers["location"] == f"{API}/workflows/{workflow_id}"
    assert response.headers["etag"] == '"1"'
    followed = await client.get(response.headers["location"])
    assert followed.status_code == 200
    assert followed.json()["workflow"]["id"] == workflow_id


async def test_create_reports_every_mistake(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/workflows", json=FIVE_MISTAKES)
    body = assert_problem(response, 422, "invalid-definition")
    assert [e["pointer"] for e in body["errors"]] == FIVE_POINTERS
    assert all(e["message"] and e["code"] for e in body["errors"])
    listed = await client.get(f"{API}/workflows")
    assert listed.json()["items"] == []


async def test_validate_without_saving(client: httpx.AsyncClient) -> None:
    bad = await client.post(f"{API}/workflows/validate", json=FIVE_MISTAKES)
    assert bad.status_code == 200
    assert bad.json()["valid"] is False
    assert [e["pointer"] for e in bad.json()["errors"]] == FIVE_POINTERS
    good = await client.post(f"{API}/workflows/validate", json=lead_routing())
    assert good.json() == {"valid": True, "errors": []}
    assert (await client.get(f"{API}/workflows")).json()["items"] == []


@pytest.mark.parametrize("path", ["/workflows", "/workflows/validate"])
async def test_malformed_json_body(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(
        API + path,
        content=b'{"name": "x", "nodes": [',
        headers={"content-type": "application/json"},
    )
    body = assert_problem(response, 422, "invalid-input")
    assert body["errors"]
    assert body["errors"][0]["code"] == "json_invalid"


async def test_definition_that_is_not_an_object(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/workflows", json=[1, 2])
    assert_problem(response, 422, "invalid-input")


async def test_duplicate_name(client: httpx.AsyncClient) -> None:
    await create(client, hello())
    response = await client.post(f"{API}/workflows", json=hello(greeting="Hi"))
    body = assert_problem(response, 409, "conflict")
    assert "hello" in body["detail"]


async def test_get_by_id_and_by_name(client: httpx.AsyncClient) -> None:
    workflow_id = await create(client, hello())
    by_id = await client.get(f"{API}/workflows/{workflow_id}")
    by_name = await client.get(f"{API}/workflows/hello")
    assert by_id.status_code == by_name.status_code == 200
    assert by_id.json() == by_name.json()
    assert by_id.json()["workflow"]["id"] == workflow_id
    assert by_id.json()["version"]["definition"] == hello()
    assert by_id.headers["etag"] == '"1"'


async def test_put_makes_versions(client: httpx.AsyncClient) -> None:
    workflow_id = await create(client, hello())
    changed = await client.put(f"{API}/workflows/{workflow_id}", json=hello(greeting="Hi"))
    assert changed.status_code == 200, changed.text
    assert changed.json()["created"] is True
    assert changed.json()["version"]["version"] == 2
    assert changed.json()["workflow"]["latest_version"] == 2
    assert changed.headers["etag"] == '"2"'

    same = await client.put(f"{API}/workflows/hello", json=hello(greeting="Hi"))
    assert same.status_code == 200
    assert same.json()["created"] is False
    assert same.json()["version"]["version"] == 2

    versions = await client.get(f"{API}/workflows/{workflow_id}/versions")
    assert versions.status_code == 200
    assert [v["version"] for v in versions.json()["items"]] == [2, 1]
    greetings = [
        v["definition"]["nodes"][1]["config"]["values"]["greeting"]
        for v in versions.json()["items"]
    ]
    assert greetings == ["Hi {{ input.name }}", "Hello {{ input.name }}"]
    one = await client.get(f"{API}/workflows/{workflow_id}/versions/1")
    assert one.json()["definition"] == hello()


async def test_put_cannot_rename(client: httpx.AsyncClient) -> None:
    workflow_id = await create(client, hello())
    response = await client.put(f"{API}/workflows/{workflow_id}", json=hello(name="other"))
    body = assert_problem(response, 422, "invalid-input")
    assert [e["pointer"] for e in body["errors"]] == ["/name"]
    versions = await client.get(f"{API}/workflows/{workflow_id}/versions")
    assert len(versions.json()["items"]) == 1


async def test_put_invalid_definition(client: httpx.AsyncClient) -> None:
    await create(client, hello())
    broken = copy.deepcopy(FIVE_MISTAKES)
    broken["name"] = "hello"
    body = assert_problem(
        await client.put(f"{API}/workflows/hello", json=broken), 422, "invalid-definition"
    )
    assert [e["pointer"] for e in body["errors"]] == FIVE_POINTERS


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/workflows/nope"),
        ("GET", "/workflows/nope/versions"),
        ("PUT", "/workflows/nope"),
        ("POST", "/workflows/nope/runs"),
        ("GET", "/runs/run_nope"),
        ("GET", "/runs/run_nope/steps"),
        ("GET", "/runs/run_nope/events"),
        ("POST", "/runs/run_nope/cancel"),
        ("POST", "/runs/run_nope/pause"),
        ("POST", "/runs/run_nope/resume"),
        ("POST", "/runs/run_nope/retry"),
    ],
)
async def test_unknown_resources(client: httpx.AsyncClient, method: str, path: str) -> None:
    body = hello() if method == "PUT" else {} if method == "POST" else None
    response = await client.request(method, API + path, json=body)
    assert_problem(response, 404, "not-found")


async def test_unknown_version(client: httpx.AsyncClient) -> None:
    workflow_id = await create(client, hello())
    response = await client.get(f"{API}/workflows/{workflow_id}/versions/7")
    assert_problem(response, 404, "not-found")


# -- runs -------------------------------------------------------------------------------------


async def test_start_run(client: httpx.AsyncClient) -> None:
    workflow_id = await create(client, lead_routing())
    response = await client.post(f"{API}/workflows/{workflow_id}/runs", json={"input": LEAD})
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["status"] == "pending"
    assert run["workflow_id"] == workflow_id and run["workflow_version"] == 1
    assert run["input"] == LEAD
    assert response.headers["location"] == f"{API}/runs/{run['id']}"
    fetched = await client.get(response.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json()["id"] == run["id"]


async def test_idempotency_key(client: httpx.AsyncClient) -> None:
    await create(client, lead_routing())
    payload = {"input": LEAD, "idempotency_key": "lead-42"}
    first = await client.post(f"{API}/workflows/lead-routing-http/runs", json=payload)
    second = await client.post(f"{API}/workflows/lead-routing-http/runs", json=payload)
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["location"] == f"{API}/runs/{first.json()['id']}"
    listed = await client.get(f"{API}/runs")
    assert [r["id"] for r in listed.json()["items"]] == [first.json()["id"]]


@pytest.mark.parametrize(
    ("run_input", "pointers"),
    [
        ({"email": "ab", "region": "West"}, ["/input/email"]),
        ({"email": "a@b.c", "region": 5}, ["/input/region"]),
        ({"email": "a@b.c"}, ["/input"]),
        ("not an object", ["/input"]),
    ],
)
async def test_input_violating_schema(
    client: httpx.AsyncClient, run_input: Any, pointers: list[str]
) -> None:
    await create(client, lead_routing())
    response = await client.post(
        f"{API}/workflows/lead-routing-http/runs", json={"input": run_input}
    )
    body = assert_problem(response, 422, "invalid-input")
    assert [e["pointer"] for e in body["errors"]] == pointers
    assert (await client.get(f"{API}/runs")).json()["items"] == []


async def test_unknown_field_in_start_body(client: httpx.AsyncClient) -> None:
    await create(client, lead_routing())
    response = await client.post(
        f"{API}/workflows/lead-routing-http/runs", json={"input": LEAD, "inptu": {}}
    )
    body = assert_problem(response, 422, "invalid-input")
    assert [e["pointer"] for e in body["errors"]] == ["/inptu"]


async def test_list_runs_by_status_and_pages(client: httpx.AsyncClient) -> None:
    await create(client, lead_routing())
    await create(client, hello())
    started = []
    for i in range(7):
        response = await client.post(
            f"{API}/workflows/lead-routing-http/runs",
            json={"input": {**LEAD, "email": f"lead{i}@example.com"}},
        )
        started.append(response.json()["id"])
    other = (await client.post(f"{API}/workflows/hello/runs", json={"input": {}})).json()["id"]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3, "workflow": "lead-routing-http"}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(f"{API}/runs", params=params)).json()
        pages += 1
        assert len(page["items"]) <= 3
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(started, reverse=True)  # newest first, each exactly once

    pending = (await client.get(f"{API}/runs", params={"status": "pending"})).json()
    assert {r["id"] for r in pending["items"]} == {*started, other}
    succeeded = await client.get(f"{API}/runs", params={"status": "succeeded"})
    assert succeeded.json() == {"items": [], "next_cursor": None}
    bad = await client.get(f"{API}/runs", params={"status": "sleeping"})
    assert_problem(bad, 422, "invalid-input")


@pytest.mark.parametrize(
    ("region", "branch", "route"),
    [("East Coast", "create_account", "east"), ("West", "assign_pool", "pool")],
)
async def test_run_executes_and_shows_steps_and_events(
    container: Container,
    client: httpx.AsyncClient,
    http_server: RecordingServer,
    region: str,
    branch: str,
    route: str,
) -> None:
    await create(client, lead_routing())
    started = await client.post(
        f"{API}/workflows/lead-routing-http/runs",
        json={
            "input": {"email": "lead@example.com", "region": region},
            "vars": {
                "crm_url": f"{http_server.url}/crm",
                "notify_url": f"{http_server.url}/notify",
            },
        },
    )
    run_id = started.json()["id"]
    await execute(container, [run_id])

    detail = (await client.get(f"{API}/runs/{run_id}")).json()
    assert detail["status"] == "succeeded"
    assert detail["output"] == {"email": "lead@example.com", "route": route}
    assert [s["node_id"] for s in detail["steps"]] == [
        "new_lead",
        "is_east",
        branch,
        "notify",
        "done",
    ]
    assert {s["status"] for s in detail["steps"]} == {"succeeded"}
    kinds = [e["type"] for e in detail["events"]]
    assert kinds[0] == "run.created" and kinds[-1] == "run.succeeded"
    assert kinds.count("step.succeeded") == 5
    assert len(http_server.to("/crm/accounts" if route == "east" else "/crm/pool")) == 1

    steps = (await client.get(f"{API}/runs/{run_id}/steps")).json()
    assert steps == {"items": detail["steps"], "next_cursor": None}

    succeeded = (await client.get(f"{API}/runs", params={"status": "succeeded"})).json()
    assert [r["id"] for r in succeeded["items"]] == [run_id]
    assert (await client.get(f"{API}/runs", params={"status": "pending"})).json()["items"] == []

    # The event cursor: everything after a given event id, and pages of a given size.
    events = (await client.get(f"{API}/runs/{run_id}/events")).json()
    assert events["items"] == detail["events"] and events["next_cursor"] is None
    ids = [e["id"] for e in events["items"]]
    assert ids == sorted(ids)
    after = (await client.get(f"{API}/runs/{run_id}/events", params={"after": ids[2]})).json()
    assert [e["id"] for e in after["items"]] == ids[3:]
    paged: list[int] = []
    cursor = "0"
    while cursor is not None:
        page = (
            await client.get(f"{API}/runs/{run_id}/events", params={"after": cursor, "limit": 4})
        ).json()
        paged += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
    assert paged == ids


# -- lifecycle (behaviour on real runs: tests/lifecycle) ---------------------------------------


async def test_lifecycle_of_a_pending_run(client: httpx.AsyncClient) -> None:
    await create(client, hello())
    run_id = (await client.post(f"{API}/workflows/hello/runs", json={"input": {}})).json()["id"]
    paused = await client.post(f"{API}/runs/{run_id}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    resumed = await client.post(f"{API}/runs/{run_id}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "pending"
    retry = await client.post(f"{API}/runs/{run_id}/retry")
    assert "pending" in assert_problem(retry, 409, "conflict")["detail"]
    cancelled = await client.post(f"{API}/runs/{run_id}/cancel")  # no body: no reason
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled" and body["error_type"] is None
    again = assert_problem(await client.post(f"{API}/runs/{run_id}/cancel"), 409, "conflict")
    assert again["current_status"] == "cancelled"  # the problem's own status stays 409
    history = (await client.get(f"{API}/runs/{run_id}/events")).json()["items"]
    lifecycle = [(e["type"], e["actor"]) for e in history if e["actor"]]
    assert lifecycle == [
        ("run.created", "user:admin"),
        ("run.paused", "user:admin"),
        ("run.resumed", "user:admin"),
        ("run.cancelled", "user:admin"),
    ]
    assert history[-1]["data"]["reason"] is None


async def test_actor_comes_from_one_dependency(container: Container) -> None:
    app = mounted(container)
    app.dependency_overrides[get_actor] = lambda: "user:alice"
    async with client_for(app, await auth_headers(container)) as client:
        await create(client, hello())
        run_id = (await client.post(f"{API}/workflows/hello/runs", json={})).json()["id"]
        await client.post(f"{API}/runs/{run_id}/cancel", json={"reason": "duplicate lead"})
        history = (await client.get(f"{API}/runs/{run_id}/events")).json()["items"]
    [event] = [e for e in history if e["type"] == "run.cancelled"]
    assert event["actor"] == "user:alice"
    assert event["data"]["reason"] == "duplicate lead"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [({"reason": "x" * 501}, "/reason"), ({"why": "x"}, "/why"), ({"reason": 5}, "/reason")],
)
async def test_cancel_body_is_checked(
    client: httpx.AsyncClient, body: dict[str, Any], pointer: str
) -> None:
    await create(client, hello())
    run_id = (await client.post(f"{API}/workflows/hello/runs", json={})).json()["id"]
    problem = assert_problem(
        await client.post(f"{API}/runs/{run_id}/cancel", json=body), 422, "invalid-input"
    )
    assert [e["pointer"] for e in problem["errors"]] == [pointer]
    assert (await client.get(f"{API}/runs/{run_id}")).json()["status"] == "pending"


async def test_list_runs_error_type_is_checked(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(f"{API}/runs", params={"error_type": ""}), 422, "invalid-input")
    listed = await client.get(f"{API}/runs", params={"error_type": "http.*"})
    assert listed.json() == {"items": [], "next_cursor": None}


async def test_openapi_documents_lifecycle(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for action in ("cancel", "pause", "resume", "retry"):
        operation = paths[f"{API}/runs/{{run_id}}/{action}"]["post"]
        assert operation["summary"] and operation["description"]
        for status in ("404", "409"):
            assert PROBLEM_JSON in operation["responses"][status]["content"], (action, status)
        assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/RunPublic"
        }
    bulk = paths[f"{API}/runs/retry"]["post"]
    assert bulk["summary"] and "error_type" in bulk["description"]
    assert bulk["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BulkRetryResult"
    }
    listed = paths[f"{API}/runs"]["get"]
    assert "error_type" in [p["name"] for p in listed["parameters"]]


# -- system -----------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", API])
async def test_health_and_readiness(client: httpx.AsyncClient, prefix: str) -> None:
    health = await client.get(f"{prefix}/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}  # no version
    ready = await client.get(f"{prefix}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"


async def test_node_types(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/node-types")
    assert response.status_code == 200
    page = response.json()
    assert page["next_cursor"] is None  # every built-in type fits the default page
    types = {t["type"]: t for t in page["items"]}
    assert {"trigger", "condition", "set", "http", "log", "end", "fail"} <= set(types)
    assert [t["type"] for t in page["items"]] == sorted(types)
    http_schema = types["http"]["config_schema"]
    assert "url" in http_schema["properties"] and "url" in http_schema["required"]
    assert "cases" in types["condition"]["config_schema"]["properties"]
    assert types["end"]["terminal"] is True and types["condition"]["branching"] is True
    # The fields each type renders or evaluates are marked for editors to highlight.
    mark = "x-flowyard-expression"
    assert types["log"]["config_schema"]["properties"]["message"][mark] == "template"
    assert mark not in types["log"]["config_schema"]["properties"]["level"]
    assert http_schema["properties"]["url"][mark] == "template"
    assert http_schema["properties"]["json"][mark] == "template"
    assert mark not in http_schema["properties"]["credential"]
    case = types["condition"]["config_schema"]["$defs"]["Case"]["properties"]
    assert case["when"][mark] == "condition" and mark not in case["next"]
    waits = types["wait_for_signal"]["config_schema"]["properties"]
    assert waits["timeout"][mark] == "template" and mark not in waits["signal"]


async def test_node_types_are_paged_under_the_api_prefix_only(client: httpx.AsyncClient) -> None:
    everything = (await client.get(f"{API}/node-types")).json()["items"]
    walked: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"{API}/node-types", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 3
        walked += [t["type"] for t in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert walked == [t["type"] for t in everything]
    assert (await client.get(f"{API}/node-types", params={"limit": 0})).status_code == 422
    assert (await client.get("/node-types")).status_code == 404  # removed from the root


async def test_request_too_large(container: Container) -> None:
    limit = 2048
    settings = container.settings.model_copy(update={"max_request_bytes": limit})
    async with client_for(mounted(container, settings), await auth_headers(container)) as client:
        big = hello()
        big["description"] = "x" * (limit + 1)
        response = await client.post(f"{API}/workflows", json=big)
        body = assert_problem(response, 413, "too-large")
        assert str(limit) in body["detail"]

        async def chunks() -> AsyncIterator[bytes]:
            payload = json.dumps(big).encode()
            for i in range(0, len(payload), 512):
                yield payload[i : i + 512]

        streamed = await client.post(
            f"{API}/workflows", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_problem(streamed, 413, "too-large")

        small = await client.post(f"{API}/workflows", json=hello())
        assert small.status_code == 201
    async with client_for(mounted(container), await auth_headers(container)) as client:
        assert (await client.get(f"{API}/workflows")).json()["items"][0]["name"] == "hello"


async def test_openapi_and_docs(client: httpx.AsyncClient) -> None:
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in (f"{API}/workflows", f"{API}/workflows/validate", f"{API}/runs/{{run_id}}"):
        assert path in paths
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text


async def test_unknown_route_is_a_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(f"{API}/nothing-here"), 404, "not-found")


async def test_delete_archives_and_refuses_new_runs(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/workflows", json=hello("retiring"))
    assert created.status_code == 201
    deleted = await client.delete("/api/v1/workflows/retiring")
    assert deleted.status_code == 200 and deleted.json()["archived"] is True
    listed = await client.get("/api/v1/workflows")
    assert "retiring" not in [w["name"] for w in listed.json()["items"]]
    refused = await client.post("/api/v1/workflows/retiring/runs", json={"input": {}})
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "archived" in refused.json()["detail"]
    missing = await client.delete("/api/v1/workflows/nope")
    assert missing.status_code == 404
