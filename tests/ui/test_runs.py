"""Slice 2: the runs list and a run's page follow the stream live (no reload); lifecycle
buttons; a viewer sees none."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from playwright.sync_api import Page, expect

from support.console import OPERATOR, VIEWER, Console, shot

#: Waits for a signal, then ends: the test decides when the run moves.
WAITS = {
    "name": "ui-waits",
    "start": "begin",
    "nodes": [
        {"id": "begin", "type": "trigger", "next": "wait"},
        {"id": "wait", "type": "wait_for_signal", "config": {"signal": "go"}, "next": "done"},
        {"id": "done", "type": "end", "config": {"output": {"ok": True}}},
    ],
}


# Session-wide (per test process): with worksteal, a module's tests may be split by other
# modules' in one process, and a module-wide fixture made again would post the workflow twice.
@pytest.fixture(scope="session")
def waits(admin_api: httpx.Client) -> str:
    answer = admin_api.post("/workflows", json=WAITS)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["workflow"]["id"])


def start(console: Console, workflow: str) -> str:
    answer = console.api.post(f"/workflows/{workflow}/runs", json={"input": {}})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def mark_no_reload(page: Page) -> None:
    page.evaluate("window.__sameDocument = true")


def assert_no_reload(page: Page) -> None:
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"


def test_run_page_turns_succeeded_live(console: Console, waits: str) -> None:
    """Started with the workflow page's buttons, moved by the run page's signal form, the
    run turns succeeded on screen without a reload; the workflow's runs panel lists it."""
    page = console.login(console.page(), OPERATOR[0])
    page.goto(f"{console.url}/workflows/ui-waits")
    mark_no_reload(page)
    page.locator("[data-action=start-run]").click()
    page.locator("textarea[name=input]").fill('{"lead": "ann"}')
    page.locator("[data-action=start]").click()
    expect(page).to_have_url(re.compile(rf"{re.escape(console.url)}/runs/run_\w+$"))
    run_id = page.url.rsplit("/", 1)[1]
    title = page.locator("h1 .status")
    expect(title).to_have_text("waiting")
    expect(page.locator('.graph [data-node-id="wait"]')).to_have_attribute("data-status", "waiting")
    assert console.api.get(f"/runs/{run_id}").json()["input"] == {"lead": "ann"}
    shot(page, "run-waiting")

    page.get_by_label("Signal name").fill("go")
    page.get_by_label("Signal payload").fill('{"by": "test"}')
    page.get_by_role("button", name="Send").click()

    expect(title).to_have_text("succeeded")
    expect(page.locator('.graph [data-node-id="done"]')).to_have_attribute(
        "data-status", "succeeded"
    )
    expect(page.locator("[data-testid=steps] tr[data-step]")).to_have_count(3)
    expect(page.get_by_label("Signal name")).to_have_count(0)  # the run has ended
    assert_no_reload(page)
    shot(page, "run")

    page.get_by_role("link", name="ui-waits", exact=True).click()
    panel = page.get_by_test_id("workflow-runs")
    expect(panel.locator(f'[data-run="{run_id}"] .status')).to_have_text("succeeded")
    panel.locator(f'[data-run="{run_id}"] a').click()
    expect(page).to_have_url(f"{console.url}/runs/{run_id}")
    assert_no_reload(page)


def test_runs_list_shows_new_runs_and_their_status_live(console: Console, waits: str) -> None:
    page = console.login(console.page())
    page.goto(f"{console.url}/runs?workflow=ui-waits")
    expect(page.get_by_label("Workflow")).to_have_value("ui-waits")
    mark_no_reload(page)
    page.wait_for_timeout(300)  # the stream is open (tail: only what happens next)
    run_id = start(console, waits)
    row = page.locator(f'tr[data-run="{run_id}"] .status')
    expect(row).to_have_text("waiting")
    console.api.post(f"/runs/{run_id}/signals/go", json={})
    expect(row).to_have_text("succeeded")
    page.get_by_label("Status").select_option("waiting")
    expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_count(0)
    assert_no_reload(page)
    shot(page, "runs")


