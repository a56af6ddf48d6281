"""The pages themselves: titles, error pages, phone width, keyboard use, and axe-core on each."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, Route

from app import create_app
from tests.browser.conftest import assert_accessible, log_in, text
from tests.support import Portal, query_of

pytestmark = pytest.mark.browser


@pytest.mark.parametrize(
    ("path", "title", "phrase"),
    [("/callback?code=abc&state=forged", "Login could not be checked", "This login could not be checked"),
     ("/no/such/page", "Page not found", "There is no page at this address"),
     ("/callback?state={state}&error=server_error&error_description=<b>x</b>", "Login failed",
      "Mediaflow could not log you in")],
    ids=["state-mismatch", "404", "provider-error"],
)
def test_error_pages_have_a_title_a_way_on_and_no_serious_accessibility_issue(page: Page, portal: Portal, path: str,
                                                                               title: str, phrase: str) -> None:
    if "{state}" in path:  # Mediaflow's error text is shown only for a login this browser started
        page.goto(f"{portal.url}/login")
        path = path.format(state=query_of(page.url)["state"])
    page.goto(f"{portal.url}{path}")
    assert page.title() == f"{title} · Mediaflow Portal"
    assert phrase in text(page)
    assert page.locator("main a.button").count() >= 1
    assert_accessible(page)


def test_the_500_page_as_rendered_by_the_portal(page: Page, portal: Portal, tmp_path: Path) -> None:
    app = create_app({"TESTING": False, "SECRET_KEY": "browser-test-secret-key-0123456789-xyz",
                      "MEDIAFLOW_CLIENT_ID": "c", "MEDIAFLOW_CLIENT_SECRET": "s", "SESSION_FILE_DIR": str(tmp_path)})
    app.add_url_rule("/broken", view_func=lambda: 1 // 0)
    html = app.test_client().get("/broken").text

    def serve(route: Route) -> None:
        route.fulfill(status=500, body=html, content_type="text/html")

    page.route(f"{portal.url}/broken", serve)  # the stylesheet still comes from the running portal
    page.goto(f"{portal.url}/broken")
    assert page.title() == "Something went wrong · Mediaflow Portal"
    assert_accessible(page)


@pytest.mark.parametrize("logged_in", [False, True], ids=["landing", "home"])
def test_pages_work_at_phone_width(page: Page, portal: Portal, logged_in: bool) -> None:
    page.set_viewport_size({"width": 360, "height": 740})
    if logged_in:
        log_in(page, portal)
    else:
        page.goto(f"{portal.url}/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert page.locator("main").bounding_box()["width"] <= 360  # type: ignore[index]
    assert_accessible(page)


def test_keyboard_alone_can_log_in_with_visible_focus(page: Page, portal: Portal) -> None:
    page.goto(f"{portal.url}/")
    for _ in range(6):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.textContent.trim()")
        if focused == "Log in with Mediaflow":
            break
    else:
        pytest.fail("the login button cannot be reached with Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", "")
    page.keyboard.press("Enter")
    page.wait_for_url("**/authorize?*")
    page.wait_for_function("document.activeElement && document.activeElement.id === 'username'")  # autofocus
    page.keyboard.type("demo")
    page.keyboard.press("Tab")
    page.wait_for_function("document.activeElement.id === 'password'")
    page.keyboard.type("demo")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{portal.url}/")
    assert "Welcome, Demo User" in text(page)
