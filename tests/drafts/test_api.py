"""Drafts over the API on SQLite and PostgreSQL: an editing session node by node, undo to
the start and redo to the end, ETags (428, 412), publish, history after a restart, two
processes on one database."""

from __future__ import annotations

import json
from typing import Any

import httpx

from flowyard.api.app import create_app
from flowyard.bootstrap import Container, build
from flowyard.domain.auth import Role
from support.api import admin_client
from support.auth import auth_headers

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"


def lead_routing() -> dict[str, Any]:
    return {
        "name": "lead-routing",
        "start": "new_lead",
        "nodes": [
            {"id": "new_lead", "type": "trigger", "next": "is_east"},
            {
                "id": "is_east",
                "type": "condition",
                "config": {
                    "cases": [{"when": "input.region == 'East'", "next": "east"}],
                    "default": "pool",
                },
            },
            {"id": "east", "type": "log", "config": {"message": "east"}, "next": "done"},
            {"id": "pool", "type": "log", "config": {"message": "general"}, "next": "done"},
            {"id": "done", "type": "end"},
        ],
    }


def serialized(value: Any) -> str:
    """As served: keys in their order (undo must give the same bytes, not just the same
    JSON value)."""
    return json.dumps(value)


async def opened(client: httpx.AsyncClient) -> str:
    created = await client.post(f"{API}/workflows", json=lead_routing())
    assert created.status_code == 201, created.text
    response = await client.post(f"{API}/workflows/lead-routing/draft")
    assert response.status_code == 201, response.text
    assert response.json()["valid"] is True
    return response.headers["ETag"]


