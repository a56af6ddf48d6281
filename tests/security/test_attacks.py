"""A table of attacks on the OAuth client and the session: status, no reflection, no session made or lost."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec
import pytest
from flask import Flask

from portal.auth import PENDING_LOGINS
from portal.sessions import LOGIN_LIFETIME
from tests.conftest import FakeClock
from tests.support import (
    Emulator,
    csrf_token,
    dockerfile_cmd,
    env_with,
    free_port,
    portal_login,
    query_of,
    sign_in,
    stage_image,
    stop,
    wait_for_http,
)

COOKIE = "mediaflow_portal"


def token_sets(app: Flask) -> int:
    """How many logged-in sessions the server holds (each has one token set)."""
    if app.config["SESSION_BACKEND"] == "redis":
        return len(app.config["SESSION_REDIS"].keys("mediaflow:tokens:*"))
    return len(list((Path(app.config["SESSION_FILE_DIR"]) / "tokens").glob("*.json")))


def start_login(client: Any, next_url: str | None = None) -> tuple[str, str]:
    """Start a login and sign in; return the callback's code and state, not yet delivered."""
    login = client.get("/login" + (f"?next={quote(next_url, safe='')}" if next_url is not None else ""))
    params = query_of(sign_in(login.headers["Location"]).headers["Location"])
    return params["code"], params["state"]


def expire_pending_logins(client: Any) -> None:
    """Age the logins this browser started past their lifetime (as waiting would)."""
    with client.session_transaction() as session:
        session[PENDING_LOGINS] = {state: {**started, "at": time.time() - LOGIN_LIFETIME - 1}
                                   for state, started in session[PENDING_LOGINS].items()}


def record_path(app: Flask, sid: str) -> Path:
    """Where the filesystem backend keeps the record of this session id."""
    key = f"mediaflow:session:{sid}".encode()
    return Path(app.config["SESSION_FILE_DIR"]) / "sessions" / hashlib.sha256(key).hexdigest()


def record_size(app: Flask, sid: str) -> int:
    """The bytes the store holds for this session id (0 when there is no record)."""
    if app.config["SESSION_BACKEND"] == "redis":
        return int(app.config["SESSION_REDIS"].strlen(f"mediaflow:session:{sid}"))
    path = record_path(app, sid)
    return path.stat().st_size if path.exists() else 0


def plant_record(app: Flask, sid: str, raw: bytes | object) -> None:
    """Write the record of sid, as someone with write access to the store could: bytes as they are, data in
    the backend's own format (msgpack in Redis, JSON in files)."""
    redis_backend = app.config["SESSION_BACKEND"] == "redis"
    if not isinstance(raw, bytes):
        raw = msgspec.msgpack.encode(raw) if redis_backend else json.dumps(raw).encode()
    if redis_backend:
        app.config["SESSION_REDIS"].set(f"mediaflow:session:{sid}", raw, ex=600)
        return
    path = record_path(app, sid)
    assert path.exists(), "the store does not keep records where this test plants them"
    path.write_bytes(raw)
    os.utime(path, (time.time() + 600, time.time() + 600))


@dataclass
class Attack:
    name: str
    run: Callable[[Any, Flask], Any]
    status: int
    logged_in: bool = False
    payloads: list[str] = field(default_factory=list)


def _callback(query: str) -> Callable[[Any, Flask], Any]:
    return lambda client, app: client.get(f"/callback?{query}")


def _with_real_code(build: Callable[[str, str], str], prepare: Callable[[Any], None] = lambda c: None
                    ) -> Callable[[Any, Flask], Any]:
    def run(client: Any, app: Flask) -> Any:
        code, state = start_login(client)
        prepare(client)
        return client.get(f"/callback?{build(code, state)}")
    return run


def _replayed_callback(client: Any, app: Flask) -> Any:
    code, state = start_login(client)
    client.get(f"/callback?code={code}&state={state}")
    return client.get(f"/callback?code={code}&state={state}")