def test_lifecycle_buttons_pause_resume_cancel(console: Console, waits: str) -> None:
    run_id = start(console, waits)
    page = console.login(console.page())
    page.goto(f"{console.url}/runs/{run_id}")
    title = page.locator("h1 .status")
    expect(title).to_have_text("waiting")
    page.locator("[data-action=pause]").click()
    expect(title).to_have_text("paused")
    expect(page.locator("[data-action=pause]")).to_have_count(0)
    page.locator("[data-action=resume]").click()
    expect(title).to_have_text("waiting")
    page.locator("[data-action=cancel]").click()
    expect(title).to_have_text("cancelled")
    page.locator("[data-action=retry]").click()
    expect(title).not_to_have_text("cancelled")


def test_a_viewer_sees_no_lifecycle_or_start_buttons(console: Console, waits: str) -> None:
    run_id = start(console, waits)
    page = console.login(console.page(), VIEWER[0])
    expect(page.locator(".who")).to_contain_text("viewer")
    page.goto(f"{console.url}/runs/{run_id}")
    expect(page.locator("h1 .status")).to_have_text("waiting")
    expect(page.locator("[data-action]")).to_have_count(0)
    expect(page.get_by_label("Signal name")).to_have_count(0)
    page.goto(f"{console.url}/workflows/ui-waits")
    expect(page.locator(".graph [data-node-id]")).to_have_count(3)
    expect(page.locator("button[data-action]")).to_have_count(0)
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)


#: Fails (error type ``ui.picky``) when its input says so, else succeeds.
PICKY = {
    "name": "ui-picky",
    "start": "begin",
    "nodes": [
        {"id": "begin", "type": "trigger", "next": "check"},
        {
            "id": "check",
            "type": "condition",
            "config": {"cases": [{"when": "input.fail == true", "next": "boom"}], "default": "ok"},
        },
        {"id": "boom", "type": "fail", "config": {"error": "ui.picky", "message": "picky"}},
        {"id": "ok", "type": "end"},
    ],
}


@pytest.fixture(scope="session")
def picky_campaign(admin_api: httpx.Client) -> str:
    """A campaign of four ui-picky runs keyed k0..k3; k0 and k2 fail. Returns its id once
    every run has ended."""
    assert admin_api.post("/workflows", json=PICKY).status_code == 201
    items = [{"key": f"k{i}", "fail": i % 2 == 0} for i in range(4)]
    body = {
        "workflow": "ui-picky",
        "name": "ui-picky",
        "items": items,
        "item_key": "{{ item.key }}",
    }
    answer = admin_api.post("/campaigns", json=body)
    assert answer.status_code in (200, 201, 202), answer.text
    campaign = str(answer.json()["id"])
    deadline = time.monotonic() + 60
    while True:
        counts = admin_api.get(f"/campaigns/{campaign}").json()["counts"]
        if counts.get("succeeded", 0) == 2 and counts.get("failed", 0) == 2:
            break
        assert time.monotonic() < deadline, counts
        time.sleep(0.2)
    return campaign


def keys_shown(page: Page) -> list[str]:
    return sorted(page.locator("[data-testid=runs] tr[data-run] td:nth-child(5)").all_inner_texts())


