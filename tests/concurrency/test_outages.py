"""Mediaflow and Redis outages: what the user gets, and that no session is lost."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal import sessions
from tests.conftest import FakeClock, start_redis
from tests.support import Emulator, csrf_token, portal_login, stop

FAULTS = {
    "timeout": {"kind": "delay", "delay": 1.5},
    "500": {"kind": "status", "status": 500},
    "503": {"kind": "status", "status": 503},
    "non-json": {"kind": "garbage"},
    "dropped": {"kind": "drop"},
}


@pytest.fixture
def logged_in(make_app: Callable[..., Flask], clock: FakeClock) -> Any:
    # Not the rotating client: a refresh that times out here may still succeed at Mediaflow, and with
    # rotation its new refresh token is lost to any client (see README, "Refresh under load").
    app = make_app("short", MEDIAFLOW_READ_TIMEOUT=0.5, clock=clock)
    client = app.test_client()
    portal_login(client)
    return client


def token_calls(emulator: Emulator) -> int:
    """Token requests the emulator has answered, faulted ones included."""
    return sum(n for outcomes in emulator.stats()["token"].values() for n in outcomes.values())


def token_calls_once_settled(emulator: Emulator, expected: int) -> int:
    """token_calls, once at least the expected ones are in: a delayed request is counted when it ends."""
    deadline = time.monotonic() + 30
    while token_calls(emulator) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return token_calls(emulator)


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_refresh_failing_while_the_token_is_valid_serves_the_request_and_retries_later(
    logged_in: Any, emulator: Emulator, fault: dict[str, Any], caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    clock.advance(2.2)  # due (less than half of 4 s left), not yet expired
    emulator.fault(endpoint="token", **fault)
    response = logged_in.get("/session")
    assert response.status_code == 200
    assert response.json["tokens"]["last_refreshed"] is None
    assert "Token refresh failed" in caplog.text
    assert token_calls_once_settled(emulator, expected=2) == 2  # the login's exchange and the failed refresh
    # Backoff: the next request does not call Mediaflow again at once.
    clock.advance(0.5)
    assert logged_in.get("/session").status_code == 200
    assert token_calls(emulator) == 2
    # Once expired, the portal retries; Mediaflow is back, so the session goes on.
    clock.advance(1.5)
    assert logged_in.get("/session").json["tokens"]["last_refreshed"] is not None
    assert emulator.stats()["reuse_detected"] == 0


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_refresh_failing_after_expiry_is_a_503_with_try_again_and_keeps_the_session(
    logged_in: Any, emulator: Emulator, fault: dict[str, Any], clock: FakeClock
) -> None:
    clock.advance(4.2)
    emulator.fault(endpoint="token", **fault)
    page = logged_in.get("/account")
    assert page.status_code == 503
    assert "Mediaflow is not answering right now" in page.text and "Try again" in page.text
    assert "Your session is kept" in page.text
    retry = logged_in.get("/account")
    assert retry.status_code == 200 and "demo@example.com" in retry.text


def test_invalid_grant_on_refresh_ends_the_mediaflow_session(logged_in: Any, emulator: Emulator,
                                                             clock: FakeClock) -> None:
    clock.advance(4.2)
    emulator.fault(endpoint="token", kind="oauth_error", error="invalid_grant")
    page = logged_in.get("/account")
    assert page.status_code == 401 and "Your Mediaflow session has ended" in page.text
    assert logged_in.get("/session").status_code == 302


def test_redis_stopped_while_the_portal_runs_is_a_503_and_the_session_survives(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    server = start_redis(tmp_path)
    try:
        app = make_app(SESSION_BACKEND="redis", REDIS_URL=server.url, MEDIAFLOW_READ_TIMEOUT=1.0,
                       MEDIAFLOW_CONNECT_TIMEOUT=1.0)
        client = app.test_client()
        portal_login(client)
        assert client.get("/session").status_code == 200
        token = csrf_token(client.get("/").text)

        server.client.shutdown(save=True)  # Redis writes its data to disk and stops
        server.process.wait(timeout=10)
        for path in ("/", "/account", "/session"):
            page = client.get(path)
            assert page.status_code == 503, path
            assert "cannot reach its session store" in page.text
            assert "Traceback" not in page.text
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200
        logout = client.post("/logout", data={"csrf_token": token})  # the store's 503, not "this form has expired"
        assert logout.status_code == 503 and "cannot reach its session store" in logout.text

        server.client.close()
        server = start_redis(tmp_path, port=server.port)  # the same data folder: the session is back
        assert client.get("/session").status_code == 200
        assert client.get("/readyz").status_code == 200
    finally:
        sessions.close(app)
        server.client.close()
        stop(server.process)
