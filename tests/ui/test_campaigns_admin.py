"""Slice 5: campaigns (progress, pause/resume/cancel) and the admin pages."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from support.auth import PASSWORD
from support.console import OPERATOR, Console, shot

HELD = {
    "name": "ui-campaign",
    "start": "begin",
    "nodes": [
        {"id": "begin", "type": "trigger", "next": "wait"},
        {"id": "wait", "type": "wait_for_signal", "config": {"signal": "go"}, "next": "done"},
        {"id": "done", "type": "end"},
    ],
}


# Session-wide (per test process): with worksteal, a module's tests may be split by other
# modules' in one process, and a module-wide fixture made again would post the workflow twice.
@pytest.fixture(scope="session")
def campaign(admin_api: httpx.Client) -> str:
    assert admin_api.post("/workflows", json=HELD).status_code == 201
    body = {"workflow": HELD["name"], "name": "ui-outreach", "items": [{"i": i} for i in range(4)]}
    answer = admin_api.post("/campaigns", json=body)
    assert answer.status_code in (200, 201, 202), answer.text
    return str(answer.json()["id"])


def test_campaign_progress_and_its_buttons(console: Console, campaign: str) -> None:
    page = console.login(console.page(), OPERATOR[0])
    page.goto(f"{console.url}/campaigns")
    row = page.locator(f'tr[data-campaign="{campaign}"]')
    expect(row).to_contain_text("ui-outreach")
    expect(row).to_contain_text("0 / 4 ended")
    expect(row.locator(".progress .p-waiting")).to_be_visible()
    shot(page, "campaigns")
    row.locator("[data-action=pause]").click()
    expect(row.locator("td").nth(1)).to_have_text("paused")
    row.locator("[data-action=resume]").click()
    expect(row.locator("td").nth(1)).not_to_have_text("paused")
    row.locator("[data-action=cancel]").click()
    expect(row).to_contain_text("4 / 4 ended")
    expect(row.locator("[data-action]")).to_have_count(0)
    row.get_by_role("link", name="runs").click()
    expect(page.locator("[data-testid=runs] tr[data-run]")).to_have_count(4)


def test_admin_creates_a_user_and_an_api_key(console: Console) -> None:
    page = console.login(console.page())
    page.get_by_role("link", name="Admin").click()
    users = page.get_by_test_id("users")
    users.get_by_label("New username").fill("nina")
    users.get_by_label("New password").fill(PASSWORD)
    users.get_by_label("New role").select_option("operator")
    users.get_by_role("button", name="Add user").click()
    expect(users).to_contain_text("nina")
    keys = page.get_by_test_id("api-keys")
    keys.get_by_label("Key name").fill("ci")
    keys.get_by_role("button", name="Create key").click()
    key = page.get_by_test_id("new-key").inner_text()
    assert key.startswith("fy_")
    assert httpx.get(console.url + "/api/v1/workflows", headers={"X-API-Key": key}).is_success
    expect(page.get_by_test_id("audit")).to_contain_text("user.create")
    shot(page, "admin")


def test_admin_replaces_and_deletes_a_credential_never_reading_it(console: Console) -> None:
    page = console.login(console.page())
    page.goto(f"{console.url}/admin")
    panel = page.get_by_test_id("credentials")
    panel.get_by_label("Credential name").fill("ui-token")
    panel.get_by_label("Credential type").select_option("bearer")
    panel.get_by_label("Allowed origins").fill("https://api.example.com")
    panel.get_by_label("Secret data").fill('{"token": "first-secret-value"}')
    panel.get_by_role("button", name="Save credential").click()
    row = panel.locator('tr[data-credential="ui-token"]')
    expect(row).to_contain_text("v1")

    row.locator("[data-action=replace-data]").click()
    secret = row.get_by_label("New secret data of ui-token")
    expect(secret).to_have_value("")  # write-only: nothing is read back into it
    secret.fill('{"token": "second-secret-value"}')
    row.locator("[data-action=save-data]").click()
    expect(row).to_contain_text("v2")
    expect(row.get_by_test_id("replace-data")).to_have_count(0)
    assert console.api.get("/credentials/ui-token").json()["version"] == 2
    html = page.content()
    assert "first-secret-value" not in html and "second-secret-value" not in html

    row.locator("[data-action=delete-credential]").click()
    row.locator("[data-action=confirm-delete-credential]").click()
    expect(row).to_have_count(0)
    assert console.api.get("/credentials/ui-token").status_code == 404


def test_admin_sets_and_deletes_a_quota(console: Console) -> None:
    page = console.login(console.page())
    page.goto(f"{console.url}/admin")
    panel = page.get_by_test_id("quotas")
    form = panel.get_by_test_id("quota-form")
    form.get_by_label("Quota key").fill("node_type:ui-quota")
    form.get_by_label("Rate").fill("5/s")
    form.get_by_label("Burst").fill("2")
    form.locator("[data-action=put-quota]").click()
    row = panel.locator('tr[data-quota="node_type:ui-quota"]')
    expect(row.locator("td").nth(1)).to_have_text("5 per 1s")
    expect(row.locator("td").nth(2)).to_have_text("2")
    assert console.api.get("/quotas/node_type:ui-quota").json()["burst"] == 2

    form.get_by_label("Quota key").fill("node_type:ui-quota")
    form.get_by_label("Concurrency").fill("3")
    form.get_by_label("Enabled").uncheck()
    form.locator("[data-action=put-quota]").click()
    expect(row.locator("td").nth(3)).to_have_text("3")
    expect(row).to_contain_text("disabled")

    row.locator("[data-action=delete-quota]").click()
    row.locator("[data-action=confirm-delete-quota]").click()
    expect(row).to_have_count(0)
    assert console.api.get("/quotas/node_type:ui-quota").status_code == 404


def test_a_non_admin_sees_no_admin_forms(console: Console) -> None:
    page = console.login(console.page(), OPERATOR[0])
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    page.goto(f"{console.url}/admin")
    expect(page.get_by_role("main")).to_contain_text("The admin pages are for admins")
    expect(page.locator("[data-action]")).to_have_count(0)
    expect(page.locator("textarea, form")).to_have_count(0)
