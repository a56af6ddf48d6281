"""Refresh in before_request: when it is due, what is kept, and when the Mediaflow session ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal.tokens import TokenSet
from tests.support import Emulator, portal_login


@pytest.mark.parametrize(
    ("lifetime", "left", "leeway", "due"),
    [(3600, 3000, 60, False), (3600, 59, 60, True), (3600, 61, 60, False),
     (4, 2.5, 60, False), (4, 1.9, 60, True),   # never more than half the lifetime
     (120, 59, 60, True), (120, 61, 60, False), (3600, -5, 60, True), (3600, 10, 0, False)],
)
def test_refresh_is_due_within_the_leeway_capped_at_half_the_lifetime(lifetime: int, left: float, leeway: float,
                                                                      due: bool) -> None:
    tokens = TokenSet("a", "r", expires_at=1000 + left, lifetime=lifetime, obtained_at=0)
    assert tokens.is_due(leeway, now=1000) is due


@pytest.mark.parametrize(("answer", "kept"), [({}, "old"), ({"refresh_token": None}, "old"),
                                               ({"refresh_token": ""}, "old"), ({"refresh_token": "new"}, "new")])
def test_a_refresh_keeps_the_old_refresh_token_unless_a_new_one_is_given(answer: dict[str, Any], kept: str) -> None:
    tokens = TokenSet("a", "old", expires_at=10, lifetime=10, obtained_at=0)
    fresh = tokens.refreshed({"access_token": "b", "expires_in": 60, **answer}, now=5)
    assert (fresh.refresh_token, fresh.access_token, fresh.expires_at, fresh.refreshed_at) == (kept, "b", 65, 5)


def session_status(client: Any) -> dict[str, Any]:
    response = client.get("/session")
    assert response.status_code == 200, response.text
    return dict(response.json["tokens"])


@pytest.mark.parametrize("client_id", ["short", "empty-refresh", "rotating"])
def test_expiring_token_is_refreshed_before_the_request_and_the_refresh_token_kept(
    make_app: Callable[..., Flask], emulator: Emulator, backend: str, client_id: str
) -> None:
    client = make_app(client_id, backend=backend).test_client()
    portal_login(client)
    assert session_status(client)["last_refreshed"] is None
    for round_ in (1, 2):
        time.sleep(2.1)  # lifetime 4 s: due with less than 2 s left
        status = session_status(client)
        assert status["last_refreshed"] is not None
        assert status["expires_in"] >= 3
        assert status["refresh_token_held"] is True
        assert emulator.refreshes() == round_
    assert "Welcome, Demo User" in client.get("/").text
    refresh = emulator.stats()["recent_token_requests"][-1]
    assert refresh["fields"] == ["client_id", "client_secret", "grant_type", "refresh_token"]
    assert emulator.stats()["reuse_detected"] == 0


def test_no_refresh_token_ends_the_session_politely_once_expired(make_app: Callable[..., Flask], backend: str,
                                                                 emulator: Emulator) -> None:
    client = make_app("no-refresh", backend=backend).test_client()
    portal_login(client)
    time.sleep(2.1)
    assert session_status(client)["refresh_token_held"] is False  # still valid: served as is
    time.sleep(2.1)
    page = client.get("/account")
    assert page.status_code == 401
    assert "Your Mediaflow session has ended" in page.text
    assert 'href="/login?next=/account"' in page.text
    assert emulator.refreshes() == 0
    assert client.get("/session").status_code == 302


def test_refused_refresh_ends_the_session_and_offers_to_come_back(make_app: Callable[..., Flask], backend: str,
                                                                  emulator: Emulator) -> None:
    client = make_app("short", backend=backend).test_client()
    portal_login(client, next_url="/account")
    time.sleep(2.1)
    emulator.fault(endpoint="token", kind="oauth_error", error="invalid_grant")
    page = client.get("/account")
    assert page.status_code == 401
    assert "log in again" in page.text.lower()
    login = client.get("/login?next=/account")
    assert login.status_code == 302
    assert client.get("/").text.count("Log in with Mediaflow") == 1


def test_a_corrupt_stored_token_set_ends_the_session_politely(app: Flask, client: Any) -> None:
    portal_login(client)
    with client.session_transaction() as session:
        key = session["tokens_key"]
    if app.config["SESSION_BACKEND"] == "redis":
        app.config["SESSION_REDIS"].set(f"mediaflow:tokens:{key}", b"\x00not json")
    else:
        (Path(app.config["SESSION_FILE_DIR"]) / "tokens" / f"{key}.json").write_text("{truncated")
    app.extensions["mediaflow_token_cache"].forget(key)  # as another worker, which never saw it
    page = client.get("/account")
    assert page.status_code == 401 and "Your Mediaflow session has ended" in page.text
    assert client.get("/session").status_code == 302


def test_api_failure_on_home_degrades_to_a_message_and_keeps_the_session(client: Any, emulator: Emulator) -> None:
    portal_login(client)
    emulator.fault(endpoint="api", kind="status", status=500)
    page = client.get("/")
    assert page.status_code == 200
    assert "You are still logged in" in page.text
    assert "Welcome, Demo User" in client.get("/").text
