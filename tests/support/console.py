"""The console's browser tests (tests/ui): the console under test, screenshots, users."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page

from support.auth import PASSWORD
from support.serve import ServeProcess

CHROMIUM = os.environ.get("FLOWYARD_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parents[1] / "ui" / "screenshots"
#: Users of the other roles (created by the admin through the API).
VIEWER = ("vera", "viewer")
OPERATOR = ("otto", "operator")
EDITOR = ("edda", "editor")
#: How long an expectation in the browser may take (a loaded CI machine is slow).
EXPECT_MS = 20_000


@dataclass
class Console:
    """The server under test, an admin's API client, and the browser."""

    server: ServeProcess
    api: httpx.Client
    browser: Browser
    pages: list[Page] = field(default_factory=list)
    #: What the pages logged as errors (CSP violations included), page by page.
    errors: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self.server.url

    def page(self) -> Page:
        """A new page in a context of its own; browser errors are collected on it."""
        context = self.browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(EXPECT_MS)
        page = context.new_page()
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.pages.append(page)
        return page

    def login(self, page: Page, user: str = "admin", password: str = PASSWORD) -> Page:
        """Open the console and log in through its form."""
        page.goto(self.url + "/")
        page.get_by_label("Username").fill(user)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.locator(".who").wait_for()
        return page


def shot(page: Page, name: str) -> None:
    """Save a screenshot of the page as ``tests/ui/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)
