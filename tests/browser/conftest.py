"""Headless Chromium (Debian's, /usr/bin/chromium) through Playwright, one per test session,
and a live service per module to drive it against.

Playwright never downloads a browser here: it is launched with `executable_path`. Without
the browser the tests skip locally and fail in CI (`service_missing`), as they do without
PostgreSQL or Redis. Every page a test shows is saved to var/screenshots/ for a reviewer.
"""

from __future__ import annotations

import contextlib
import html as markup
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from tests.conftest import REPO_ROOT, emptied_redis, service_missing
from tests.integration.conftest import serve
from tests.live import ADMIN_TOKEN, LiveService

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

from playwright.sync_api import Browser, BrowserContext, Dialog, Page, sync_playwright

CHROMIUM = Path(os.environ.get("OUTREACH_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO_ROOT / "var" / "screenshots"
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


# one per module, not per session: Playwright's sync API keeps an event loop marked running in
# the main thread while it is started, and tests after the browser's (asyncio.run in unit
# tests) would find it
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        service_missing("Chromium", FileNotFoundError(f"{CHROMIUM} (apt-get install chromium)"))
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def ui_live(postgres_engine: Engine) -> Iterator[LiveService]:
    """One live service (web, worker, clock) for a module's tests, on an emptied database
    and a Redis database of the run's own."""
    with emptied_redis():
        yield from serve(postgres_engine)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) per test, 1280 px wide."""
    opened = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    yield opened
    opened.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A tab that records any dialog (an `alert` would mean script ran) and fails on none."""
    tab = context.new_page()
    dialogs: list[str] = []

    def opened(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    tab.on("dialog", opened)
    yield tab
    assert dialogs == [], f"a dialog opened: {dialogs}"


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page: Page, live: LiveService, token: str = ADMIN_TOKEN) -> None:
    """Through the login form, as a person would."""
    page.goto(f"{live.base_url}/ui/login")
    page.get_by_label("Ops token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/ui/(?!login)"))


def hidden_fields(html: str) -> dict[str, str]:
    return {name: markup.unescape(value) for name, value in _HIDDEN.findall(html)}


@contextlib.contextmanager
def http_session(live: LiveService, token: str = ADMIN_TOKEN) -> Iterator[tuple[httpx.Client, str]]:
    """A logged-in HTTP client (no browser) and the session's CSRF token: for posts a page
    would never make."""
    with httpx.Client(base_url=live.base_url, timeout=30) as client:
        form = hidden_fields(client.get("/ui/login").text)
        answer = client.post("/ui/login", data={**form, "token": token})
        assert answer.status_code == 303, answer.text
        yield client, hidden_fields(client.get("/ui/").text)["csrf_token"]
