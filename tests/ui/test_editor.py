"""Slice 4: editing on the draft API: add a node (a form from its type's JSON Schema), see
its problem on it, undo, redo (buttons and keys), configure, publish, see the new version."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from support.console import EDITOR, VIEWER, Console, shot

EDITED = {
    "name": "ui-edit",
    "start": "begin",
    "nodes": [
        {"id": "begin", "type": "trigger", "next": "done"},
        {"id": "done", "type": "end"},
    ],
}


# Session-wide (per test process): with worksteal, a module's tests may be split by other
# modules' in one process, and a module-wide fixture made again would post the workflow twice.
@pytest.fixture(scope="session")
def edited(admin_api: httpx.Client) -> str:
    answer = admin_api.post("/workflows", json=EDITED)
    assert answer.status_code == 201, answer.text
    return EDITED["name"]


def test_add_undo_redo_configure_publish(console: Console, edited: str) -> None:
    page = console.login(console.page())
    page.goto(f"{console.url}/workflows/{edited}")
    page.locator("[data-action=edit]").click()
    nodes = page.locator(".graph [data-node-id]")
    expect(nodes).to_have_count(2)
    state = page.get_by_test_id("draft-state")

    page.locator('.graph [data-node-id="begin"]').click()
    form = page.get_by_test_id("add-node")
    expect(form).to_contain_text("after begin")
    form.get_by_label("Type").select_option("log")
    form.get_by_label("Id").fill("audit")
    expect(form.locator("[name=message]")).to_be_visible()  # from the log type's schema
    form.locator("[data-action=add-node]").click()
    expect(nodes).to_have_count(3)
    # The log node needs a message: the problem is shown on the node itself.
    expect(page.locator('[data-problem-for="audit"]')).to_contain_text("message")
    expect(page.locator("[data-action=publish]")).to_be_disabled()

    page.locator("[data-action=undo]").click()
    expect(nodes).to_have_count(2)
    page.locator("[data-action=redo]").click()
    expect(nodes).to_have_count(3)
    page.locator(".react-flow__pane").click()  # focus off the form: keys go to the canvas
    page.keyboard.press("Control+z")
    expect(nodes).to_have_count(2)
    expect(state).to_have_attribute("data-redo", "1")
    page.keyboard.press("Control+Shift+z")
    expect(nodes).to_have_count(3)
    expect(state).to_have_attribute("data-redo", "0")

    page.locator('.graph [data-node-id="audit"]').click()
    panel = page.get_by_test_id("node-panel")
    message = panel.locator("[name=message]")
    message.fill("lead {{ input.email }} came in")
    expect(message).to_have_attribute("data-expression", "template")
    panel.locator("[data-action=save-node]").click()
    expect(page.locator('[data-problem-for="audit"]')).to_have_count(0)
    shot(page, "editor")

    page.locator("[data-action=publish]").click()
    expect(page).to_have_url(f"{console.url}/workflows/{edited}")
    expect(page.locator("h1")).to_contain_text("v2")
    expect(page.locator("[data-testid=versions] li")).to_have_count(2)
    expect(nodes).to_have_count(3)
    published = console.api.get(f"/workflows/{edited}").json()["version"]["definition"]
    audit = next(n for n in published["nodes"] if n["id"] == "audit")
    assert audit["config"]["message"] == "lead {{ input.email }} came in"
    assert next(n for n in published["nodes"] if n["id"] == "begin")["next"] == "audit"


def test_a_viewer_gets_no_edit_button(console: Console, edited: str) -> None:
    page = console.login(console.page(), VIEWER[0])
    page.goto(f"{console.url}/workflows/{edited}")
    expect(page.locator(".graph [data-node-id]").first).to_be_visible()
    expect(page.locator("[data-action=edit]")).to_have_count(0)


def test_expression_fields_are_highlighted_from_the_schema_marker(console: Console) -> None:
    """The node-type schemas mark their template and condition fields
    (``x-flowyard-expression``); the form highlights those, a condition's cases included,
    and no other field."""
    flow = {**EDITED, "name": "ui-expressions"}
    assert console.api.post("/workflows", json=flow).status_code == 201
    page = console.login(console.page(), EDITOR[0])
    page.goto(f"{console.url}/workflows/ui-expressions/edit")
    expect(page.locator(".graph [data-node-id]")).to_have_count(2)
    form = page.get_by_test_id("add-node")

    form.get_by_label("Type").select_option("log")
    expect(form.locator("[name=message]")).to_have_attribute("data-expression", "template")
    expect(form.locator("[name=level]")).not_to_have_attribute("data-expression", re.compile(""))

    form.get_by_label("Type").select_option("http")
    expect(form.locator("[name=url]")).to_have_attribute("data-expression", "template")
    expect(form.locator("[name=headers]")).to_have_attribute("data-expression", "template")
    expect(form.locator("[name=credential]")).not_to_have_attribute(
        "data-expression", re.compile("")
    )

    form.get_by_label("Type").select_option("condition")
    form.locator("[data-action=add-cases]").click()
    when = form.locator('[name="cases.0.when"]')
    expect(when).to_have_attribute("data-expression", "condition")
    expect(when).to_have_class(re.compile(r"\bexpr\b"))
    expect(form.locator('[name="cases.0.next"]')).not_to_have_attribute(
        "data-expression", re.compile("")
    )
    when.fill("input.vip == true")
    form.locator('[name="cases.0.next"]').fill("done")
    form.locator("[name=default]").fill("done")
    form.get_by_label("Id").fill("route")
    form.locator("[data-action=add-node]").click()
    expect(page.locator(".graph [data-node-id]")).to_have_count(3)
    expect(page.locator(".react-flow__edge-text", has_text="input.vip == true")).to_have_count(1)
    draft = console.api.get("/workflows/ui-expressions/draft").json()
    route = next(n for n in draft["document"]["definition"]["nodes"] if n["id"] == "route")
    assert route["config"] == {
        "cases": [{"when": "input.vip == true", "next": "done"}],
        "default": "done",
    }

    page.locator('.graph [data-node-id="route"]').click()
    panel = page.get_by_test_id("node-panel")
    expect(panel.locator('[name="cases.0.when"]')).to_have_value("input.vip == true")
    expect(panel.locator('[name="cases.0.when"]')).to_have_attribute("data-expression", "condition")


#: A draft (never published): a condition with one case, and a spare node to connect.
CONNECTED = {
    "name": "ui-connect",
    "draft": True,
    "start": "begin",
    "nodes": [
        {"id": "begin", "type": "trigger", "next": "route"},
        {
            "id": "route",
            "type": "condition",
            "config": {"cases": [{"when": "input.a == 1", "next": "left"}], "default": "right"},
        },
        {"id": "left", "type": "log", "config": {"message": "l"}, "next": "right"},
        {"id": "right", "type": "end"},
        {"id": "tail", "type": "end"},
    ],
}


def drag(page: Page, source: Locator, target: Locator) -> None:
    """Press on ``source``'s centre, move to ``target``'s in steps, release."""
    a, b = source.bounding_box(), target.bounding_box()
    assert a and b
    page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=12)
    page.mouse.up()


def handle(page: Page, node: str, kind: str) -> Locator:
    return page.locator(f'.react-flow__node[data-id="{node}"] .react-flow__handle.{kind}')


def draft_nodes(console: Console) -> dict[str, dict[str, Any]]:
    document = console.api.get("/workflows/ui-connect/draft").json()["document"]
    return {n["id"]: n for n in document["definition"]["nodes"]}


def test_connect_with_a_route_chooser_move_and_delete(console: Console) -> None:
    assert console.api.post("/workflows", json=CONNECTED).status_code == 201
    page = console.login(console.page(), EDITOR[0])
    page.goto(f"{console.url}/workflows/ui-connect/edit")
    nodes = page.locator(".graph [data-node-id]")
    expect(nodes).to_have_count(5)
    state = page.get_by_test_id("draft-state")
    expect(page.locator(".graph")).to_have_attribute("data-edges", "4")

    # A condition: the chooser offers its routes; a case asks for its condition.
    drag(page, handle(page, "route", "source"), handle(page, "tail", "target"))
    chooser = page.get_by_test_id("connect-chooser")
    expect(chooser).to_contain_text("route → tail")
    kinds = chooser.locator("input[name=kind]")
    expect(kinds).to_have_count(4)
    assert kinds.evaluate_all("els => els.map(e => e.value)") == [
        "next",
        "case",
        "default",
        "catch",
    ]
    chooser.locator("[data-kind=case]").check()
    when = chooser.locator("[name=when]")
    expect(when).to_have_attribute("data-expression", "condition")
    when.fill("input.b == 2")
    chooser.locator("[data-action=connect]").click()
    expect(chooser).to_have_count(0)
    expect(page.locator(".react-flow__edge-text", has_text="input.b == 2")).to_have_count(1)
    assert draft_nodes(console)["route"]["config"]["cases"] == [
        {"when": "input.a == 1", "next": "left"},
        {"when": "input.b == 2", "next": "tail"},
    ]

    # A log node: next or a catch route; cancelling sends nothing.
    revision = state.get_attribute("data-revision")
    drag(page, handle(page, "left", "source"), handle(page, "tail", "target"))
    expect(chooser.locator("input[name=kind]")).to_have_count(2)
    chooser.locator("[data-action=cancel-connect]").click()
    expect(chooser).to_have_count(0)
    expect(state).to_have_attribute("data-revision", str(revision))
    drag(page, handle(page, "left", "source"), handle(page, "tail", "target"))
    chooser.locator("[data-kind=catch]").check()
    chooser.locator("[name=errors]").fill("http.*")
    chooser.locator("[data-action=connect]").click()
    expect(page.locator(".react-flow__edge-text", has_text="catch http.*")).to_have_count(1)
    assert draft_nodes(console)["left"]["catch"] == [{"errors": ["http.*"], "next": "tail"}]

    # Move: the draft's layout keeps where the node was dropped.
    revision = int(state.get_attribute("data-revision") or 0)
    tail = page.locator('.graph [data-node-id="tail"]')
    box = tail.bounding_box()
    assert box
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 160, box["y"] + box["height"] / 2 + 40, steps=12)
    page.mouse.up()
    expect(state).to_have_attribute("data-revision", str(revision + 1))
    layout = console.api.get("/workflows/ui-connect/draft").json()["document"]["layout"]
    assert "tail" in layout["nodes"]

    # Delete: the node and the routes that led to it go.
    page.locator('.graph [data-node-id="left"]').click()
    page.get_by_test_id("node-panel").locator("[data-action=delete-node]").click()
    expect(nodes).to_have_count(4)
    assert "left" not in draft_nodes(console)
    shot(page, "editor-connect")
