"""What a person does in a browser: log in, deny, deep-link, stay logged in, log out, two tabs, outages."""

from __future__ import annotations

import time

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.browser.conftest import assert_accessible, log_in, sign_in, sign_in_and_land, text
from tests.support import Emulator, Portal

pytestmark = pytest.mark.browser


def test_log_in_from_the_landing_page_and_see_your_name(page: Page, portal: Portal) -> None:
    page.goto(f"{portal.url}/")
    assert page.title() == "Welcome · Mediaflow Portal"
    assert_accessible(page)
    page.get_by_role("link", name="Log in with Mediaflow").click()
    expect(page).to_have_title("Sign in · Mediaflow emulator")  # waits for the navigation the click starts
    assert "Local Mediaflow emulator" in text(page)
    assert_accessible(page)
    sign_in(page)
    page.wait_for_url(f"{portal.url}/")
    assert page.title() == "Home · Mediaflow Portal"
    assert "Welcome, Demo User" in text(page)
    assert page.get_by_role("navigation", name="Account").get_by_text("Demo User").is_visible()
    assert "Refresh token held" in text(page)
    assert_accessible(page)


def test_pressing_deny_shows_a_clear_message(page: Page, portal: Portal) -> None:
    page.goto(f"{portal.url}/")
    page.get_by_role("link", name="Log in with Mediaflow").click()
    page.get_by_role("button", name="Deny").click()
    expect(page).to_have_title("Login cancelled · Mediaflow Portal")
    assert "You did not allow the login" in text(page)
    assert page.get_by_role("link", name="Start again").is_visible()
    assert_accessible(page)


def test_deep_link_while_logged_out_lands_on_that_page_after_login(page: Page, portal: Portal) -> None:
    page.goto(f"{portal.url}/account")
    sign_in(page)
    page.wait_for_url(f"{portal.url}/account")
    assert page.title() == "Account · Mediaflow Portal"
    assert "demo@example.com" in text(page)
    assert_accessible(page)


def test_reload_after_the_access_token_expired_stays_logged_in(page: Page, portal: Portal,
                                                                emulator: Emulator) -> None:
    log_in(page, portal)
    time.sleep(4.5)
    page.reload()
    assert "Welcome, Demo User" in text(page)
    assert "not yet" not in page.locator("dl.status").inner_text()  # "Last refreshed: … s ago"
    assert emulator.refreshes() >= 1


def test_back_after_logout_shows_no_private_content(page: Page, portal: Portal) -> None:
    log_in(page, portal)
    page.goto(f"{portal.url}/account")
    assert "demo@example.com" in text(page)
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{portal.url}/")
    assert "You are logged out of the portal." in text(page)
    page.go_back()
    # no-store: Back asks the portal again, which now sends the browser to sign in.
    assert "Your Mediaflow account" not in page.content()
    assert "demo@example.com" not in page.content()
    assert "Sign in to Mediaflow" in page.content()


def test_two_tabs_that_start_login_at_the_same_time_both_succeed(page: Page, portal: Portal) -> None:
    second = page.context.new_page()
    for tab in (page, second):
        tab.goto(f"{portal.url}/login")
    for tab in (page, second):
        sign_in(tab)
        tab.wait_for_url(f"{portal.url}/")
        assert "Welcome, Demo User" in text(tab)


def test_mediaflow_down_during_the_callback_then_start_again_works(page: Page, portal: Portal,
                                                                   emulator: Emulator) -> None:
    page.goto(f"{portal.url}/login")
    emulator.fault(endpoint="token", kind="status", status=503)
    sign_in(page)
    page.wait_for_url(f"{portal.url}/callback*")
    assert page.title() == "Mediaflow unavailable · Mediaflow Portal"
    assert "Mediaflow is not answering right now" in text(page)
    assert_accessible(page)
    page.get_by_role("link", name="Start again").click()
    assert "Welcome, Demo User" in sign_in_and_land(page, f"{portal.url}/")


def test_session_ended_page_brings_you_back_where_you_were(page: Page, portal: Portal, emulator: Emulator) -> None:
    log_in(page, portal)
    page.goto(f"{portal.url}/account")
    time.sleep(2.2)
    emulator.fault(endpoint="token", kind="oauth_error", error="invalid_grant")
    page.reload()
    assert page.title() == "Session ended · Mediaflow Portal"
    assert "Your Mediaflow session has ended" in text(page)
    assert_accessible(page)
    page.get_by_role("link", name="Log in again").click()
    assert "demo@example.com" in sign_in_and_land(page, f"{portal.url}/account")


def session_cookie(page: Page, portal: Portal) -> tuple[str, str]:
    [cookie] = [c for c in page.context.cookies(portal.url) if c["name"].endswith("mediaflow_portal")]
    return cookie["name"], cookie["value"]


def test_one_login_renews_the_session_id_and_the_pre_login_id_stays_logged_out(page: Page, portal: Portal) -> None:
    page.goto(f"{portal.url}/")
    page.get_by_role("link", name="Log in with Mediaflow").click()  # one /login: it sets the pre-login cookie
    name, before = session_cookie(page, portal)
    sign_in_and_land(page, f"{portal.url}/")
    assert "Welcome, Demo User" in text(page)
    _, after = session_cookie(page, portal)
    assert after != before
    with_old_id = requests.get(f"{portal.url}/session", cookies={name: before}, allow_redirects=False, timeout=10)
    assert with_old_id.status_code == 302
    assert requests.get(f"{portal.url}/session", cookies={name: after}, timeout=10).status_code == 200
