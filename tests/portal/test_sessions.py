"""Session records: the session cookie among others, lifetimes in the store, and the filesystem sweep."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flask import Flask

from portal.sessions import LOGIN_LIFETIME
from portal.stores import SWEEP_INTERVAL
from portal.tokens import TokenSet
from tests.conftest import FakeClock
from tests.support import Emulator, csrf_token, portal_login


def test_the_session_cookie_is_found_among_other_cookies(client: Any) -> None:
    # In demo mode the emulator shares the host, so the browser sends its cookie to the portal too.
    portal_login(client)
    client.set_cookie("mediaflow_emulator", "x" * 40)
    client.set_cookie("theme", '"dark; blue"')
    page = client.get("/session")
    assert page.status_code == 200 and page.json["tokens"]["refresh_token_held"] is True
    assert "; " in page.request.headers["Cookie"]  # all three went in one Cookie header


def session_records(app: Flask) -> dict[str, float]:
    """Every session record in the store, with the seconds it has left to live."""
    if app.config["SESSION_BACKEND"] == "redis":
        store = app.config["SESSION_REDIS"]
        return {key.decode(): float(store.ttl(key)) for key in store.scan_iter("mediaflow:session:*")}
    folder = Path(app.config["SESSION_FILE_DIR"]) / "sessions"
    return {path.name: path.stat().st_mtime - time.time() for path in folder.iterdir()}


def test_logins_without_a_cookie_leave_records_that_live_as_long_as_a_login(app: Flask) -> None:
    client = app.test_client()
    for _ in range(100):
        assert client.get("/login").status_code == 302
        client.delete_cookie("mediaflow_portal")
    records = session_records(app)
    assert len(records) == 100
    assert all(0 < left <= LOGIN_LIFETIME for left in records.values())


def test_a_logged_in_session_lives_its_whole_lifetime(app: Flask) -> None:
    portal_login(app.test_client())
    [left] = session_records(app).values()
    assert left > app.config["SESSION_MAX_LIFETIME"]


def test_the_sweep_removes_expired_records_token_sets_and_idle_locks_only(make_app: Callable[..., Flask]) -> None:
    app = make_app(backend="filesystem")
    interface = app.session_interface
    base = Path(app.config["SESSION_FILE_DIR"])
    for _ in range(20):  # abandoned logins
        app.test_client().get("/login")
    client = app.test_client()
    portal_login(client)
    store = app.extensions["mediaflow_tokens"].store
    with client.session_transaction() as session:
        key = session["tokens_key"]
    with store.lock(key, timeout=1):  # leaves its lock file, as a refresh does
        pass
    ended = TokenSet.from_response({"access_token": "a", "expires_in": 60}, now=time.time())
    store.put("ended-session", ended, ttl=1)
    with store.lock("ended-session", timeout=1):
        pass
    (base / "sessions" / ".tmp-crashed").write_text("{}")  # a draft that a crash left behind
    (base / "sessions" / "a-folder").mkdir()  # not ours: the sweep goes past it
    os.utime(base / "sessions" / "a-folder", (0, 0))
    assert interface.sweep(time.time()) == 0  # nothing has expired yet, and a fresh draft may be in use

    removed = interface.sweep(time.time() + LOGIN_LIFETIME + SWEEP_INTERVAL + 1)
    sessions_left = sorted(p.name for p in (base / "sessions").iterdir())
    tokens_left = sorted(p.name for p in (base / "tokens").iterdir())
    # The abandoned logins, the draft, the ended token set and its lock, and the login's spent state.
    assert removed == 20 + 1 + 2 + 1
    assert len(sessions_left) == 2 and "a-folder" in sessions_left  # and the logged-in session
    named = hashlib.sha256(key.encode()).hexdigest()
    assert tokens_left == sorted([f"{named}.json", f"{named}.lock"])
    assert client.get("/session").status_code == 200


def test_a_request_in_flight_during_logout_does_not_bring_the_session_back(make_app: Callable[..., Flask],
                                                                            backend: str, clock: FakeClock,
                                                                            emulator: Emulator) -> None:
    app = make_app(backend=backend, clock=clock)
    browser = app.test_client()
    portal_login(browser)
    cookie = browser.get_cookie("mediaflow_portal").value
    other_tab = app.test_client()
    other_tab.set_cookie("mediaflow_portal", cookie)
    clock.advance(61)  # the slow request will mark the session seen, so it writes the session back
    emulator.fault(endpoint="api", kind="delay", delay=1.5)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(other_tab.get, "/account")  # waits on Mediaflow's /me
        deadline = time.monotonic() + 5
        while emulator.stats()["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        token = csrf_token(browser.get("/").text)
        assert browser.post("/logout", data={"csrf_token": token}).status_code == 302
        assert slow.result().status_code == 200  # it finishes after the logout, and saves its session
    again = app.test_client()
    again.set_cookie("mediaflow_portal", cookie)
    assert again.get("/session").status_code == 302