def _code_from_another_browser(client: Any, app: Flask) -> Any:
    victim = app.test_client()
    code, state = start_login(victim)
    return client.get(f"/callback?code={code}&state={state}")


def _forged_cookie(client: Any, app: Flask) -> Any:
    forged = "attacker-chosen-session-id-0000000000000"
    client.set_cookie(COOKIE, forged)
    response = client.get("/login")
    # An id the store never issued is never adopted: the session that /login writes gets its own.
    assert client.get_cookie(COOKIE).value != forged
    victim = app.test_client()
    victim.set_cookie(COOKIE, forged)
    portal_login(victim)
    assert victim.get_cookie(COOKIE).value != forged
    victim.post("/logout", data={"csrf_token": csrf_token(victim.get("/").text)})
    return response


def _valid_id_planted_before_login(client: Any, app: Flask) -> Any:
    client.get("/login")  # the attacker's own, valid, pre-login session id
    planted = client.get_cookie(COOKIE).value
    victim = app.test_client()
    victim.set_cookie(COOKIE, planted)
    portal_login(victim)  # one /login, as a person does it
    assert victim.get_cookie(COOKIE).value != planted
    response = client.get("/session")  # the attacker still holds the planted id: not logged in
    victim.post("/logout", data={"csrf_token": csrf_token(victim.get("/").text)})
    return response


def _pre_login_id_reused_after_one_login(client: Any, app: Flask) -> Any:
    victim = app.test_client()
    login = victim.get("/login")  # one /login: the id it sets is seen (a shared computer, a log, a proxy)
    seen = victim.get_cookie(COOKIE).value
    answer = sign_in(login.headers["Location"])
    victim.get(answer.headers["Location"].split("localhost", 1)[1])
    assert victim.get("/session").status_code == 200
    client.set_cookie(COOKIE, seen)
    response = client.get("/session")  # the attacker, with the id from before the login
    victim.post("/logout", data={"csrf_token": csrf_token(victim.get("/").text)})
    return response


def _https_logout_posted_from_another_site(client: Any, app: Flask) -> Any:
    token = csrf_token(client.get("/", base_url="https://localhost").text)
    return client.post("/logout", base_url="https://localhost", data={"csrf_token": token},
                       headers={"Referer": "https://evil.example/logout", "Origin": "https://evil.example"})


def _logged_in_cookie_to_host(client: Any, host: str) -> Any:
    """GET / with Host: host, carrying the logged-in session cookie (the test client sends a cookie by domain)."""
    client.set_cookie(COOKIE, client.get_cookie(COOKIE).value, domain=host)
    response = client.get("/", headers={"Host": host})
    assert f"{COOKIE}=" in response.request.headers.get("Cookie", "")
    return response


def _stolen_code_pasted_into_own_callback(client: Any, app: Flask) -> Any:
    victim = app.test_client()
    code, _ = start_login(victim)  # the victim's code, taken before the victim's browser delivers it
    attacker_state = query_of(client.get("/login").headers["Location"])["state"]
    return client.get(f"/callback?code={code}&state={attacker_state}")


def _login_flood_from_one_cookie(client: Any, app: Flask) -> Any:
    sizes = []
    # The bound of 3 pending logins holds long before the 30th: the next 270 must not grow the record at all.
    for count in range(1, 301):
        response = client.get("/login")
        if count in (30, 300):
            sizes.append(record_size(app, client.get_cookie(COOKIE).value))
    assert 0 < sizes[0] < 4096 and abs(sizes[1] - sizes[0]) <= 16, sizes  # times differ in their last digits
    return response


