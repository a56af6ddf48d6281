"""Refresh under parallel requests: gunicorn with 4 workers, one refresh, no lost update, no forced logout."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import RedisServer
from tests.support import PORTAL_PORTS, Emulator, Portal, http_login, portal_settings, start_portal, stop

pytestmark = pytest.mark.gunicorn


@pytest.fixture
def portal(request: pytest.FixtureRequest, emulator: Emulator, tmp_path: Path) -> Iterator[Portal]:
    backend, workers, client_id = request.param
    port = PORTAL_PORTS[0]
    extra = {"SESSION_BACKEND": backend, "GUNICORN_WORKERS": str(workers), "GUNICORN_THREADS": "8",
             "SESSION_IDLE_TIMEOUT": "10"}
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.client.flushdb()
        extra["REDIS_URL"] = server.url
    else:
        extra["SESSION_FILE_DIR"] = str(tmp_path / "sessions")
        extra["SESSION_FILESYSTEM_ALLOW_WORKERS"] = "true"  # one host: the file locks hold across workers
    running = start_portal(tmp_path, port, portal_settings(emulator, client_id, port, **extra))
    yield running
    stop(running.process)


def get_all_at_once(url: str, cookie: str, count: int) -> list[int]:
    """Send `count` requests with one session cookie, released together."""
    gate = threading.Barrier(count)

    def one(_: int) -> int:
        gate.wait()
        return requests.get(url, cookies={"mediaflow_portal": cookie}, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.parametrize("portal", [("redis", 4, "rotating-once"), ("filesystem", 4, "rotating-once")], indirect=True,
                         ids=["redis", "filesystem"])
def test_32_parallel_requests_after_expiry_cause_exactly_one_refresh(portal: Portal, emulator: Emulator) -> None:
    browser = http_login(portal.url)
    cookie = browser.cookies["mediaflow_portal"]
    time.sleep(4.2)  # the access token (4 s, rotating refresh tokens) has expired; the next one lives an hour

    statuses = get_all_at_once(f"{portal.url}/session", cookie, 32)

    assert statuses == [200] * 32
    assert emulator.refreshes() == 1
    after = browser.get(f"{portal.url}/session", timeout=10)
    assert after.status_code == 200
    assert after.json()["tokens"]["refresh_token_held"] is True
    assert after.json()["tokens"]["last_refreshed"] is not None
    assert "Welcome, Demo User" in browser.get(f"{portal.url}/", timeout=10).text
    assert emulator.stats()["reuse_detected"] == 0


@pytest.mark.parametrize("portal", [("redis", 2, "rotating"), ("filesystem", 2, "rotating")], indirect=True,
                         ids=["redis", "filesystem"])
def test_slow_request_that_writes_its_session_after_a_refresh_does_not_restore_old_tokens(
    portal: Portal, emulator: Emulator
) -> None:
    browser = http_login(portal.url)
    cookie = {"mediaflow_portal": browser.cookies["mediaflow_portal"]}
    time.sleep(1.2)
    # A: loads the session now (and marks it seen, so it will write it back), then waits 3 s on /me.
    emulator.fault(endpoint="api", kind="delay", delay=3.0)
    slow = ThreadPoolExecutor(max_workers=1).submit(requests.get, f"{portal.url}/", cookies=cookie, timeout=30)
    time.sleep(1.0)
    # B: the token is now due; B refreshes while A is still running.
    refreshed = requests.get(f"{portal.url}/session", cookies=cookie, timeout=30).json()["tokens"]
    assert refreshed["last_refreshed"] is not None
    assert slow.result().status_code == 200  # A finishes last and writes the session back

    # Had A put the old token set back, the next request would refresh with the spent refresh token:
    # Mediaflow (rotating) would see reuse, revoke the family and log the user out.
    for _ in range(3):
        now = requests.get(f"{portal.url}/session", cookies=cookie, timeout=30)
        assert now.status_code == 200
        assert now.json()["tokens"]["last_refreshed"] >= refreshed["last_refreshed"]
    stats = emulator.stats()
    assert stats["reuse_detected"] == 0
    assert stats["token"]["refresh_token"]["failed"] == 0
