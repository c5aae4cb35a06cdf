"""The console in a real headless Chromium (Debian's ``/usr/bin/chromium``, driven by
Playwright) against a real ``flowyard serve --load-samples`` on a temporary SQLite database.

One server and one browser per session (xdist worker); each test gets a fresh page (its own
context: no token left from another test). Screenshots go to ``tests/ui/screenshots/``.
Every page must load under the console's Content-Security-Policy: a violation or an error
in the browser's console fails the test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from support.auth import PASSWORD
from support.console import CHROMIUM, EDITOR, EXPECT_MS, OPERATOR, VIEWER, Console
from support.packs import write_pick_pack
from support.samples import EXAMPLES
from support.serve import ServeProcess, serve_process


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this directory is a ``ui`` test (``make test-fast`` skips them)."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.ui)


@pytest.fixture(scope="session")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """``flowyard serve --load-samples`` on a fresh SQLite file, its users created, with a
    node pack installed whose type routes by config fields the console does not know."""
    if not Path(CHROMIUM).exists():
        message = f"the console tests need Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("FLOWYARD_REQUIRE_PG") == "1":  # CI: .ci/run installs it
            pytest.fail(message)
        pytest.skip(message)
    tmp = tmp_path_factory.mktemp("console")
    samples = tmp / "samples"
    shutil.copytree(EXAMPLES, samples, ignore=shutil.ignore_patterns("*.py", "plugin_pack"))
    env = {
        "FLOWYARD_LOAD_SAMPLES": "true",
        "FLOWYARD_SAMPLES_DIR": str(samples),
        "FLOWYARD_EGRESS_ALLOW": "127.0.0.1",
        "FLOWYARD_LOAD_PLUGINS": "true",
        "PYTHONPATH": str(write_pick_pack(tmp / "packs")),
    }
    with serve_process(f"sqlite:///{tmp / 'flowyard.db'}", tmp / "serve.log", env) as server:
        asyncio.run(server.wait_ready())
        yield server


@pytest.fixture(scope="session")
def admin_api(console_server: ServeProcess) -> Iterator[httpx.Client]:
    """An admin's API client of the server (to arrange what a test then looks at)."""
    token = asyncio.run(console_server.login())
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=console_server.url + "/api/v1", headers=headers) as client:
        for username, role in (VIEWER, OPERATOR, EDITOR):
            answer = client.post(
                "/users", json={"username": username, "password": PASSWORD, "role": role}
            )
            assert answer.status_code == 201, answer.text
        yield client


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One headless Chromium for the session (its DevTools URL). Started here, not by
    Playwright: a Playwright session keeps an event loop running on the thread while it is
    open, which would break every asyncio test the same xdist worker runs afterwards."""
    profile = tmp_path_factory.mktemp("chromium")
    args = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",  # root in CI containers; Playwright's launch passes it too
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    with (profile / "chromium.log").open("wb") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((profile / "chromium.log").read_text(errors="replace"))
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().splitlines()[0]}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    """The session's Chromium, driven by Playwright for one module: the Playwright session
    (and the event loop it keeps running) ends before another module's tests run."""
    expect.set_options(timeout=EXPECT_MS)
    with sync_playwright() as playwright:
        connected = playwright.chromium.connect_over_cdp(chromium)
        try:
            yield connected
        finally:
            connected.close()


@pytest.fixture
def console(
    console_server: ServeProcess, admin_api: httpx.Client, browser: Browser
) -> Iterator[Console]:
    """The console; after the test, no page may have logged an error (CSP violations
    included)."""
    under_test = Console(console_server, admin_api, browser)
    try:
        yield under_test
        assert not under_test.errors, under_test.errors
    finally:
        for page in under_test.pages:
            page.context.close()