class RunsCode:
    """A pickle that runs a command when it is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _planted(make: Callable[[Path], bytes | object]) -> Callable[[Any, Flask], Any]:
    def run(client: Any, app: Flask) -> Any:
        client.get("/login")
        sid = client.get_cookie(COOKIE).value
        marker = Path(app.config["SESSION_FILE_DIR"]).parent / "pwned"
        victim = marker.with_suffix(".json")  # what a planted tokens_key that names a path would delete
        victim.write_text("{}")
        plant_record(app, sid, make(marker))
        first, second = client.get("/"), client.get("/session")
        assert not marker.exists(), "a planted record ran code in the worker"
        assert victim.exists(), "a planted record made the portal delete a file outside its store"
        assert second.status_code == 302 and record_size(app, sid) == 0, "the planted record is still read"
        return first
    return run


def _logout_without_csrf(client: Any, app: Flask) -> Any:
    return client.post("/logout")


def _logout_with_another_sessions_csrf(client: Any, app: Flask) -> Any:
    other = app.test_client()
    portal_login(other)
    return client.post("/logout", data={"csrf_token": csrf_token(other.get("/").text)})


def _login_with_host(headers: dict[str, str]) -> Callable[[Any, Flask], Any]:
    def run(client: Any, app: Flask) -> Any:
        response = client.get("/login", headers=headers)
        assert "evil" not in response.headers.get("Location", ""), "the callback URL names the attacker's host"
        return response
    return run


SCRIPT = "<script>alert(1)</script>"
ATTACKS = [
    Attack("state-mismatch", _with_real_code(lambda c, s: f"code={c}&state=attacker-state"), 400),
    Attack("state-missing", _with_real_code(lambda c, s: f"code={c}"), 400),
    Attack("state-expired", _with_real_code(lambda c, s: f"code={c}&state={s}", expire_pending_logins), 400),
    Attack("state-from-another-browser", _code_from_another_browser, 400),
    Attack("state-duplicated", _with_real_code(lambda c, s: f"code={c}&state={s}&state=other"), 400),
    Attack("code-duplicated", _with_real_code(lambda c, s: f"code={c}&code=other&state={s}"), 400),
    Attack("code-missing", _with_real_code(lambda c, s: f"state={s}"), 400),
    Attack("huge-code-and-state", _callback(f"code={'c' * 20000}&state={'s' * 20000}"), 400),
    Attack("binary-code-and-state", _callback("code=%00%ff%fe%01&state=%00%c3%28"), 400),
    Attack("unicode-code-and-state", _callback("code=%E2%9C%93%F0%9F%98%80&state=%E2%80%AE%E2%9C%93"), 400),
    Attack("error-description-script", _callback(f"error=access_denied&error_description={quote(SCRIPT)}"), 400,
           payloads=[SCRIPT]),
    Attack("error-code-script", _callback(f"error={quote(SCRIPT)}"), 400, payloads=[SCRIPT]),
    Attack("replayed-callback-after-login", _replayed_callback, 400, logged_in=True),
    Attack("forged-session-cookie", _forged_cookie, 302),
    Attack("valid-id-planted-before-one-login", _valid_id_planted_before_login, 302),
    Attack("pre-login-id-reused-after-one-login", _pre_login_id_reused_after_one_login, 302),
    Attack("https-logout-posted-from-another-site", _https_logout_posted_from_another_site, 400, logged_in=True),
    Attack("stolen-code-in-own-callback-pkce", _stolen_code_pasted_into_own_callback, 400),
    Attack("error-text-without-a-state", _callback(f"error=server_error&error_description={quote(SCRIPT)}+0800"), 400,
           payloads=["server_error", "0800"]),
    Attack("login-flood-from-one-cookie", _login_flood_from_one_cookie, 302),
    Attack("planted-pickle-record", _planted(lambda marker: pickle.dumps({"x": RunsCode(marker)})), 200),
    Attack("planted-garbage-record", _planted(lambda marker: b"\x00\xff not a record"), 200),
    Attack("planted-list-record", _planted(lambda marker: [1, 2]), 200),
    Attack("planted-wrong-types", _planted(lambda marker: {"tokens_key": 5, "user": "x", "login_at": "now"}), 200),
    Attack("planted-token-key-path", _planted(lambda marker: {"tokens_key": f"../../{marker.name}", "login_at": 0.0,
                                                             "seen_at": 0.0, "user": {}}), 200),
    Attack("planted-foreign-value", _planted(lambda marker: {"_state_mediaflow_x": 1, "pending_logins": {}}), 200),
    Attack("planted-bad-flash", _planted(lambda marker: {"_flashes": [5], "pending_logins": {}}), 200),
    # Times that would never time out.
    Attack("planted-endless-times", _planted(lambda marker: {"login_at": float("nan"), "seen_at": float("inf"),
                                                            "pending_logins": {}}), 200),
    Attack("planted-bool-time", _planted(lambda marker: {"login_at": True, "pending_logins": {}}), 200),
    Attack("logout-without-csrf", _logout_without_csrf, 400, logged_in=True),
    Attack("logout-with-another-sessions-csrf", _logout_with_another_sessions_csrf, 400, logged_in=True),
    Attack("logout-by-get", lambda client, app: client.get("/logout"), 405, logged_in=True),
    Attack("callback-by-post", lambda client, app: client.post("/callback?code=a&state=b"), 405),
    Attack("logout-by-delete", lambda client, app: client.delete("/logout"), 405, logged_in=True),
    Attack("post-to-no-page", lambda client, app: client.post("/no-such-page", data={"x": "1"}), 404, logged_in=True),
    # Without MEDIAFLOW_REDIRECT_URI the callback URL is built from the Host: only trusted hosts may name it.
    Attack("host-header", _login_with_host({"Host": "evil.example"}), 400, payloads=["evil.example"]),
    Attack("host-header-with-port", _login_with_host({"Host": "evil.example:443"}), 400, payloads=["evil.example"]),
    Attack("host-header-on-a-logged-in-page", lambda c, a: _logged_in_cookie_to_host(c, "evil.example"), 400,
           logged_in=True, payloads=["evil.example"]),
    Attack("forwarded-host-without-trusted-proxy", _login_with_host({"X-Forwarded-Host": "evil.example"}), 302),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_refused_without_reflection_and_without_making_or_losing_a_session(app: Flask,
                                                                                     attack: Attack) -> None:
    client = app.test_client()
    if attack.logged_in:
        portal_login(client)
    before = token_sets(app)
    response = attack.run(client, app)
    assert response.status_code == attack.status
    assert "Traceback" not in response.text
    for payload in attack.payloads:
        assert payload not in response.text
    if attack.logged_in:
        assert client.get("/session").status_code == 200, "the attack cost the user their session"
        assert token_sets(app) >= before
    else:
        assert client.get("/session").status_code == 302
        assert token_sets(app) == before, "the attack created a logged-in session"


@pytest.mark.parametrize(
    ("config", "host", "status"),
    [({}, "localhost:5000", 302), ({}, "127.0.0.1:8000", 302), ({}, "portal.example", 400),
     ({"MEDIAFLOW_REDIRECT_URI": "https://portal.example/callback"}, "portal.example", 302),
     ({"MEDIAFLOW_REDIRECT_URI": "https://portal.example/callback"}, "127.0.0.1:8000", 302),
     ({"MEDIAFLOW_REDIRECT_URI": "https://portal.example/callback"}, "evil.example", 400),
     ({"TRUSTED_HOSTS": ["intranet.example"]}, "intranet.example", 302)],
)
def test_only_trusted_hosts_are_answered(make_app: Callable[..., Flask], config: dict[str, Any], host: str,
                                         status: int) -> None:
    client = make_app(**config).test_client()
    assert client.get("/healthz", headers={"Host": host}).status_code == (200 if status == 302 else 400)
    login = client.get("/login", headers={"Host": host})
    assert login.status_code == status
    if status == 302 and "MEDIAFLOW_REDIRECT_URI" not in config:
        assert query_of(login.headers["Location"])["redirect_uri"] == f"http://{host}/callback"
    if status == 400:
        assert "Traceback" not in login.text and "Go to the portal" in login.text


def _gunicorn(tmp_path: Path, bind: str, **settings: str) -> subprocess.Popen[str]:
    """The Dockerfile's CMD from a staged image folder, in demo mode (no client id)."""
    app_dir = stage_image(tmp_path / "image")
    env = env_with(GUNICORN_BIND=bind, GUNICORN_WORKERS="1", SESSION_FILE_DIR=str(tmp_path / "sessions"), **settings)
    return subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), *dockerfile_cmd()[1:]], cwd=app_dir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.gunicorn
