"""The console's reads: ``GET /workflows?include=stats`` (the list's figures in one
request), ``GET /workflows/{ref}/graph`` (edges as the node types declare them, a plugin
type's included; parallel and map groups) and the edges of a version diff. On SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from flowyard.api.graph_schemas import WorkflowGraph
from flowyard.bootstrap import Container
from flowyard.domain.auth import Role
from support.acme_pack import Pick
from support.api import admin_client
from support.auth import auth_headers

API = "/api/v1"


def chain(name: str, *extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "start": "begin",
        "nodes": [
            {"id": "begin", "type": "log", "config": {"message": "hi"}, "next": "done"},
            {"id": "done", "type": "end"},
            *extra,
        ],
    }


FORKED = {
    "name": "forked",
    "start": "fan",
    "nodes": [
        {
            "id": "fan",
            "type": "parallel",
            "config": {"branches": [{"name": "a", "start": "a1"}, {"name": "b", "start": "each"}]},
            "next": "done",
        },
        {"id": "a1", "type": "log", "config": {"message": "x"}},
        {"id": "each", "type": "map", "config": {"items": "{{ input.xs }}", "start": "body"}},
        {"id": "body", "type": "log", "config": {"message": "x"}},
        {"id": "done", "type": "end"},
    ],
}


async def test_the_list_carries_each_workflows_newest_run_and_runs_per_day(
    api_client: httpx.AsyncClient,
) -> None:
    for name in ("busy", "idle"):
        assert (await api_client.post(f"{API}/workflows", json=chain(name))).status_code == 201
    started = [
        (await api_client.post(f"{API}/workflows/busy/runs", json={"input": {}})).json()
        for _ in range(3)
    ]
    page = await api_client.get(f"{API}/workflows", params={"include": "stats"})
    assert page.status_code == 200, page.text
    rows = {w["name"]: w for w in page.json()["items"]}
    busy, idle = rows["busy"]["stats"], rows["idle"]["stats"]
    assert busy["last_run"]["id"] == started[-1]["id"]
    assert [d["runs"] for d in busy["runs_per_day"]] == [0, 0, 0, 0, 0, 0, 3]
    today = datetime.now(UTC).date().isoformat()
    assert busy["runs_per_day"][-1]["day"] == today
    assert idle == {
        "last_run": None,
        "runs_per_day": [*busy["runs_per_day"][:-1], {"day": today, "runs": 0}],
    }
    # Without include: no figures (and no query for them).
    plain = (await api_client.get(f"{API}/workflows")).json()["items"]
    assert all(w["stats"] is None for w in plain)
    bad = await api_client.get(f"{API}/workflows", params={"include": "everything"})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")


async def test_the_graph_groups_branches_and_a_map_body(api_client: httpx.AsyncClient) -> None:
    assert (await api_client.post(f"{API}/workflows", json=FORKED)).status_code == 201
    answer = await api_client.get(f"{API}/workflows/forked/graph")
    assert answer.headers["content-type"] == "application/json"
    graph = answer.json()
    # Written without the model (for speed): still what the model documents.
    assert WorkflowGraph.model_validate(graph).model_dump(mode="json") == graph
    assert graph["version"] == 1
    assert {n["id"]: n["group"] for n in graph["nodes"]} == {
        "fan": None,
        "a1": "fan",
        "each": "fan",
        "body": "each",
        "done": None,
    }
    assert {(g["id"], g["parent"]) for g in graph["groups"]} == {("fan", None), ("each", "fan")}
    assert {(e["source"], e["target"], e["kind"], e["label"]) for e in graph["edges"]} == {
        ("fan", "a1", "branch", "branch a"),
        ("fan", "each", "branch", "branch b"),
        ("each", "body", "branch", "each item"),
        ("fan", "done", "next", ""),
    }


async def test_the_graph_of_a_version_and_of_the_draft(api_client: httpx.AsyncClient) -> None:
    await api_client.post(f"{API}/workflows", json=chain("drawn"))
    first = (await api_client.get(f"{API}/workflows/drawn/graph", params={"version": 1})).json()
    assert (first["version"], len(first["nodes"])) == (1, 2)
    opened = await api_client.post(f"{API}/workflows/drawn/draft")
    assert opened.status_code in (200, 201), opened.text
    added = await api_client.post(
        f"{API}/workflows/drawn/draft/nodes",
        json={"node": {"id": "later", "type": "log", "config": {"message": "m"}}, "after": "begin"},
        headers={"If-Match": opened.headers["ETag"]},
    )
    assert added.status_code == 200, added.text
    draft = (await api_client.get(f"{API}/workflows/drawn/graph", params={"draft": True})).json()
    assert draft["version"] is None
    assert ("begin", "later") in {(e["source"], e["target"]) for e in draft["edges"]}
    both = await api_client.get(f"{API}/workflows/drawn/graph?draft=true&version=1")
    assert both.status_code == 422
    assert (await api_client.get(f"{API}/workflows/drawn/graph?version=9")).status_code == 404
    assert (await api_client.get(f"{API}/workflows/nothing/graph")).status_code == 404


async def test_a_plugin_types_routes_are_graph_edges_and_a_viewer_reads_them(
    container: Container, api_client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    container.registry.register(Pick)
    definition = {
        "name": "picked",
        "start": "pick",
        "nodes": [
            {"id": "pick", "type": "acme.pick", "config": {"routes": {"yes": "a", "no": "b"}}},
            {"id": "a", "type": "end"},
            {"id": "b", "type": "end"},
        ],
    }
    saved = await api_client.post(f"{API}/workflows", json=definition)
    assert saved.status_code == 201, saved.text
    async with admin_client(container) as viewer:
        viewer.headers.update(await auth_headers(container, "viewer", Role.VIEWER))
        graph = (await viewer.get(f"{API}/workflows/picked/graph")).json()
    assert {(e["source"], e["target"], e["kind"], e["label"]) for e in graph["edges"]} == {
        ("pick", "a", "route", "routes/yes"),
        ("pick", "b", "route", "routes/no"),
    }
    assert (await anon.get(f"{API}/workflows/picked/graph")).status_code == 401


async def test_a_diff_lists_edges_and_changed_config_pointers(
    api_client: httpx.AsyncClient,
) -> None:
    await api_client.post(f"{API}/workflows", json=chain("diffed"))
    changed = chain("diffed")
    changed["nodes"][0] = {
        "id": "begin",
        "type": "log",
        "config": {"message": "hello"},
        "next": "later",
    }
    changed["nodes"].append(
        {"id": "later", "type": "log", "config": {"message": "m"}, "next": "done"}
    )
    saved = await api_client.put(f"{API}/workflows/diffed", json=changed)
    assert saved.status_code == 200, saved.text
    diff = (await api_client.get(f"{API}/workflows/diffed/versions/1/diff/2")).json()
    assert diff["nodes"]["added"] == ["later"]
    assert diff["nodes"]["changed"]["begin"]["config"]["pointers"] == ["/message"]
    assert [(e["source"], e["target"]) for e in diff["edges"]["added"]] == [
        ("begin", "later"),
        ("later", "done"),
    ]
    assert [(e["source"], e["target"]) for e in diff["edges"]["removed"]] == [("begin", "done")]
