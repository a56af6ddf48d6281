"""The gate as deployed: the README's nginx block in a real nginx, auth_request to the portal under gunicorn,
an app with no login of its own behind it, and a real Chromium that knows portal.gate.test and app.gate.test."""

from __future__ import annotations

import contextlib
import html
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
import urllib3
from playwright.sync_api import Browser, BrowserContext, Page, Playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, close_context, sign_in, text
from tests.conftest import RedisServer, start_redis
from tests.support import ROOT, Emulator, Portal, free_port, portal_settings, require_binary, start_portal, stop
from tests.support import sign_in as submit_login
from tests.tls import (
    NGINX,
    NGINX_HTTPS_PORT,
    NGINX_OUTAGE_PORT,
    TEST_DOMAIN,
    Certificate,
    Nginx,
    make_certificate,
    start_nginx,
)

pytestmark = [pytest.mark.browser, pytest.mark.gunicorn]

PORTAL_HOST, APP_HOST = f"portal.{TEST_DOMAIN}", f"app.{TEST_DOMAIN}"
AUTH_HEADERS = ("X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Name", "X-Auth-Request-Customer-Id")
# Identity headers a client might send itself, oauth2-proxy's names included: none may reach the app.
FORGED = {name: "mallory" for name in (*AUTH_HEADERS, "X-Auth-Request-Access-Token", "X-Auth-Request-Groups",
                                       "X-Auth-Request-Preferred-Username", "X-Forwarded-User", "X-Forwarded-Email",
                                       "X-Forwarded-Preferred-Username", "X-Forwarded-Access-Token")}


