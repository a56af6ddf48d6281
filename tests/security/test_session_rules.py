"""Session rules (OWASP): lifetimes enforced on the server, cookie flags, and the headers on every response."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from tests.conftest import FakeClock
from tests.support import csrf_token, portal_login


def test_idle_timeout_ends_the_session_on_the_server(make_app: Callable[..., Flask], clock: FakeClock) -> None:
    client = make_app(SESSION_IDLE_TIMEOUT=2, clock=clock).test_client()
    portal_login(client)
    for _ in range(4):  # active for 2.4 s: never idle for 2 s
        clock.advance(0.6)
        assert client.get("/session").status_code == 200
    clock.advance(2.1)
    page = client.get("/account")
    assert page.status_code == 401 and "You were away for a while" in page.text
    assert client.get("/session").status_code == 302


def test_absolute_lifetime_ends_even_an_active_session(make_app: Callable[..., Flask], clock: FakeClock) -> None:
    client = make_app(SESSION_MAX_LIFETIME=3, clock=clock).test_client()
    portal_login(client)
    for _ in range(4):
        clock.advance(0.5)
        assert client.get("/session").status_code == 200
    clock.advance(1.1)
    page = client.get("/session")
    assert page.status_code == 401 and "Your Mediaflow session has ended" in page.text
    assert client.get("/session").status_code == 302


@pytest.mark.parametrize(
    ("secure", "domain", "name"),
    [(True, None, "__Host-mediaflow_portal"), (False, None, "mediaflow_portal"),
     (True, "example.test", "__Secure-mediaflow_portal"), (False, "example.test", "mediaflow_portal")],
    ids=["secure-host-prefixed", "plain-http", "shared-with-subdomains-secure-prefixed", "shared-plain-http"],
)
def test_cookie_is_secure_and_host_prefixed_unless_configured_for_plain_http(make_app: Callable[..., Flask],
                                                                             secure: bool, domain: str | None,
                                                                             name: str) -> None:
    client = make_app(SESSION_COOKIE_SECURE=secure, SESSION_COOKIE_DOMAIN=domain).test_client()
    cookies = client.get("/login").headers.getlist("Set-Cookie")
    assert len(cookies) == 1
    cookie_name, _, _ = cookies[0].partition("=")
    attributes = {part.split("=", 1)[0].lower(): part.partition("=")[2] for part in cookies[0].split("; ")[1:]}
    assert cookie_name == name
    assert ("secure" in attributes) is secure
    # What __Host- demands of a cookie (RFC 6265bis 4.1.3.2), or a browser drops it: Secure, Path=/, no Domain.
    # With SESSION_COOKIE_DOMAIN (the gate for apps on sibling hosts) only __Secure- is possible.
    assert attributes["path"] == "/" and attributes.get("domain") == domain
    assert "httponly" in attributes and attributes["samesite"] == "Lax"


def test_a_login_keeps_its_session_under_the_host_prefixed_cookie(make_app: Callable[..., Flask]) -> None:
    client = make_app(SESSION_COOKIE_SECURE=True).test_client()
    assert portal_login(client).headers["Location"] == "/"
    assert client.get_cookie("__Host-mediaflow_portal") is not None
    assert client.get_cookie("mediaflow_portal") is None
    assert client.get("/session").status_code == 200


@pytest.mark.parametrize("path", ["/", "/login", "/callback?state=x", "/no-such-page", "/healthz",
                                  "/static/portal.css"])
def test_every_response_carries_the_security_headers(client: Any, path: str) -> None:
    with client.get(path) as response:
        headers = response.headers
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"  # no Referer to other sites; see tests/browser/test_https.py
    for name in ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options",
                 "Cache-Control"):
        assert len(headers.getlist(name)) == 1, name  # said once, never twice with different values


OWN_HEADERS = {"Cache-Control": "public, max-age=60", "X-Frame-Options": "SAMEORIGIN",
               "Content-Security-Policy": "default-src 'self'; img-src https://previews.example"}


@pytest.mark.parametrize("status", [200, 404, 503])
def test_a_view_that_sets_its_own_headers_keeps_them_once(make_app: Callable[..., Flask], status: int) -> None:
    app = make_app()

    @app.get("/own-headers")
    def own_headers() -> Any:
        return "media", status, OWN_HEADERS

    response = app.test_client().get("/own-headers")
    for name, value in OWN_HEADERS.items():
        assert response.headers.getlist(name) == [value], name
    assert response.headers.getlist("X-Content-Type-Options") == ["nosniff"]  # the defaults it did not set


@pytest.mark.parametrize(("own", "sent"), [(None, ["Cookie"]), ("Accept-Encoding", ["Accept-Encoding, Cookie"])])
def test_pages_vary_by_cookie_in_one_header(make_app: Callable[..., Flask], own: str | None, sent: list[str]) -> None:
    app = make_app()

    @app.get("/own-vary")
    def own_vary() -> Any:
        return "media", 200, {"Vary": own} if own else {}

    client = app.test_client()
    portal_login(client)
    assert client.get("/own-vary").headers.getlist("Vary") == sent


# Over https Flask-WTF also wants the POST's Referer to be the portal itself (WTF_CSRF_SSL_STRICT): a token
# alone is not enough. Referrer-Policy: same-origin is what lets a browser send it (tests/browser/test_https.py).
@pytest.mark.parametrize(
    ("referer", "status"),
    [("https://localhost/account", 302), (None, 400), ("https://evil.example/", 400), ("http://localhost/", 400),
     ("https://localhost:8443/", 400), ("https://localhost:abc/", 400), ("https://[/", 400)],
    ids=["same-origin", "no-referer", "other-site", "same-host-plain-http", "other-port", "bad-port", "bad-host"],
)
def test_logout_over_https_needs_a_referer_from_the_portal_itself(make_app: Callable[..., Flask],
                                                                 referer: str | None, status: int) -> None:
    client = make_app().test_client()
    portal_login(client)
    token = csrf_token(client.get("/", base_url="https://localhost").text)
    headers = {"Referer": referer} if referer else {}
    answer = client.post("/logout", data={"csrf_token": token}, headers=headers, base_url="https://localhost")
    assert answer.status_code == status
    assert (client.get("/session").status_code == 200) is (status != 302)


@pytest.mark.parametrize("path", ["/", "/account", "/session"])
def test_authenticated_pages_and_the_callback_are_not_stored(client: Any, path: str) -> None:
    callback = portal_login(client)
    assert callback.headers["Cache-Control"] == "no-store"
    page = client.get(path)
    assert page.headers.getlist("Cache-Control") == ["no-store"]


def test_client_secret_and_secret_key_never_reach_a_page(app: Flask, emulator: Any) -> None:
    client = app.test_client()
    pages = [client.get(p) for p in ("/", "/login", "/callback?state=x", "/nowhere")]
    pages.append(portal_login(client))
    pages += [client.get(p) for p in ("/", "/account", "/session")]
    for secret in (app.config["MEDIAFLOW_CLIENT_SECRET"], app.config["SECRET_KEY"]):
        for page in pages:
            assert secret not in page.text and secret not in str(page.headers)