def test_silent_demo_mode_on_a_public_address_is_refused(tmp_path: Path) -> None:
    # on_starting refuses before gunicorn binds: nothing ever listens on 0.0.0.0 here.
    process = _gunicorn(tmp_path, f"0.0.0.0:{free_port()}")
    try:
        out, err = process.communicate(timeout=60)
    finally:
        stop(process)  # type: ignore[arg-type]
    assert process.returncode != 0
    refusals = [line for line in err.splitlines() if "cannot start" in line]
    assert refusals == [refusals[0]] and "MEDIAFLOW_CLIENT_ID is not set" in refusals[0]
    assert "Traceback" not in err and "Booting worker" not in out + err


@pytest.mark.gunicorn
def test_demo_mode_on_a_public_address_starts_when_asked_for(tmp_path: Path) -> None:
    port = free_port()
    process = _gunicorn(tmp_path, f"0.0.0.0:{port}", MEDIAFLOW_DEMO="true")
    try:
        # Listening on every interface: answer one loopback request, then stop at once.
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process)  # type: ignore[arg-type]
    finally:
        stop(process)  # type: ignore[arg-type]
        out, _ = process.communicate(timeout=30)
    assert out.count("Demo mode: signing in against the emulator") == 1


BAD_NEXT = ["//evil.example", "/\\evil.example", "https://evil.example", "javascript:alert(1)",
            "/%0d%0aSet-Cookie:%20x=1", "/\r\nSet-Cookie: x=1", "/" + "a" * 5000, "///evil.example",
            "\\\\evil.example", "http:evil.example", " //evil.example", "/\tevil"]