def readme_gate_config(port: int, portal_port: int, app_port: int, certificate: Certificate,
                       access_log: Path) -> str:
    """The README's gate example, with this test's port, certificate, hosts and upstreams in place of the examples."""
    blocks = [block for block in re.findall(r"```nginx\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
              if "auth_request" in block]
    assert len(blocks) == 1, "the README has one nginx example for the gate"
    config = str(blocks[0])
    for documented, ours, count in (("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;", 2),
                                    ("/etc/ssl/example.crt", str(certificate.cert), 2),
                                    ("/etc/ssl/example.key", str(certificate.key), 2),
                                    ("https://portal.example.com/", f"https://{PORTAL_HOST}:{port}/", 1),
                                    ("portal.example.com", PORTAL_HOST, 3),
                                    ("app.example.com", APP_HOST, 1),
                                    ("/var/log/nginx/gate-portal.log", str(access_log), 1)):
        assert config.count(documented) == count, documented
        config = config.replace(documented, ours)
    for upstream, server_port in (("gate_portal", portal_port), ("protected_app", app_port)):
        config, replaced = re.subn(rf"(upstream {upstream} \{{)[^}}]*\}}", rf"\1 server 127.0.0.1:{server_port}; }}",
                                   config)
        assert replaced == 1, upstream
    return config


@dataclass
class EchoApp:
    """An app with no login of its own: it greets whoever the X-Auth-Request-* headers name."""

    url: str
    seen: list[dict[str, str]] = field(default_factory=list)
    # Every header of every request, as the app got it.
    raw: list[dict[str, str]] = field(default_factory=list)


def start_echo_app() -> tuple[EchoApp, ThreadingHTTPServer]:
    port = free_port()
    app = EchoApp(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            # http.server reads header bytes as Latin-1; the portal sends UTF-8.
            headers = {name: (self.headers.get(name) or "").encode("latin-1").decode("utf-8")
                       for name in AUTH_HEADERS}
            app.seen.append({"path": self.path, **headers})
            app.raw.append(dict(self.headers.items()))
            body = (f"<!doctype html><title>Protected app</title><h1>Hello, {html.escape(headers[AUTH_HEADERS[2]])}"
                    f"</h1><p id=user>{html.escape(headers[AUTH_HEADERS[0]])}</p>").encode()
            # The app's own failure, which the gate must pass on as it is.
            self.send_response(500 if self.path.startswith("/broken") else 200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 64  # the burst's 32 connections arrive at once

    server = Server(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return app, server


@dataclass
class Gate:
    portal_url: str
    app_url: str
    app: EchoApp
    portal: Portal
    nginx: Nginx
    certificate: Certificate


@pytest.fixture(scope="module")
def gate(emulator: Emulator, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    """nginx with the README's gate block in front of the portal (gunicorn, 2 workers, Redis) and the echo app."""
    require_binary(NGINX, "nginx")
    tmp = tmp_path_factory.mktemp("gate")
    certificate = make_certificate(tmp / "tls", hosts=(PORTAL_HOST, APP_HOST))
    app, server = start_echo_app()
    plain = free_port()
    # The README's settings for the gate; tokens live 4 s, refreshed ones an hour (one refresh to watch).
    settings = portal_settings(
        emulator, "rotating-once", plain, SESSION_BACKEND="redis", REDIS_URL=redis_server.url, GUNICORN_WORKERS="2",
        SESSION_COOKIE_SECURE="true", SESSION_COOKIE_DOMAIN=TEST_DOMAIN, GATE_ALLOWED_REDIRECT_HOSTS=APP_HOST,
        TRUSTED_PROXY_COUNT="1", MEDIAFLOW_REDIRECT_URI=f"https://{PORTAL_HOST}:{NGINX_HTTPS_PORT}/callback",
        ALLOWED_CUSTOMER_IDS="1")
    portal = start_portal(tmp, plain, settings)
    try:
        nginx = start_nginx(tmp / "nginx", NGINX_HTTPS_PORT,
                            readme_gate_config(NGINX_HTTPS_PORT, plain, int(app.url.rsplit(":", 1)[1]), certificate,
                                               tmp / "gate-portal.log"))
    except RuntimeError:
        stop(portal.process)
        server.shutdown()
        server.server_close()
        raise
    yield Gate(f"https://{PORTAL_HOST}:{NGINX_HTTPS_PORT}", f"https://{APP_HOST}:{NGINX_HTTPS_PORT}", app, portal,
               nginx, certificate)
    stop(nginx.process)
    stop(portal.process)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def gate_browser(playwright: Playwright) -> Iterator[Browser]:
    """Chromium that finds portal.gate.test and app.gate.test on 127.0.0.1."""
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, f"--host-resolver-rules=MAP *.{TEST_DOMAIN} 127.0.0.1"])
    yield launched
    launched.close()


@pytest.fixture
def context(gate_browser: Browser, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BrowserContext]:
    opened = gate_browser.new_context(ignore_https_errors=True, viewport={"width": 1100, "height": 800})
    yield opened
    close_context(opened, tmp_path, request)


def open_app_and_sign_in(page: Page, gate: Gate, path: str, username: str = "demo") -> None:
    page.goto(f"{gate.app_url}{path}")
    assert page.url.startswith("http://127.0.0.1:"), page.url  # the emulator's login, via the portal's /login
    sign_in(page, username, username)


def test_the_protected_app_is_reached_through_the_portals_login_and_left_by_its_logout(
        context: BrowserContext, gate: Gate) -> None:
    # A header a client forges itself must never reach the app: nginx sets these names.
    context.set_extra_http_headers(FORGED)
    page = context.new_page()
    open_app_and_sign_in(page, gate, "/reports/7?view=full")
    page.wait_for_url(f"{gate.app_url}/reports/7?view=full")
    assert "Hello, Demo User" in text(page)
    greeted = [seen for seen in gate.app.seen if seen["path"] == "/reports/7?view=full"]
    assert greeted == [{"path": "/reports/7?view=full", "X-Auth-Request-User": "demo",
                        "X-Auth-Request-Email": "demo@example.com", "X-Auth-Request-Name": "Demo User",
                        "X-Auth-Request-Customer-Id": "1"}]
    cookies = [c for c in context.cookies(gate.portal_url) if c["name"].endswith("mediaflow_portal")]
    assert [(c["name"], c["domain"].lstrip("."), c["secure"]) for c in cookies] == [
        ("__Secure-mediaflow_portal", TEST_DOMAIN, True)]

    page.goto(f"{gate.portal_url}/")
    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()
    assert "You are logged out of the portal." in text(page)
    served = len(gate.app.seen)
    page.goto(f"{gate.app_url}/reports/7")
    assert "Sign in to Mediaflow" in page.content()
    assert len(gate.app.seen) == served
    assert all(seen["X-Auth-Request-User"] == "demo" for seen in gate.app.seen)
    assert not [value for headers in gate.app.raw for value in headers.values() if "mallory" in value.lower()]
    logged = (gate.nginx.prefix.parent / "gate-portal.log").read_text()  # the portal's host, as README logs it
    assert '"GET /callback" 302' in logged and "code=" not in logged and "state=" not in logged


def test_a_user_of_another_customer_is_refused_at_the_callback_and_never_reaches_the_app(
        context: BrowserContext, gate: Gate) -> None:
    served = len(gate.app.seen)
    page = context.new_page()
    open_app_and_sign_in(page, gate, "/reports", username="outsider")
    page.wait_for_url(re.compile(re.escape(f"{gate.portal_url}/callback") + r"\?.*"))
    assert "This portal is for another organisation" in text(page)
    assert "Olga Outsider" in text(page) and page.get_by_role("link", name="Sign in as someone else").is_visible()
    page.goto(f"{gate.app_url}/reports")
    assert "Sign in to Mediaflow" in page.content()
    assert len(gate.app.seen) == served
    assert "Login refused on /callback: user 3: customerId 2" in gate.portal.logs()


def test_a_burst_after_expiry_is_all_served_with_exactly_one_refresh(context: BrowserContext, gate: Gate,
                                                                     emulator: Emulator) -> None:
    page = context.new_page()
    open_app_and_sign_in(page, gate, "/start")
    page.wait_for_url(f"{gate.app_url}/start")
    logged_in_at = time.monotonic()
    cookie = next(f"{c['name']}={c['value']}" for c in context.cookies(gate.app_url)
                  if c["name"].endswith("mediaflow_portal"))
    time.sleep(max(0.0, 4.5 - (time.monotonic() - logged_in_at)))  # the first access token has expired

    pool = urllib3.HTTPSConnectionPool("127.0.0.1", NGINX_HTTPS_PORT, maxsize=32, block=True,
                                       ca_certs=str(gate.certificate.cert), server_hostname=APP_HOST,
                                       assert_hostname=APP_HOST)
    start = threading.Barrier(32)

    def one(number: int) -> tuple[int, str]:
        start.wait()
        answer = pool.request("GET", f"/burst/{number}", headers={"Host": f"{APP_HOST}:{NGINX_HTTPS_PORT}",
                                                                  "Cookie": cookie}, redirect=False, retries=False)
        return answer.status, answer.data.decode()

    with ThreadPoolExecutor(max_workers=32) as threads:
        answers = list(threads.map(one, range(32)))
    pool.close()
    assert [status for status, _ in answers] == [200] * 32
    assert all("Hello, Demo User" in body for _, body in answers)
    assert emulator.refreshes() == 1
    assert len([seen for seen in gate.app.seen if seen["path"].startswith("/burst/")]) == 32


def test_the_apps_and_the_portals_own_error_pages_pass_through_untouched(context: BrowserContext, gate: Gate,
                                                                         emulator: Emulator) -> None:
    """The README's error_page lines for a portal that cannot answer catch nginx's own errors only."""
    page = context.new_page()
    open_app_and_sign_in(page, gate, "/start")
    page.wait_for_url(f"{gate.app_url}/start")
    answer = page.goto(f"{gate.app_url}/broken")
    assert answer is not None and answer.status == 500
    assert "Hello, Demo User" in text(page)
    emulator.fault(endpoint="api", kind="garbage")  # the portal's own 502 page, on the portal's host
    answer = page.goto(f"{gate.portal_url}/library")
    assert answer is not None and answer.status == 502
    assert "could not understand" in text(page) and "Sign-in is unavailable" not in text(page)


# What keeps the portal from answering nginx's subrequest, and what nginx's error log says of it.
PORTAL_AWAY = [
    ("store-down", "auth request unexpected status: 503"),  # Redis stopped: the portal's own 503
    # Redis hung (SIGSTOP): the workers' copies stop within seconds, as their PING goes unanswered; then the 503.
    ("store-hung", "auth request unexpected status: 503"),
    ("portal-down", "connect() failed (111: Connection refused)"),  # no replica runs
    ("portal-hung", "upstream timed out"),  # every gunicorn process stopped (SIGSTOP): connections wait
]


@pytest.mark.parametrize(("away", "logged"), PORTAL_AWAY, ids=[row[0] for row in PORTAL_AWAY])
def test_while_the_portal_cannot_answer_the_gate_says_try_again_and_the_app_sees_nothing(
        emulator: Emulator, tmp_path: Path, away: str, logged: str) -> None:
    """The README's block on a stack of its own, one whose Redis or portal this test may stop, for a signed-in user."""
    with contextlib.ExitStack() as cleanup:
        certificate = make_certificate(tmp_path / "tls", hosts=(PORTAL_HOST, APP_HOST))
        store = start_redis(tmp_path)
        cleanup.callback(store.client.close)
        cleanup.callback(stop, store.process)
        app, server = start_echo_app()
        cleanup.callback(server.server_close)
        cleanup.callback(server.shutdown)
        plain, port = free_port(), NGINX_OUTAGE_PORT
        # No MEDIAFLOW_REDIRECT_URI: the callback URL is built from what nginx forwards.
        settings = portal_settings(
            emulator, "portal-test", plain, SESSION_BACKEND="redis", REDIS_URL=store.url, GUNICORN_WORKERS="2",
            SESSION_COOKIE_SECURE="true", SESSION_COOKIE_DOMAIN=TEST_DOMAIN, GATE_ALLOWED_REDIRECT_HOSTS=APP_HOST,
            TRUSTED_PROXY_COUNT="1", TRUSTED_HOSTS=PORTAL_HOST,
            # For every row: how long a request waits for a silent Redis (or Mediaflow; a refresh lock waits that
            # and more), 5 s by default, which a hung store would cost each request of the store-hung row.
            MEDIAFLOW_READ_TIMEOUT="2")
        del settings["MEDIAFLOW_REDIRECT_URI"]
        portal = start_portal(tmp_path, plain, settings)
        cleanup.callback(stop, portal.process)
        config = readme_gate_config(port, plain, int(app.url.rsplit(":", 1)[1]), certificate,
                                    tmp_path / "gate-portal.log")
        if away == "portal-hung":
            # The README's 20 s, which the hung portal would cost this test: the same directive, shorter.
            assert config.count("proxy_read_timeout 20s;") == 1
            config = config.replace("proxy_read_timeout 20s;", "proxy_read_timeout 2s;")
        nginx = start_nginx(tmp_path / "nginx", port, config)
        cleanup.callback(stop, nginx.process)
        pools = {host: urllib3.HTTPSConnectionPool("127.0.0.1", port, ca_certs=str(certificate.cert),
                                                   server_hostname=host, assert_hostname=host, retries=False)
                 for host in (APP_HOST, PORTAL_HOST)}
        for pool in pools.values():
            cleanup.callback(pool.close)
        cookie = ""

        def get(host: str, target: str, **extra: str) -> urllib3.BaseHTTPResponse:
            """GET a path, or an absolute URL on this nginx, keeping the portal's cookie as a browser would."""
            nonlocal cookie
            path = target.split(f":{port}", 1)[1] if target.startswith("https://") else target
            answer = pools[host].request("GET", path, headers={"Host": f"{host}:{port}", "Cookie": cookie, **extra},
                                         redirect=False)
            cookie = next((c.split(";")[0] for c in answer.headers.getlist("Set-Cookie")
                           if c.startswith("__Secure-mediaflow_portal=")), cookie)
            return answer

        # One login through nginx, as a person makes it. A client's own X-Forwarded-Port never reaches the
        # portal, which believes that header from nginx.
        before = get(APP_HOST, "/reports")
        assert before.status == 302 and f"//{PORTAL_HOST}:{port}/login?next=" in before.headers["Location"]
        login = get(PORTAL_HOST, before.headers["Location"], **{"X-Forwarded-Port": "1234"})
        assert login.status == 302
        assert f"redirect_uri={quote(f'https://{PORTAL_HOST}:{port}/callback', safe='')}" in login.headers["Location"]
        landed = get(PORTAL_HOST, submit_login(login.headers["Location"]).headers["Location"])
        assert landed.status == 302 and landed.headers["Location"] == f"https://{APP_HOST}:{port}/reports"
        # The app is reached: the later of these through the workers' copies of the session.
        assert [get(APP_HOST, "/reports").status for _ in range(6)] == [200] * 6

        stopped: list[int] = []
        if away == "store-down":
            stop(store.process)
        elif away == "store-hung":
            stopped = [store.process.pid]
        elif away == "portal-down":
            stop(portal.process)
        else:
            stopped = [portal.process.pid, *portal.workers()]
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
            cleanup.callback(_resume, pid)
        began = time.monotonic()
        while (answer := get(APP_HOST, "/reports")).status == 200 and time.monotonic() - began < 30:
            # Only a hung Redis leaves the workers' copies answering, and only for a few seconds.
            assert away == "store-hung"
            time.sleep(0.2)
        took = time.monotonic() - began
        seen = len(app.seen)
        assert answer.status == 503, (answer.status, answer.data[:300])
        assert answer.headers["Retry-After"] == "60" and answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["Content-Type"].startswith("text/html")
        assert "Sign-in is unavailable just now" in answer.data.decode()
        # The hung portal's wait is proxy_read_timeout's, not nginx's default minute. A hung Redis: 3 s of copies
        # (TRUSTED_FOR) after a PING a second old at most, then the read that finds Redis silent (2 s here).
        assert took < 11, took
        assert get(APP_HOST, "/reports").status == 503 and len(app.seen) == seen  # the app sees nothing more
        assert logged in nginx.logs()
        if away == "portal-down":
            # The portal's own host: no replica runs, so the same page rather than nginx's bare 502. (A hung one
            # gets it too, after nginx's default minute: the portal's own pages may wait on Mediaflow.)
            own = get(PORTAL_HOST, "/")
            assert own.status == 503 and "Sign-in is unavailable just now" in own.data.decode()
            assert own.headers["Retry-After"] == "60" and own.headers["Cache-Control"] == "no-store"


def _resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
