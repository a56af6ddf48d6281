"""A real Chromium (Debian's), driven by Playwright, against the portal under gunicorn and the emulator."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from tests.conftest import RedisServer
from tests.support import PORTAL_PORTS, Emulator, Portal, portal_settings, require_binary, start_portal, stop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """One Playwright per test process: its sync API cannot run inside another one's loop."""
    require_binary(CHROMIUM, "Chromium")
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def portal(emulator: Emulator, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    """The portal as deployed: gunicorn, 2 workers, Redis; tokens live 4 s so expiry can be watched."""
    port = PORTAL_PORTS[3]
    settings = portal_settings(emulator, "short", port, SESSION_BACKEND="redis", REDIS_URL=redis_server.url,
                               GUNICORN_WORKERS="2", MEDIAFLOW_READ_TIMEOUT="1")
    running = start_portal(tmp_path_factory.mktemp("browser-portal"), port, settings)
    yield running
    stop(running.process)


# Set on a test's item once its call has failed: its pages are then saved as screenshots.
FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


def close_context(context: BrowserContext, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Close a browser profile; after a failure, each of its pages is saved first in the test's temp folder.

    Only then: a full-page screenshot costs a browser test about a tenth of its time.
    """
    try:
        if request.node.stash.get(FAILED, False):
            for number, each in enumerate(context.pages):
                # A page that crashed with the test has no picture to give; the others still do.
                with contextlib.suppress(PlaywrightError):
                    each.screenshot(path=str(tmp_path / f"{request.node.name}-{number}.png"), full_page=True)
    finally:
        context.close()


def fresh_page(browser: Browser, tmp_path: Path, request: pytest.FixtureRequest, **options: Any) -> Iterator[Page]:
    """A fresh browser profile; a failed test's pages are saved as screenshots in its temp folder."""
    context = browser.new_context(viewport={"width": 1100, "height": 800}, **options)
    yield context.new_page()
    close_context(context, tmp_path, request)


@pytest.fixture
def page(browser: Browser, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser profile per test."""
    yield from fresh_page(browser, tmp_path, request)


@pytest.fixture
def https_page(browser: Browser, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser profile per test that accepts the tests' self-signed certificates."""
    yield from fresh_page(browser, tmp_path, request, ignore_https_errors=True)


def assert_accessible(page: Page) -> None:
    """axe-core finds no serious or critical violation on the page as it is now."""
    results = Axe().run(page)
    serious = [(v["id"], v["help"], len(v["nodes"])) for v in results.response["violations"]
               if v.get("impact") in ("serious", "critical")]
    assert not serious, f"{page.url}: {serious}"


def sign_in(page: Page, username: str = "demo", password: str = "demo") -> None:
    """Fill the emulator's login form as a person would."""
    # Waits for the page: after a click, the browser may still be on its way there.
    expect(page.get_by_role("heading", name="Sign in to Mediaflow")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def sign_in_and_land(page: Page, url: str) -> str:
    """Sign in on the emulator, wait to be back at url, and return the page's text."""
    sign_in(page)
    page.wait_for_url(url)
    return str(text(page))


def log_in(page: Page, portal: Portal) -> None:
    page.goto(f"{portal.url}/")
    page.get_by_role("link", name="Log in with Mediaflow").click()
    sign_in_and_land(page, f"{portal.url}/")


def text(page: Page) -> Any:
    return page.inner_text("body")
