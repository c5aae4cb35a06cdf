"""Issue 15's remaining console pieces: the workflows list's figures from one request, the
diff between two versions drawn on the graph, parallel and map groups, and a plugin type's
routes drawn as edges."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Locator, Request, expect

from support.console import Console, shot
from support.packs import pick_workflow

#: True once React Flow's viewport transform has held still for two polls (the first render,
#: the measuring pass and fitView each move it): boxes read before that may belong to
#: different frames.
SETTLED = """() => {
  const viewport = document.querySelector('.graph .react-flow__viewport');
  if (!viewport) return false;
  const now = viewport.style.transform, was = window.__flowyardViewport;
  window.__flowyardViewport = now;
  return now !== '' && now === was;
}"""


def inside(inner: Locator, outer: Locator) -> bool:
    """Whether ``inner``'s box lies within ``outer``'s, both read in one frame of a settled
    graph."""
    page = inner.page
    page.wait_for_function(SETTLED, polling=150)
    a, b = page.evaluate(
        "els => els.map(e => { const r = e.getBoundingClientRect();"
        " return [r.x, r.y, r.width, r.height] })",
        [inner.element_handle(), outer.element_handle()],
    )
    return bool(
        a[0] >= b[0] - 1
        and a[1] >= b[1] - 1
        and a[0] + a[2] <= b[0] + b[2] + 1
        and a[1] + a[3] <= b[1] + b[3] + 1
    )


def test_the_list_shows_last_runs_and_runs_per_day_from_one_request(console: Console) -> None:
    saved = console.api.post("/workflows", json=pick_workflow("ui-listed"))
    assert saved.status_code == 201, saved.text
    runs = [
        console.api.post("/workflows/ui-listed/runs", json={"input": {"answer": "yes"}}).json()
        for _ in range(2)
    ]
    page = console.page()
    asked: list[str] = []

    def note(request: Request) -> None:
        if "/api/v1/" in request.url:
            asked.append(request.url.split("/api/v1", 1)[1])

    page.on("request", note)
    console.login(page)
    row = page.locator("tr[data-workflow=ui-listed]")
    expect(row.locator("[data-testid=runs-per-day]")).to_have_attribute("data-total", "2")
    expect(row.locator("[data-testid=last-run] a")).to_have_attribute(
        "href", f"/runs/{runs[-1]['id']}"
    )
    expect(row.locator("[data-testid=last-run] [data-status]")).to_be_visible()
    assert row.locator("rect[data-runs='2']").count() == 1  # today's bar
    # One request for the whole list (it has fewer than 500 workflows), none per row.
    listing = [url for url in asked if url.startswith("/workflows")]
    assert listing == ["/workflows?include=stats&limit=500"], asked
    assert not [url for url in asked if url.startswith("/runs")], asked
    shot(page, "workflows-stats")


def two_versions() -> tuple[dict[str, Any], dict[str, Any]]:
    v1 = {
        "name": "ui-diff",
        "start": "begin",
        "nodes": [
            {"id": "begin", "type": "log", "config": {"message": "v1"}, "next": "check"},
            {
                "id": "check",
                "type": "condition",
                "config": {"cases": [{"when": "input.vip", "next": "vip"}], "default": "old"},
            },
            {"id": "vip", "type": "end"},
            {"id": "old", "type": "end"},
        ],
    }
    v2 = {
        **v1,
        "nodes": [
            {"id": "begin", "type": "log", "config": {"message": "v2"}, "next": "check"},
            {
                "id": "check",
                "type": "condition",
                "config": {"cases": [{"when": "input.vip", "next": "vip"}], "default": "new"},
            },
            {"id": "vip", "type": "end"},
            {"id": "new", "type": "end"},
        ],
    }
    return v1, v2


def test_a_diff_lists_and_draws_what_changed(console: Console) -> None:
    v1, v2 = two_versions()
    assert console.api.post("/workflows", json=v1).status_code == 201
    assert console.api.put("/workflows/ui-diff", json=v2).status_code == 200
    page = console.login(console.page())
    page.goto(f"{console.url}/workflows/ui-diff")
    expect(page.locator("[data-testid=versions] li")).to_have_count(2)
    page.get_by_label("from version").select_option("1")
    page.get_by_label("to version").select_option("2")
    page.locator("[data-action=diff]").click()

    listed = page.locator("[data-testid=diff]")
    expect(listed.locator("[data-diff-node=new][data-diff=added]")).to_be_visible()
    expect(listed.locator("[data-diff-node=old][data-diff=removed]")).to_be_visible()
    changed = listed.locator("[data-diff-node=begin][data-diff=changed]")
    expect(changed).to_contain_text("config (/message)")
    expect(listed.locator("[data-diff-node=check]")).to_contain_text("/default")
    expect(listed.locator("[data-diff-edge='check->new'][data-diff=added]")).to_be_visible()
    expect(listed.locator("[data-diff-edge='check->old'][data-diff=removed]")).to_be_visible()

    # The graph: both versions' nodes, each marked; the edges added and removed styled.
    graph = page.locator(".graph")
    expect(graph.locator("[data-node-id]")).to_have_count(5)
    expect(graph.locator("[data-node-id=new]")).to_have_attribute("data-diff", "added")
    expect(graph.locator("[data-node-id=old]")).to_have_attribute("data-diff", "removed")
    expect(graph.locator("[data-node-id=begin]")).to_have_attribute("data-diff", "changed")
    expect(graph.locator("[data-node-id=vip]")).not_to_have_attribute("data-diff", "added")
    expect(graph.locator(".react-flow__edge.diff-added")).to_have_count(1)
    expect(graph.locator(".react-flow__edge.diff-removed")).to_have_count(1)
    shot(page, "diff")
    page.locator("[data-action=close-diff]").click()
    expect(graph.locator("[data-node-id]")).to_have_count(4)
    expect(graph.locator("[data-diff]")).to_have_count(0)


FORKS = {
    "name": "ui-forks",
    "start": "fan",
    "nodes": [
        {
            "id": "fan",
            "type": "parallel",
            "config": {
                "branches": [{"name": "mail", "start": "mail"}, {"name": "each", "start": "each"}]
            },
            "next": "done",
        },
        {"id": "mail", "type": "log", "config": {"message": "m"}, "next": "mail_more"},
        {"id": "mail_more", "type": "log", "config": {"message": "m"}},
        {
            "id": "each",
            "type": "map",
            "config": {"items": "{{ input.xs }}", "start": "body"},
        },
        {"id": "body", "type": "log", "config": {"message": "{{ item }}"}},
        {"id": "done", "type": "end"},
    ],
}


def test_parallel_branches_and_a_map_body_are_drawn_in_labelled_groups(console: Console) -> None:
    assert console.api.post("/workflows", json=FORKS).status_code == 201
    page = console.login(console.page())
    page.goto(f"{console.url}/workflows/ui-forks")
    graph = page.locator(".graph")
    expect(graph.locator("[data-node-id]")).to_have_count(6)
    fan, each = graph.locator("[data-group-id=fan]"), graph.locator("[data-group-id=each]")
    expect(fan).to_contain_text("parallel fan")
    expect(each).to_contain_text("map each")
    for member in ("mail", "mail_more", "each", "body"):
        assert inside(graph.locator(f"[data-node-id={member}]"), fan), member
    assert inside(graph.locator("[data-node-id=body]"), each)
    assert inside(each, fan)  # the map sits in the parallel's branch
    for outside in ("fan", "done"):
        assert not inside(graph.locator(f"[data-node-id={outside}]"), fan), outside
    shot(page, "groups")

    # The sample too: its three branches in the parallel's box.
    page.goto(f"{console.url}/workflows/parallel-enrichment")
    expect(graph.locator("[data-group-id=enrich]")).to_be_visible()
    for member in ("company_domain", "person_profile", "score_lead"):
        assert inside(
            graph.locator(f"[data-node-id={member}]"), graph.locator("[data-group-id=enrich]")
        )


def test_a_plugin_types_routes_are_drawn_as_labelled_edges(console: Console) -> None:
    saved = console.api.post("/workflows", json=pick_workflow("ui-plugin"))
    assert saved.status_code == 201, saved.text
    page = console.login(console.page())
    page.goto(f"{console.url}/workflows/ui-plugin")
    graph = page.locator(".graph")
    expect(graph.locator("[data-node-id]")).to_have_count(4)
    expect(graph).to_have_attribute("data-edges", "3")
    labels = graph.locator(".react-flow__edge-text")
    expect(labels).to_have_count(3)
    assert sorted(labels.all_text_contents()) == ["otherwise", "routes/no", "routes/yes"]
    shot(page, "plugin-edges")