@pytest.mark.parametrize("gate_hosts", [None, ["app.example.com", ".apps.example.com"]], ids=["", "gate-hosts"])
@pytest.mark.parametrize("next_url", BAD_NEXT)
def test_next_never_leads_off_site(make_app: Callable[..., Flask], backend: str, next_url: str,
                                   gate_hosts: list[str] | None) -> None:
    client = make_app(backend=backend, GATE_ALLOWED_REDIRECT_HOSTS=gate_hosts).test_client()
    login = client.get(f"/login?next={quote(next_url, safe='')}")
    assert "evil" not in urlsplit(login.headers["Location"]).netloc
    code, state = query_of(sign_in(login.headers["Location"]).headers["Location"]).values()
    landed = client.get(f"/callback?code={code}&state={state}")
    assert landed.status_code == 302
    assert landed.headers["Location"] == "/"


@pytest.mark.parametrize("next_url", ["/account", "/account?tab=1#x", "/session"])
def test_next_accepts_local_paths(app: Flask, next_url: str) -> None:
    client = app.test_client()
    assert portal_login(client, next_url=quote(next_url, safe="")).headers["Location"] == next_url


@pytest.mark.parametrize(("pkce", "status", "logged_in"), [(True, 400, False), (False, 302, True)],
                         ids=["pkce-on-refused", "pkce-off-attacker-logged-in"])