def test_runs_list_filters_by_error_type_key_and_campaign(
    console: Console, picky_campaign: str
) -> None:
    page = console.login(console.page())
    page.goto(f"{console.url}/runs?workflow=ui-picky")
    rows = page.locator("[data-testid=runs] tr[data-run]")
    expect(rows).to_have_count(4)

    page.get_by_label("Error type").fill("ui.*")
    page.get_by_label("Error type").press("Enter")
    expect(page).to_have_url(re.compile(r"error_type=ui\.\*"))
    expect(rows).to_have_count(2)
    assert keys_shown(page) == ["k0", "k2"]
    expect(rows.locator("td:nth-child(4)")).to_have_text(["ui.picky", "ui.picky"])

    page.get_by_label("Correlation key").fill("k2")
    page.get_by_label("Correlation key").press("Enter")
    expect(rows).to_have_count(1)
    assert keys_shown(page) == ["k2"]

    # With a campaign, every other filter still applies (GET /runs?campaign=).
    page.goto(f"{console.url}/runs?campaign={picky_campaign}&status=succeeded")
    expect(rows).to_have_count(2)
    assert keys_shown(page) == ["k1", "k3"]
    page.get_by_label("Correlation key").fill("k3")
    page.get_by_label("Correlation key").press("Enter")
    expect(rows).to_have_count(1)
    assert keys_shown(page) == ["k3"]
    page.get_by_label("Status").select_option("failed")
    expect(rows).to_have_count(0)
    page.get_by_label("Correlation key").fill("k0")
    page.get_by_label("Correlation key").press("Enter")
    expect(rows).to_have_count(1)
    assert keys_shown(page) == ["k0"]
    page.get_by_label("Correlation key").fill("")
    page.get_by_label("Correlation key").press("Enter")
    page.get_by_label("Error type").fill("ui.*")
    page.get_by_label("Error type").press("Enter")
    expect(rows).to_have_count(2)
    assert keys_shown(page) == ["k0", "k2"]
    page.get_by_label("Workflow").select_option("ui-picky")
    expect(rows).to_have_count(2)


@pytest.fixture
def flaky_url() -> Iterator[str]:
    """A local HTTP endpoint that answers 503 to its first request, then 200."""
    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            calls.append(self.path)
            code = 503 if len(calls) == 1 else 200
            body = b'{"ok": true}'
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/lead"
    finally:
        server.shutdown()
        server.server_close()


def test_run_page_timeline_shows_each_attempt(console: Console, flaky_url: str) -> None:
    """The timeline lists a step's attempts from the run's events: started, failed with its
    error type and message and when it is tried again, started again, succeeded."""
    flaky = {
        "name": "ui-flaky",
        "start": "begin",
        "nodes": [
            {"id": "begin", "type": "trigger", "next": "call"},
            {
                "id": "call",
                "type": "http",
                "config": {"url": flaky_url},
                "retry": {"max_attempts": 3, "initial_interval_s": 0.2, "jitter": "none"},
                "next": "done",
            },
            {"id": "done", "type": "end"},
        ],
    }
    assert console.api.post("/workflows", json=flaky).status_code == 201
    run_id = start(console, "ui-flaky")
    page = console.login(console.page())
    page.goto(f"{console.url}/runs/{run_id}")
    expect(page.locator("h1 .status")).to_have_text("succeeded")
    row = page.locator('[data-testid=steps] tr[data-step="call"]')
    expect(row.get_by_test_id("attempt-count")).to_contain_text("1 failed")
    row.click()
    attempts = page.locator('tr[data-step-detail="call"] [data-testid=attempts] li')
    expect(attempts).to_have_count(4)
    expect(attempts.nth(0)).to_have_attribute("data-event", "step.started")
    expect(attempts.nth(0)).to_contain_text("attempt 1")
    expect(attempts.nth(1)).to_have_attribute("data-event", "step.retrying")
    expect(attempts.nth(1).locator("[data-error-type]")).to_have_text("http.503")
    expect(attempts.nth(1)).to_contain_text("next attempt at")
    expect(attempts.nth(2)).to_have_attribute("data-event", "step.started")
    expect(attempts.nth(2)).to_contain_text("attempt 2")
    expect(attempts.nth(3)).to_have_attribute("data-event", "step.succeeded")
    detail = page.locator('tr[data-step-detail="call"]')
    expect(detail).to_contain_text("no input is kept per step")
    detail.scroll_into_view_if_needed()
    shot(page, "run-attempts")