def ok(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    assert response.headers["ETag"] == body["etag"]
    return response.headers["ETag"], body


async def test_an_editing_session_undone_and_redone_step_by_step(
    api_client: httpx.AsyncClient,
) -> None:
    draft = f"{API}/workflows/lead-routing/draft"
    tag = await opened(api_client)
    states = [serialized((await api_client.get(draft)).json()["document"])]
    requests: list[tuple[str, str, dict[str, Any]]] = [
        (
            "POST",
            "/nodes",
            {
                "json": {
                    "node": {"id": "audit", "type": "log", "config": {"message": "a"}},
                    "after": "east",
                    "position": {"x": 10, "y": 20},
                }
            },
        ),
        ("PATCH", "/nodes/audit", {"json": {"config": {"message": "b"}, "timeout_s": 5}}),
        # a member removed from the middle of a node: undo puts it back in place
        ("PATCH", "/nodes/east", {"json": {"config": None, "name": "East"}}),
        ("PATCH", "/nodes/east", {"json": {"config": {"message": "east again"}}}),
        ("PATCH", "/nodes/new_lead", {"json": {"position": {"x": 1, "y": 2}}}),
        ("PATCH", "/nodes/audit", {"json": {"position": None}}),
        (
            "POST",
            "/edges",
            {"json": {"source": "pool", "target": "done", "kind": "catch", "errors": ["*"]}},
        ),
        ("DELETE", "/edges", {"params": {"source": "east", "kind": "next"}}),
        ("POST", "/edges", {"json": {"source": "east", "target": "done", "kind": "next"}}),
        ("POST", "/nodes", {"json": {"node": {"id": "fan", "type": "parallel"}}}),
        (
            "POST",
            "/edges",
            {"json": {"source": "fan", "target": "audit", "kind": "branch", "name": "left"}},
        ),
        (
            "POST",
            "/edges",
            {"json": {"source": "fan", "target": "done", "kind": "branch", "name": "right"}},
        ),
        ("DELETE", "/edges", {"params": {"source": "fan", "kind": "branch", "name": "left"}}),
        ("POST", "/nodes/pool/rename", {"json": {"id": "general_pool"}}),
        ("DELETE", "/edges", {"params": {"source": "general_pool", "kind": "catch", "index": 0}}),
        (
            "POST",
            "/edges",
            {"json": {"source": "is_east", "target": "audit", "kind": "case", "when": "input.vip"}},
        ),
        (
            "PUT",
            "/nodes/general_pool",
            {"json": {"type": "log", "config": {"message": "g"}, "next": "done"}},
        ),
        ("DELETE", "/nodes/east", {"params": {"edges": "reconnect"}}),
        ("DELETE", "/edges", {"params": {"source": "is_east", "kind": "default"}}),
        (
            "PATCH",
            "",
            {
                "json": [
                    {"op": "add", "path": "/definition/description", "value": "d"},
                    {"op": "move", "from": "/definition/name", "path": "/definition/name"},
                    {"op": "remove", "path": "/definition/start"},
                    {"op": "add", "path": "/definition/start", "value": "new_lead"},
                ]
            },
        ),
        ("DELETE", "/nodes/general_pool", {}),
        ("DELETE", "/nodes/fan", {}),
    ]
    for method, path, kwargs in requests:
        response = await api_client.request(
            method, draft + path, headers={"If-Match": tag}, **kwargs
        )
        tag, body = ok(response)
        states.append(serialized(body["document"]))
    body = (await api_client.get(draft)).json()
    assert body["undo_depth"] == len(requests) and body["redo_depth"] == 0
    assert body["document"]["definition"]["nodes"][1]["config"]["cases"] == [
        {"when": "input.region == 'East'", "next": "done"},  # east reconnected
        {"when": "input.vip", "next": "audit"},
    ]
    for index in range(len(requests) - 1, -1, -1):
        tag, body = ok(await api_client.post(f"{draft}/undo", headers={"If-Match": tag}))
        assert serialized(body["document"]) == states[index], f"undo of request {index}"
    nothing = await api_client.post(f"{draft}/undo", headers={"If-Match": tag})
    assert nothing.status_code == 409
    for index in range(len(requests)):
        tag, body = ok(await api_client.post(f"{draft}/redo", headers={"If-Match": tag}))
        assert serialized(body["document"]) == states[index + 1], f"redo of request {index}"
    # and as stored: a read answers the same bytes as the last redo did
    assert serialized((await api_client.get(draft)).json()["document"]) == states[-1]
    history = (await api_client.get(f"{draft}/history")).json()
    assert [s["summary"] for s in history["items"]][-1] == "add node audit after east"
    tag, body = ok(await api_client.post(f"{draft}/undo", headers={"If-Match": tag}))
    tag, body = ok(
        await api_client.patch(
            f"{draft}/nodes/done", headers={"If-Match": tag}, json={"name": "The end"}
        )
    )
    assert body["redo_depth"] == 0  # a new edit drops the redo tail


async def test_etags_are_required_and_checked(api_client: httpx.AsyncClient) -> None:
    draft = f"{API}/workflows/lead-routing/draft"
    tag = await opened(api_client)
    add = {"node": {"id": "x", "type": "end"}}
    missing = await api_client.post(f"{draft}/nodes", json=add)
    assert missing.status_code == 428 and missing.headers["content-type"] == PROBLEM_JSON
    new_tag, _ = ok(await api_client.post(f"{draft}/nodes", json=add, headers={"If-Match": tag}))
    stale = await api_client.post(
        f"{draft}/nodes", json={"node": {"id": "y", "type": "end"}}, headers={"If-Match": tag}
    )
    assert stale.status_code == 412
    assert stale.json()["current_etag"] == new_tag
    again = await api_client.post(f"{draft}", headers={"If-Match": tag})
    assert again.status_code == 409 and again.json()["current_etag"] == new_tag


async def test_bad_edits_are_clear_problems(api_client: httpx.AsyncClient) -> None:
    draft = f"{API}/workflows/lead-routing/draft"
    tag = await opened(api_client)
    headers = {"If-Match": tag}
    unknown = await api_client.patch(f"{draft}/nodes/ghost", json={"name": "x"}, headers=headers)
    assert unknown.status_code == 404
    patch = [
        {"op": "test", "path": "/definition/name", "value": "lead-routing"},
        {"op": "remove", "path": "/definition/nodes/99"},
    ]
    failed = await api_client.patch(draft, json=patch, headers=headers)
    assert failed.status_code == 422 and failed.json()["operation"] == 1
    taken = await api_client.post(
        f"{draft}/nodes/pool/rename", json={"id": "east"}, headers=headers
    )
    assert taken.status_code == 409
    assert (await api_client.get(draft)).headers["ETag"] == tag  # nothing changed


async def test_invalid_publish_is_refused_with_every_problem_then_valid_publish(
    api_client: httpx.AsyncClient,
) -> None:
    draft = f"{API}/workflows/lead-routing/draft"
    tag = await opened(api_client)
    tag, body = ok(
        await api_client.patch(
            f"{draft}/nodes/east",
            headers={"If-Match": tag},
            json={"type": "no_such_type", "next": "nowhere", "position": {"x": 1, "y": 2}},
        )
    )
    pointers = {p["pointer"] for p in body["problems"]}
    assert {"/definition/nodes/2/type", "/definition/nodes/2/next"} <= pointers
    refused = await api_client.post(f"{draft}/publish", headers={"If-Match": tag})
    assert refused.status_code == 409
    assert {e["pointer"] for e in refused.json()["errors"]} == pointers
    tag, _ = ok(await api_client.post(f"{draft}/undo", headers={"If-Match": tag}))
    tag, _ = ok(
        await api_client.patch(
            f"{draft}/nodes/east", headers={"If-Match": tag}, json={"position": {"x": 1, "y": 2}}
        )
    )
    published = await api_client.post(f"{draft}/publish", headers={"If-Match": tag})
    assert published.status_code == 201, published.text
    assert published.headers["ETag"] == '"2"'
    version = (await api_client.get(f"{API}/workflows/lead-routing/versions/2")).json()
    assert version["layout"] == {"nodes": {"east": {"x": 1, "y": 2}}}
    assert "layout" not in version["definition"]
    assert (await api_client.get(draft)).status_code == 404
    audit = (await api_client.get(f"{API}/audit", params={"action": "draft.publish"})).json()
    assert [e["outcome"] for e in audit["items"]] == ["success", "conflict"]  # newest first


async def test_a_new_workflow_starts_as_a_draft_and_runs_refuse_it(
    api_client: httpx.AsyncClient,
) -> None:
    created = await api_client.post(f"{API}/workflows", json={"name": "fresh", "draft": True})
    assert created.status_code == 201, created.text
    tag = created.headers["ETag"]
    assert tag == '"d1"' and created.json()["valid"] is False
    run = await api_client.post(f"{API}/workflows/fresh/runs", json={"input": {}})
    assert run.status_code == 409 and "no published version" in run.json()["detail"]
    read = await api_client.get(f"{API}/workflows/fresh")
    assert read.status_code == 200, read.text
    assert read.json()["version"] is None and read.headers["ETag"] == '"0"'
    assert read.json()["workflow"]["draft"] is True
    assert read.json()["workflow"]["latest_version"] == 0
    listed = (await api_client.get(f"{API}/workflows")).json()["items"]
    assert [(w["name"], w["draft"]) for w in listed] == [("fresh", True)]
    tag, _ = ok(
        await api_client.post(
            f"{API}/workflows/fresh/draft/nodes",
            headers={"If-Match": tag},
            json={"node": {"id": "go", "type": "trigger"}},
        )
    )
    published = await api_client.post(
        f"{API}/workflows/fresh/draft/publish", headers={"If-Match": tag}
    )
    assert published.status_code == 201, published.text
    assert published.json()["version"]["definition"]["start"] == "go"
    read = await api_client.get(f"{API}/workflows/fresh")
    assert read.json()["workflow"]["draft"] is False
    assert read.json()["version"]["version"] == 1
    run = await api_client.post(f"{API}/workflows/fresh/runs", json={"input": {}})
    assert run.status_code == 202, run.text


async def test_viewers_read_drafts_but_do_not_edit(
    api_client: httpx.AsyncClient, container: Container
) -> None:
    tag = await opened(api_client)
    viewer = await auth_headers(container, "vera", Role.VIEWER)
    read = await api_client.get(f"{API}/workflows/lead-routing/draft", headers=viewer)
    assert read.status_code == 200
    refused = await api_client.post(
        f"{API}/workflows/lead-routing/draft/undo", headers={"If-Match": tag, **viewer}
    )
    assert refused.status_code == 403


async def test_history_survives_a_restart_and_two_processes_share_the_draft(
    container: Container,
) -> None:
    app = create_app(container.settings, container=container)
    async with admin_client(container, app=app) as first:
        tag = await opened(first)
        tag, _ = ok(
            await first.post(
                f"{API}/workflows/lead-routing/draft/nodes",
                headers={"If-Match": tag},
                json={"node": {"id": "x", "type": "end"}},
            )
        )
    other = await build(container.settings)  # a second process on the same database
    try:
        app2 = create_app(other.settings, container=other)
        async with admin_client(other, app=app2) as second:
            body = (await second.get(f"{API}/workflows/lead-routing/draft")).json()
            assert (body["etag"], body["undo_depth"]) == (tag, 1)
            tag, body = ok(
                await second.post(
                    f"{API}/workflows/lead-routing/draft/undo", headers={"If-Match": tag}
                )
            )
            assert "x" not in {n["id"] for n in body["document"]["definition"]["nodes"]}
    finally:
        await other.close()
    async with admin_client(container, app=app) as first:
        assert (await first.get(f"{API}/workflows/lead-routing/draft")).headers["ETag"] == tag


async def test_a_duplicate_key_is_refused_not_resolved(api_client: httpx.AsyncClient) -> None:
    """``{"id": "s1", "id": "t1"}`` means whichever id a parser keeps: refused (422 naming
    the object and the key), and nothing changed."""
    tag = await opened(api_client)
    draft = f"{API}/workflows/lead-routing/draft"
    body = b'{"node": {"id": "s1", "type": "end", "id": "t1"}}'
    refused = await api_client.post(
        f"{draft}/nodes",
        content=body,
        headers={"If-Match": tag, "content-type": "application/json"},
    )
    assert refused.status_code == 422, refused.text
    [problem] = refused.json()["errors"]
    assert (problem["pointer"], problem["code"]) == ("/node", "duplicate_key")
    assert "'id'" in problem["message"]
    assert (await api_client.get(draft)).headers["ETag"] == tag
    definition = json.dumps(lead_routing())[:-1] + ', "start": "is_east"}'
    validated = await api_client.post(
        f"{API}/workflows/validate",
        content=definition.encode(),
        headers={"content-type": "application/json"},
    )
    assert validated.status_code == 422, validated.text
    assert validated.json()["errors"][0]["code"] == "duplicate_key"


async def test_publish_refuses_to_undo_a_save_made_since_the_draft_was_opened(
    api_client: httpx.AsyncClient,
) -> None:
    """Open a draft from v1, save v2 with PUT, publish the draft: 409 naming both versions
    (v3 would silently drop v2's change); ``force=true`` publishes anyway."""
    draft = f"{API}/workflows/lead-routing/draft"
    tag = await opened(api_client)
    saved = {**lead_routing(), "description": "saved by bob"}
    put = await api_client.put(f"{API}/workflows/lead-routing", json=saved)
    assert put.status_code == 200 and put.json()["version"]["version"] == 2, put.text
    tag, _ = ok(
        await api_client.patch(f"{draft}/nodes/east", headers={"If-Match": tag}, json={"name": "E"})
    )
    refused = await api_client.post(f"{draft}/publish", headers={"If-Match": tag})
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"] == PROBLEM_JSON
    problem = refused.json()
    assert (problem["base_version"], problem["latest_version"]) == (1, 2)
    assert "version 1" in problem["detail"] and "version 2" in problem["detail"]
    assert (await api_client.get(draft)).headers["ETag"] == tag  # the draft is kept
    forced = await api_client.post(
        f"{draft}/publish", headers={"If-Match": tag}, params={"force": "true"}
    )
    assert forced.status_code == 201, forced.text
    assert forced.json()["version"]["version"] == 3 and forced.json()["created"] is True
    audit = (await api_client.get(f"{API}/audit", params={"action": "draft.publish"})).json()
    assert [e["outcome"] for e in audit["items"]] == ["success", "conflict"]


async def test_publishing_an_unchanged_draft_answers_the_latest_version(
    api_client: httpx.AsyncClient,
) -> None:
    draft = f"{API}/workflows/lead-routing/draft"
    tag = await opened(api_client)
    tag, _ = ok(
        await api_client.patch(f"{draft}/nodes/east", headers={"If-Match": tag}, json={"name": "E"})
    )
    tag, _ = ok(await api_client.post(f"{draft}/undo", headers={"If-Match": tag}))
    published = await api_client.post(f"{draft}/publish", headers={"If-Match": tag})
    assert published.status_code == 200, published.text
    body = published.json()
    assert (body["created"], body["version"]["version"]) == (False, 1)
    assert published.headers["ETag"] == '"1"'
    assert (await api_client.get(draft)).status_code == 404  # closed as a publish does
    versions = (await api_client.get(f"{API}/workflows/lead-routing/versions")).json()
    assert [v["version"] for v in versions["items"]] == [1]


async def test_prefer_return_minimal_leaves_the_document_out(
    api_client: httpx.AsyncClient,
) -> None:
    """RFC 7240: a client that applies its own edit need not be sent 1,000 nodes back; the
    default answer is whole."""
    draft = f"{API}/workflows/lead-routing/draft"
    tag = await opened(api_client)
    minimal = {"If-Match": tag, "Prefer": "handling=lenient, return=minimal"}
    tag, body = ok(
        await api_client.patch(f"{draft}/nodes/east", headers=minimal, json={"name": "E"})
    )
    assert body["document"] is None and body["valid"] is True and body["undo_depth"] == 1
    assert body["last_step"] == "update node east (name)"
    tag, body = ok(
        await api_client.post(
            f"{draft}/undo", headers={"If-Match": tag, "Prefer": "return=minimal"}
        )
    )
    assert body["document"] is None and body["undo_depth"] == 0
    tag, body = ok(await api_client.post(f"{draft}/redo", headers={"If-Match": tag}))
    assert body["document"]["definition"]["nodes"][2]["name"] == "E"


async def test_each_edit_is_audited_with_it(api_client: httpx.AsyncClient) -> None:
    """An edit's audit entry commits in the edit's transaction (one write, not two)."""
    draft = f"{API}/workflows/lead-routing/draft"
    tag = await opened(api_client)
    tag, _ = ok(
        await api_client.patch(f"{draft}/nodes/east", headers={"If-Match": tag}, json={"name": "E"})
    )
    tag, _ = ok(await api_client.post(f"{draft}/undo", headers={"If-Match": tag}))
    entries = (await api_client.get(f"{API}/audit")).json()["items"]
    edits = [(e["action"], e["outcome"], e["target_type"]) for e in entries[:2]]
    assert edits == [
        ("draft.undo", "success", "workflow"),
        ("draft.node_update", "success", "workflow"),
    ]
    assert entries[0]["target_id"] == entries[1]["target_id"] and entries[0][
        "target_id"
    ].startswith("wf")
