"""Slice 3: a state-machine instance is moved with its buttons; disabled actions show their
reason; a viewer sees no buttons."""

from __future__ import annotations

from playwright.sync_api import expect

from support.console import VIEWER, Console, shot

MACHINE = "approval-state-machine"


def start(console: Console) -> str:
    body = {"input": {"document": "q3-report.pdf", "author": "ann"}}
    answer = console.api.post(f"/workflows/{MACHINE}/runs", json=body)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def test_move_an_instance_with_its_buttons(console: Console) -> None:
    run_id = start(console)
    page = console.login(console.page())
    page.goto(f"{console.url}/runs/{run_id}")
    state = page.get_by_test_id("state")
    expect(state).to_have_text("draft")
    submit = page.locator("[data-machine-action=submit]")
    expect(submit).to_be_enabled()
    archive = page.locator("[data-machine-action=archive]")
    expect(archive).to_be_disabled()
    expect(page.get_by_test_id("machine-actions")).to_contain_text("is disabled")
    shot(page, "state-machine")

    submit.click()
    expect(state).to_have_text("pending_review")
    expect(page.locator('.graph [data-node-id="pending_review"]')).to_have_attribute(
        "data-status", "waiting"
    )
    page.locator("[data-machine-action=approve]").click()
    expect(state).to_have_text("approved")
    expect(page.locator("h1 .status")).to_have_text("succeeded")
    history = page.get_by_test_id("machine-history").locator("li")
    expect(history).to_have_count(2)
    expect(history.nth(1)).to_contain_text("approve")
    actions = console.api.get(f"/runs/{run_id}/actions").json()
    assert [h["action"] for h in actions["history"]] == ["submit", "approve"]


def test_a_viewer_sees_the_state_but_no_buttons(console: Console) -> None:
    run_id = start(console)
    page = console.login(console.page(), VIEWER[0])
    page.goto(f"{console.url}/runs/{run_id}")
    expect(page.get_by_test_id("state")).to_have_text("draft")
    expect(page.get_by_test_id("machine")).to_contain_text("Submit for review")
    expect(page.locator("[data-machine-action]")).to_have_count(0)
    expect(page.locator("button[data-action]")).to_have_count(0)
