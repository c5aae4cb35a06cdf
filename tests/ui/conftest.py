"""The console in a real headless Chromium (Debian's ``/usr/bin/chromium``, driven by
Playwright) against a real ``flowyard serve --load-samples`` on a temporary SQLite database.

One server and one browser per session (xdist worker); each test gets a fresh page (its own
context: no token left from another test). Screenshots go to ``tests/ui/screenshots/``.
Every page must load under the console's Content-Security-Policy: a violation or an error
in the browser's console fails the test.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from support.auth import PASSWORD
from support.console import CHROMIUM, EDITOR, EXPECT_MS, OPERATOR, VIEWER, Console
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
    """``flowyard serve --load-samples`` on a fresh SQLite file, its users created."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"the console tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("console")
    samples = tmp / "samples"
    shutil.copytree(EXAMPLES, samples, ignore=shutil.ignore_patterns("*.py", "plugin_pack"))
    env = {
        "FLOWYARD_LOAD_SAMPLES": "true",
        "FLOWYARD_SAMPLES_DIR": str(samples),
        "FLOWYARD_EGRESS_ALLOW": "127.0.0.1",
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
def browser() -> Iterator[Browser]:
    """One headless Chromium for the session."""
    expect.set_options(timeout=EXPECT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


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