def test_a_stolen_code_in_the_attackers_own_callback_needs_pkce_to_fail(make_app: Callable[..., Flask], pkce: bool,
                                                                       status: int, logged_in: bool) -> None:
    """Code injection (RFC 9700 4.5): without PKCE nothing ties the code to the browser that started the login."""
    app = make_app(MEDIAFLOW_PKCE=pkce)
    attacker = app.test_client()
    assert _stolen_code_pasted_into_own_callback(attacker, app).status_code == status
    session = attacker.get("/session")
    assert (session.status_code == 200) is logged_in
    if logged_in:
        assert session.json["user"]["name"] == "Demo User"  # the victim


def test_an_untrusted_host_is_refused_before_any_hook_runs(make_app: Callable[..., Flask], backend: str,
                                                           clock: FakeClock, emulator: Emulator) -> None:
    app = make_app("short", backend=backend, clock=clock)
    client = app.test_client()
    portal_login(client)
    clock.advance(2.1)  # the token is due: load_session would refresh it, and write the session
    response = _logged_in_cookie_to_host(client, "evil.example")
    assert response.status_code == 400 and "does not answer to this host name" in response.text
    assert emulator.refreshes() == 0
    assert client.get("/session").status_code == 200 and emulator.refreshes() == 1


def test_a_planted_next_in_a_pending_login_never_leads_off_site(app: Flask) -> None:
    client = app.test_client()
    login = client.get("/login")
    state = query_of(login.headers["Location"])["state"]
    with client.session_transaction() as session:
        session[PENDING_LOGINS] = {state: {**session[PENDING_LOGINS][state], "next": "https://evil.example/"}}
    answer = sign_in(login.headers["Location"])
    landed = client.get(answer.headers["Location"].split("localhost", 1)[1])
    assert landed.status_code == 302 and landed.headers["Location"] == "/"


@pytest.mark.parametrize("stored", [b'{"access_token": 5, "refresh_token": null, "expires_at": 1, "lifetime": 1}',
                                    b'{"access_token": "a", "refresh_token": "r", "expires_at": "soon", "lifetime": 1}',
                                    b'["a", "r"]', b"\xff\xfe not json"],
                         ids=["number-token", "text-expiry", "list", "not-utf8"])
def test_a_planted_token_set_ends_the_session_politely(make_app: Callable[..., Flask], backend: str,
                                                       clock: FakeClock, stored: bytes) -> None:
    app = make_app("short", backend=backend, clock=clock)
    client = app.test_client()
    portal_login(client)
    with client.session_transaction() as session:
        key = session["tokens_key"]
    if backend == "redis":
        app.config["SESSION_REDIS"].set(f"mediaflow:tokens:{key}", stored)
    else:
        name = hashlib.sha256(key.encode()).hexdigest() + ".json"
        path = Path(app.config["SESSION_FILE_DIR"]) / "tokens" / name
        assert path.exists()
        path.write_bytes(stored)
        os.utime(path, (time.time() + 600, time.time() + 600))
    clock.advance(2.1)  # due: the store is read
    for _ in range(2):
        page = client.get("/account")
        assert page.status_code in (302, 401) and "Traceback" not in page.text


def test_one_callback_sent_six_times_at_once_trades_the_code_once(app: Flask, emulator: Emulator) -> None:
    client = app.test_client()
    code, state = start_login(client)
    cookie = client.get_cookie(COOKIE).value
    tabs = []
    for _ in range(6):
        tab = app.test_client()
        tab.set_cookie(COOKIE, cookie)
        tabs.append(tab)
    gate = threading.Barrier(len(tabs))

    def deliver(tab: Any) -> int:
        gate.wait()
        return int(tab.get(f"/callback?code={code}&state={state}").status_code)

    with ThreadPoolExecutor(len(tabs)) as pool:
        statuses = sorted(pool.map(deliver, tabs))
    assert statuses == [302, 400, 400, 400, 400, 400]
    exchanges = emulator.stats()["token"]["authorization_code"]
    assert exchanges["ok"] + exchanges["failed"] == 1  # Mediaflow saw the code once
