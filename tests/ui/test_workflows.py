"""Slice 1: log in, the workflows list, a workflow's graph, versions and runs."""

from __future__ import annotations

import os

from playwright.sync_api import expect

from support.console import Console, shot
from support.samples import LEAD_ROUTING, sample


def test_login_then_lead_routing_graph_has_one_element_per_node(console: Console) -> None:
    page = console.login(console.page())
    rows = page.locator("[data-testid=workflows] tbody tr")
    expect(rows.first).to_be_visible()
    page.get_by_label("Search workflows").fill("lead-rout")
    expect(page.locator("tr[data-workflow]")).to_have_count(2)  # lead-routing, -http
    expect(page.locator("tr[data-workflow=lead-routing] td").nth(1)).to_have_text("v1")
    shot(page, "workflows")

    page.get_by_role("link", name="lead-routing", exact=True).click()
    definition = console.api.get("/workflows/lead-routing").json()["version"]["definition"]
    nodes = page.locator(".graph [data-node-id]")
    expect(nodes).to_have_count(len(definition["nodes"]))
    ids = sorted(nodes.evaluate_all("els => els.map(e => e.dataset.nodeId)"))
    assert ids == sorted(n["id"] for n in definition["nodes"])
    # Edges carry their condition case, default and catch labels.
    labels = [t or "" for t in page.locator(".react-flow__edge-text").all_text_contents()]
    assert "default" in labels
    assert any(label.startswith("input.region") for label in labels)
    assert any(label.startswith("catch salesforce.duplicates") for label in labels)
    expect(page.locator("[data-testid=versions] li")).to_have_count(1)
    expect(page).to_have_url(f"{console.url}/workflows/lead-routing")
    shot(page, "workflow")


def test_deep_link_after_a_reload_and_unknown_paths(console: Console) -> None:
    page = console.login(console.page())
    page.goto(f"{console.url}/workflows/lead-routing")
    expect(page.locator(".graph [data-node-id]")).to_have_count(len(sample(LEAD_ROUTING)["nodes"]))
    page.goto(f"{console.url}/workflows/no-such-workflow")
    expect(page.get_by_role("alert")).to_contain_text("not found")
    console.errors.clear()  # the browser logs the 404 of the API request


def test_state_machine_is_drawn_as_states_and_actions(console: Console) -> None:
    page = console.login(console.page())
    page.goto(f"{console.url}/workflows/approval-state-machine")
    definition = console.api.get("/workflows/approval-state-machine").json()["version"]
    states = [s["id"] for s in definition["definition"]["states"]]
    expect(page.locator(".graph [data-node-id]")).to_have_count(len(states))
    expect(page.locator(".react-flow__edge-text", has_text="Submit for review")).to_have_count(2)


def thousand_nodes() -> dict[str, object]:
    """A chain of 1,000 nodes; every 10th a condition whose case skips a node."""
    ids = [f"n{i:04d}" for i in range(1000)]
    nodes: list[dict[str, object]] = [{"id": ids[0], "type": "trigger", "next": ids[1]}]
    for i in range(1, 999):
        if i % 10 == 0:
            when = {"when": "input.skip == true", "next": ids[i + 2]}
            config = {"cases": [when], "default": ids[i + 1]}
            nodes.append({"id": ids[i], "type": "condition", "config": config})
        else:
            nodes.append(
                {"id": ids[i], "type": "log", "config": {"message": "m"}, "next": ids[i + 1]}
            )
    nodes.append({"id": ids[999], "type": "end"})
    return {"name": "ui-thousand", "start": ids[0], "nodes": nodes}


#: Seconds the 1,000-node graph page may take from navigation (issue 15: 2 s); a slower
#: machine may allow more with ``FLOWYARD_UI_GRAPH_BUDGET_S``.
GRAPH_BUDGET_S = float(os.environ.get("FLOWYARD_UI_GRAPH_BUDGET_S", "2.0"))


def test_a_thousand_node_graph_loads(console: Console) -> None:
    """The page lays out all 1,000 nodes and draws those in view within the budget
    (bench/console_graph.py measures it over many loads)."""
    saved = console.api.post("/workflows", json=thousand_nodes(), timeout=60)
    assert saved.status_code == 201, saved.text
    page = console.login(console.page())
    page.goto(f"{console.url}/workflows/ui-thousand")
    # Timed in the page, checked at every frame: Playwright's own polling would add its
    # interval to the figure.
    took = (
        page.wait_for_function(
            """() => {
                const graph = document.querySelector(".graph");
                const node = graph && graph.querySelector("[data-node-id]");
                if (!node || graph.dataset.nodes !== "1000") return false;
                const box = node.getBoundingClientRect();
                const shown = box.width > 0 && getComputedStyle(node).visibility === "visible";
                return shown && performance.now();
            }""",
            polling="raf",
        ).json_value()
        / 1000
    )
    expect(page.locator(".graph [data-node-id]").first).to_be_visible()
    drawn = page.locator(".graph [data-node-id]").count()
    assert 0 < drawn <= 1000
    print(f"1,000-node graph page: {took:.2f} s from navigation, {drawn} node elements drawn")
    assert took <= GRAPH_BUDGET_S, (
        f"the 1,000-node graph page took {took:.2f} s > {GRAPH_BUDGET_S} s "
        "(FLOWYARD_UI_GRAPH_BUDGET_S)"
    )
