"""/login, /callback and /logout against the running emulator, on both session backends."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from cachelib import SimpleCache
from flask import Flask

from portal import mediaflow
from tests.support import Emulator, csrf_token, portal_login, query_of, sign_in


def session_cookie(client: Any) -> str | None:
    cookie = client.get_cookie("mediaflow_portal")
    return cookie.value if cookie else None


def test_full_login_lands_on_home_with_the_users_name(client: Any, emulator: Emulator) -> None:
    response = portal_login(client)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    home = client.get("/")
    assert "Welcome, Demo User" in home.text
    assert emulator.stats()["token"]["authorization_code"] == {"ok": 1, "failed": 0}


def test_login_redirects_to_mediaflow_with_code_client_redirect_uri_and_a_fresh_state(client: Any,
                                                                                      emulator: Emulator) -> None:
    first, second = client.get("/login"), client.get("/login")
    assert first.status_code == 302
    assert first.headers["Location"].startswith(f"{emulator.url}/authorize?")
    params = query_of(first.headers["Location"])
    assert params["response_type"] == "code"
    assert params["client_id"] == "portal-test"
    assert params["redirect_uri"] == "http://localhost/callback"
    assert len(params["state"]) >= 30
    assert params["state"] != query_of(second.headers["Location"])["state"]
    assert "scope" not in params


def test_scope_is_sent_only_when_configured(make_app: Callable[..., Flask]) -> None:
    client = make_app(MEDIAFLOW_SCOPE="files profile").test_client()
    assert query_of(client.get("/login").headers["Location"])["scope"] == "files profile"


def test_configured_redirect_uri_is_used_verbatim(make_app: Callable[..., Flask], emulator: Emulator) -> None:
    uri = "http://127.0.0.1:59999/callback"
    client = make_app(MEDIAFLOW_REDIRECT_URI=uri).test_client()
    assert query_of(client.get("/login").headers["Location"])["redirect_uri"] == uri


def test_code_is_exchanged_with_client_secret_post_and_the_same_redirect_uri(client: Any, emulator: Emulator) -> None:
    portal_login(client)
    exchange = emulator.stats()["recent_token_requests"][0]
    assert exchange["client_auth"] == "client_secret_post"
    assert exchange["fields"] == ["client_id", "client_secret", "code", "code_verifier", "grant_type", "redirect_uri"]
    assert exchange["redirect_uri"] == "http://localhost/callback"


def test_one_login_renews_the_session_id_and_the_pre_login_id_stays_logged_out(client: Any) -> None:
    login = client.get("/login")
    before = session_cookie(client)
    answer = sign_in(login.headers["Location"])
    callback = client.get(answer.headers["Location"].split("localhost", 1)[1])
    assert callback.status_code == 302 and callback.headers["Location"] == "/"
    after = session_cookie(client)
    assert before and after and before != after
    assert client.get("/session").status_code == 200
    client.set_cookie("mediaflow_portal", before)
    assert client.get("/session").status_code == 302
    assert "Log in with Mediaflow" in client.get("/").text


def test_next_brings_the_user_back_after_login(client: Any) -> None:
    response = portal_login(client, next_url="/account")
    assert response.headers["Location"] == "/account"
    assert "demo@example.com" in client.get("/account").text


def test_protected_page_sends_a_logged_out_user_to_login_and_back(client: Any) -> None:
    response = client.get("/account")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/account"


def test_logout_deletes_the_session_and_the_old_cookie_no_longer_works(client: Any) -> None:
    portal_login(client)
    old = session_cookie(client)
    home = client.get("/")
    response = client.post("/logout", data={"csrf_token": csrf_token(home.text)})
    assert response.status_code == 302
    assert "You are logged out" in client.get("/").text
    client.set_cookie("mediaflow_portal", old or "")
    assert client.get("/session").status_code == 302
    assert "Log in with Mediaflow" in client.get("/").text


def test_a_sessions_signed_csrf_token_is_reused_across_pages_and_another_session_gets_its_own(
    make_app: Callable[..., Flask]
) -> None:
    app = make_app()
    first, second = app.test_client(), app.test_client()
    portal_login(first)
    portal_login(second)
    token = csrf_token(first.get("/").text)
    time.sleep(1.1)  # Flask-WTF's signature holds the time in seconds: signed again, it would differ
    assert csrf_token(first.get("/library").text) == token  # signed once, not on every page
    assert csrf_token(second.get("/").text) != token
    assert first.post("/logout", data={"csrf_token": csrf_token(second.get("/").text)}).status_code == 400
    assert first.post("/logout", data={"csrf_token": token}).status_code == 302


def test_logout_without_csrf_token_is_refused_and_keeps_the_session(client: Any) -> None:
    portal_login(client)
    assert client.post("/logout").status_code == 400
    assert client.get("/session").status_code == 200


def test_logout_by_get_is_not_allowed(client: Any) -> None:
    portal_login(client)
    assert client.get("/logout").status_code == 405
    assert client.get("/session").status_code == 200


@pytest.mark.parametrize(("settings", "pkce"), [({}, True), ({"MEDIAFLOW_PKCE": True}, True),
                                               ({"MEDIAFLOW_PKCE": False}, False)],
                         ids=["default", "on", "off"])
def test_pkce_sends_an_s256_challenge_and_the_verifier_unless_turned_off(
    make_app: Callable[..., Flask], emulator: Emulator, settings: dict[str, Any], pkce: bool
) -> None:
    client = make_app(**settings).test_client()
    login = client.get("/login")
    params = query_of(login.headers["Location"])
    if pkce:
        assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    else:
        assert "code_challenge" not in params and "code_challenge_method" not in params
    answer = sign_in(login.headers["Location"])
    callback = answer.headers["Location"].split("/callback", 1)[1]
    assert client.get("/callback" + callback).headers["Location"] == "/"
    assert ("code_verifier" in emulator.stats()["recent_token_requests"][0]["fields"]) is pkce


def test_two_logins_started_in_one_browser_both_succeed(client: Any) -> None:
    first, second = client.get("/login"), client.get("/login")
    answers = [sign_in(r.headers["Location"]).headers["Location"] for r in (first, second)]
    for answer in answers:
        path = answer.split("localhost", 1)[1]
        assert client.get(path).headers["Location"] == "/"
    assert client.get("/session").status_code == 200


def stored_tokens(app: Flask, client: Any) -> list[str]:
    """The real token values, read from the server-side store."""
    with client.session_transaction() as session:
        key = session["tokens_key"]
    tokens = app.extensions["mediaflow_tokens"].store.get(key)
    return [t for t in (tokens.access_token, tokens.refresh_token) if t]


def test_no_token_reaches_the_browser(app: Flask, client: Any) -> None:
    login = portal_login(client)
    secrets = stored_tokens(app, client)
    assert len(secrets) == 2
    for response in [login, *(client.get(path) for path in ("/", "/account", "/session"))]:
        exposed = response.get_data(as_text=True) + str(response.headers)
        assert not any(secret in exposed for secret in secrets)


@pytest.mark.parametrize("path", ["/", "/account", "/session"])
def test_session_cookie_is_httponly_lax_and_holds_only_an_id(client: Any, path: str) -> None:
    response = portal_login(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    value = session_cookie(client) or ""
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,50}", value)
    assert client.get(path).status_code == 200


def test_the_login_works_when_authlib_keeps_its_state_in_a_cache(app: Flask, client: Any) -> None:
    """OAuth(app, cache=…): Authlib keeps the state data there, the portal its pending-login record."""
    cache = SimpleCache()
    mediaflow.init_app(app, cache=cache)  # Authlib's own OAuth(app, cache=…), in place of the one create_app made
    logins = [client.get("/login") for _ in range(5)]  # two more than a session keeps
    states = [query_of(login.headers["Location"])["state"] for login in logins]
    kept = [cache.has(f"_state_mediaflow_{state}") for state in states]
    assert kept == [False, False, True, True, True]  # the oldest are dropped from the cache too
    login, state = logins[-1], states[-1]
    answer = sign_in(login.headers["Location"])
    assert client.get(answer.headers["Location"].split("localhost", 1)[1]).headers["Location"] == "/"
    assert client.get("/session").status_code == 200
    assert cache.get(f"_state_mediaflow_{state}") is None  # spent
