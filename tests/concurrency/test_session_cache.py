"""Two replicas of 4 gunicorn workers on one Redis: sessions are served from each worker's copy,
and a logout anywhere is seen everywhere at once."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import RedisServer
from tests.support import PORTAL_PORTS, Emulator, Portal, csrf_token, http_login, portal_settings, start_portal, stop

pytestmark = pytest.mark.gunicorn

REQUESTS = 64


@pytest.fixture(scope="module")
def replicas(emulator: Emulator, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[list[Portal]]:
    """Shared by this file's tests: each logs in a session of its own, and 8 workers take seconds of CPU to start."""
    redis_server.client.flushdb()
    tmp_path = tmp_path_factory.mktemp("replicas")
    started: list[Portal] = []
    try:
        for number, port in enumerate(PORTAL_PORTS[:2]):
            settings = portal_settings(emulator, "portal-test", port, SESSION_BACKEND="redis",
                                       REDIS_URL=redis_server.url, GUNICORN_WORKERS="4", GUNICORN_THREADS="8")
            started.append(start_portal(tmp_path / f"replica-{number}", port, settings))
        yield started
    finally:
        for portal in started:
            stop(portal.process)


def statuses(url: str, cookie: str) -> list[int]:
    def one(_: int) -> int:
        answer = requests.get(url, cookies={"mediaflow_portal": cookie}, allow_redirects=False, timeout=30)
        return answer.status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(REQUESTS)))


def session_reads(server: RedisServer) -> int:
    return int(server.client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def test_requests_are_served_from_the_workers_copies(replicas: list[Portal], redis_server: RedisServer) -> None:
    browser = http_login(replicas[0].url)
    cookie = browser.cookies["mediaflow_portal"]
    statuses(f"{replicas[0].url}/session", cookie)  # every worker reads the record once

    before = session_reads(redis_server)
    assert statuses(f"{replicas[0].url}/session", cookie) == [200] * REQUESTS
    # At most a few re-reads (a worker that had not served this session yet), not one per request.
    assert session_reads(redis_server) - before < REQUESTS / 4


def test_a_logout_on_one_replica_ends_the_session_on_every_worker_of_both(replicas: list[Portal]) -> None:
    browser = http_login(replicas[0].url)
    cookie = browser.cookies["mediaflow_portal"]
    for portal in replicas:
        assert statuses(f"{portal.url}/session", cookie) == [200] * REQUESTS  # every worker holds a copy

    token = csrf_token(browser.get(f"{replicas[0].url}/", timeout=10).text)
    logout = browser.post(f"{replicas[0].url}/logout", data={"csrf_token": token}, allow_redirects=False,
                          timeout=10)
    assert logout.status_code == 302

    for portal in replicas:
        assert statuses(f"{portal.url}/session", cookie) == [302] * REQUESTS
