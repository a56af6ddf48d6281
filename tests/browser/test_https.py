"""Over https, as deployed: a real Chromium logs in and out, with TLS at gunicorn or at the README's nginx."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import Page, Request

from tests.browser.conftest import sign_in, text
from tests.conftest import RedisServer
from tests.support import ROOT, Emulator, free_port, portal_settings, require_binary, start_portal, stop
from tests.tls import HTTPS_PORTS, NGINX, Certificate, make_certificate, start_nginx

pytestmark = [pytest.mark.browser, pytest.mark.gunicorn]


# The access log of the README's nginx, by the URL it serves.
NGINX_ACCESS_LOGS: dict[str, Path] = {}


def readme_nginx_config(port: int, portal_port: int, certificate: Certificate, access_log: Path) -> str:
    """The README's nginx example, with this test's port, certificate and portal in place of the examples."""
    blocks = [block for block in re.findall(r"```nginx\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
              if "upstream portal_upstream" in block]
    assert len(blocks) == 1, "the README has one nginx example for the portal alone"
    config = str(blocks[0])
    for documented, ours in (("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
                             ("/etc/ssl/portal.crt", str(certificate.cert)),
                             ("/etc/ssl/portal.key", str(certificate.key)),
                             ("/var/log/nginx/portal.log", str(access_log))):
        assert config.count(documented) == 1, documented
        config = config.replace(documented, ours)
    config, replaced = re.subn(r"(upstream portal_upstream \{)[^}]*\}", rf"\1 server 127.0.0.1:{portal_port}; }}",
                               config)
    assert replaced == 1, "upstream portal_upstream"
    return config


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module", params=["tls-at-gunicorn", "behind-nginx"])
def https_url(request: pytest.FixtureRequest, emulator: Emulator, redis_server: RedisServer,
              certificate: Certificate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The portal as deployed (gunicorn, 2 workers, Redis, Secure cookie), reached by the browser over https."""
    tmp = tmp_path_factory.mktemp(request.param)
    port = HTTPS_PORTS[0] if request.param == "tls-at-gunicorn" else HTTPS_PORTS[1]
    common = {"SESSION_BACKEND": "redis", "REDIS_URL": redis_server.url, "GUNICORN_WORKERS": "2",
              "SESSION_COOKIE_SECURE": "true"}
    if request.param == "tls-at-gunicorn":
        settings = portal_settings(emulator, "portal-test", port, **common, GUNICORN_CERTFILE=str(certificate.cert),
                                   GUNICORN_KEYFILE=str(certificate.key),
                                   MEDIAFLOW_REDIRECT_URI=f"https://127.0.0.1:{port}/callback")
        portal = start_portal(tmp, port, settings)
        yield portal.url
        stop(portal.process)
        return
    require_binary(NGINX, "nginx")
    # No MEDIAFLOW_REDIRECT_URI: the portal builds its callback URL from nginx's forwarded headers.
    plain = free_port()
    portal = start_portal(tmp, plain, portal_settings(emulator, "portal-test", plain, **common,
                                                      MEDIAFLOW_REDIRECT_URI="", TRUSTED_PROXY_COUNT="1"))
    try:
        nginx = start_nginx(tmp / "nginx", port, readme_nginx_config(port, plain, certificate, tmp / "portal.log"))
    except RuntimeError:
        stop(portal.process)
        raise
    NGINX_ACCESS_LOGS[nginx.url] = tmp / "portal.log"
    yield nginx.url
    stop(nginx.process)
    stop(portal.process)


def test_log_in_and_log_out_over_https(https_page: Page, https_url: str, certificate: Certificate,
                                       emulator: Emulator) -> None:
    page = https_page
    logins: list[str] = []

    def count_logins(sent: Request) -> None:
        if urlsplit(sent.url).path == "/login":
            logins.append(sent.url)

    page.on("request", count_logins)
    page.goto(f"{https_url}/")
    page.get_by_role("link", name="Log in with Mediaflow").click()
    sign_in(page)
    page.wait_for_url(f"{https_url}/")
    assert "Welcome, Demo User" in text(page)
    assert len(logins) == 1
    assert emulator.stats()["recent_token_requests"][0]["redirect_uri"] == f"{https_url}/callback"

    # Whatever its prefix (__Host- when Secure), the portal's cookie is the one named after it.
    cookies = [c for c in page.context.cookies(https_url) if c["name"].endswith("mediaflow_portal")]
    assert len(cookies) == 1 and cookies[0]["secure"]
    old_cookie = {cookies[0]["name"]: cookies[0]["value"]}
    assert requests.get(f"{https_url}/session", cookies=old_cookie, verify=str(certificate.cert), timeout=10,
                        allow_redirects=False).status_code == 200

    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()
    assert "This form has expired" not in text(page)
    assert page.url == f"{https_url}/"
    assert "You are logged out of the portal." in text(page)
    assert page.get_by_role("link", name="Log in with Mediaflow").is_visible()
    after = requests.get(f"{https_url}/session", cookies=old_cookie, verify=str(certificate.cert), timeout=10,
                         allow_redirects=False)
    assert after.status_code != 200
    assert len(logins) == 1
    if https_url in NGINX_ACCESS_LOGS:  # the README's nginx logs the callback without its code
        logged = NGINX_ACCESS_LOGS[https_url].read_text()
        assert '"GET /callback" 302' in logged and "code=" not in logged and "state=" not in logged

