"""The Dockerfile's CMD, run outside Docker with the environment compose gives it and a real redis-server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import start_redis
from tests.support import (
    PORTAL_PORTS,
    ROOT,
    Emulator,
    dockerfile_cmd,
    env_with,
    http_login,
    portal_settings,
    stage_image,
    start_portal,
    stop,
)

REDIS_PASSWORD = "compose-redis-password-0123456789"


def test_compose_gives_redis_a_password_and_the_portal_a_url_that_carries_it() -> None:
    # A Redis that anyone on the network can write to holds everyone's sessions: compose never runs one.
    compose = (ROOT / "compose.yaml").read_text()
    assert '"--requirepass", "${REDIS_PASSWORD:?' in compose
    assert "REDIS_URL: redis://:${REDIS_PASSWORD}@redis:6379/0" in compose
    assert "REDISCLI_AUTH: ${REDIS_PASSWORD}" in compose  # the healthcheck's redis-cli authenticates too


def test_compose_passes_every_setting_in_env_to_the_portal() -> None:
    # Listing settings one by one under environment: dropped the allow-lists (everyone got in).
    portal = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["portal"]
    assert portal["env_file"] == [{"path": ".env", "required": False}]
    assert portal["environment"]["GUNICORN_BIND"] == "0.0.0.0:8000"
    # .env's emulator address is the host's loopback, for make run: the demo container has its own.
    demo = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["portal-demo"]
    assert demo["environment"]["MEDIAFLOW_EMULATOR_URL"] == "http://emulator:5001"


def test_compose_serves_a_metrics_port_to_other_containers_and_publishes_it_to_no_one() -> None:
    portal = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["portal"]
    # The container's loopback would be reachable from no other container, Prometheus's included.
    assert portal["environment"]["METRICS_BIND_HOST"] == "0.0.0.0"  # noqa: S104 - in the container, on purpose
    assert portal["ports"] == ["127.0.0.1:5000:8000"]  # the portal's port only: the metrics port has no allow-list


def compose_environment(emulator: Emulator, port: int, redis_url: str) -> dict[str, str]:
    """What compose.yaml's portal service sets, with the emulator standing in for Mediaflow."""
    return portal_settings(emulator, "portal-test", port, SESSION_BACKEND="redis", REDIS_URL=redis_url,
                           GUNICORN_WORKERS="4", GUNICORN_THREADS="4", LOG_FORMAT="json", TRUSTED_PROXY_COUNT="0")


@pytest.mark.gunicorn
def test_dockerfile_cmd_serves_health_readiness_and_a_login(emulator: Emulator, tmp_path: Path) -> None:
    redis = start_redis(tmp_path, password=REDIS_PASSWORD)  # as compose runs it: REDIS_URL carries the password
    port = PORTAL_PORTS[2]
    portal = start_portal(tmp_path, port, compose_environment(emulator, port, redis.url))
    try:
        assert requests.get(f"{portal.url}/healthz", timeout=5).json() == {"status": "ok"}
        assert requests.get(f"{portal.url}/readyz", timeout=5).json() == {"status": "ready"}
        browser = http_login(portal.url)
        assert "Welcome, Demo User" in browser.get(f"{portal.url}/", timeout=5).text
        # compose's TRUSTED_PROXY_COUNT=0: an id from outside is not believed, the portal makes its own.
        response = browser.get(f"{portal.url}/session", headers={"X-Request-ID": "trace-42"}, timeout=5)
        request_id = response.headers["X-Request-ID"]
        assert request_id != "trace-42" and len(request_id) == 16

        redis.client.shutdown(save=False)
        redis.process.wait(timeout=10)
        ready = requests.get(f"{portal.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert "Redis" in ready.json()["reason"]
        assert requests.get(f"{portal.url}/healthz", timeout=5).status_code == 200
        page = browser.get(f"{portal.url}/", timeout=10)
        assert page.status_code == 503 and "session store" in page.text
        # Summed over the 4 workers, whichever answered: the failed /readyz and the 503 page.
        metrics = requests.get(f"{portal.url}/metrics", timeout=10).text
        assert re.search(r"^mediaflow_portal_session_store_errors_total 2\.0$", metrics, re.M), metrics
        assert re.search(r'^mediaflow_portal_logins_total\{outcome="ok"\} 1\.0$', metrics, re.M)
    finally:
        stop(portal.process)
        redis.client.close()
        stop(redis.process)

    assert REDIS_PASSWORD not in portal.logs()
    app_lines = [json.loads(line) for line in portal.logs().splitlines() if line.startswith("{")]
    logins = [line for line in app_lines if line["message"].startswith("Login succeeded")]
    assert logins and logins[0]["level"] == "info" and logins[0]["request_id"] != "-"
    audited = [line for line in app_lines if line.get("event") == "login"]
    assert [(line["outcome"], line["user_id"], line["request_id"]) for line in audited] == [
        ("ok", 1, logins[0]["request_id"])]
    assert any(f"rid={request_id}" in line for line in portal.logs().splitlines()), "access log carries the request id"


@dataclass(frozen=True)
class Stop:
    """Signals an operator sends gunicorn, what is going on meanwhile, and what a person sees."""

    id: str
    sends: tuple[tuple[signal.Signals, bool], ...]  # each signal, and whether to the terminal's whole group
    page_delay: float | None  # a page in flight whose Mediaflow call takes this long, or None: new connections
    page_answers: bool  # whether that page still gets its answer; if not, it ends within 1.5 s of the last signal


CTRL_C = (signal.SIGINT, True)  # what a terminal sends: the master and each worker at once
STOPS = [
    # gunicorn's own quick quit could hang a worker taking a connection until the graceful timeout (10 s here).
    Stop("ctrl-c-amid-new-connections", (CTRL_C,), None, False),
    # One press lets the requests in flight finish: a refresh cut off midway could lose a rotated token.
    Stop("ctrl-c-with-a-page-in-flight", (CTRL_C,), 2.0, True),
    Stop("ctrl-c-twice-with-a-page-in-flight", (CTRL_C, CTRL_C), 5.0, False),
    # `docker stop`, then a quick stop asked of the master: it kills a worker still there 2 s later, so they leave.
    Stop("sigterm-then-sigint-to-the-master", ((signal.SIGTERM, False), (signal.SIGINT, False)), 5.0, False),
    # `docker run` without -t passes Ctrl-C to the master alone.
    Stop("sigint-to-the-master-twice", ((signal.SIGINT, False), (signal.SIGINT, False)), 5.0, False),
]


@pytest.mark.gunicorn
@pytest.mark.parametrize("case", STOPS, ids=[case.id for case in STOPS])
def test_gunicorn_stops_as_asked_and_no_worker_hangs(emulator: Emulator, tmp_path: Path, case: Stop) -> None:
    """Ctrl-C once waits for the requests in flight, twice does not; no worker is ever killed by the master.

    gunicorn's own gthread handler for a quick stop could hang a worker that was taking a connection
    (gunicorn.conf.py's post_worker_init says why). That race depends on timing: Ctrl-C amid new connections
    hung 2 rounds of 15 on the old code, so the first row may miss it; none of 100 hung with the fix.
    """
    port = PORTAL_PORTS[2]
    settings = portal_settings(emulator, "portal-test", port, GUNICORN_WORKERS="2", GUNICORN_GRACEFUL_TIMEOUT="10",
                               MEDIAFLOW_READ_TIMEOUT="10", SESSION_FILESYSTEM_ALLOW_WORKERS="true",
                               SESSION_FILE_DIR=str(tmp_path / "sessions"))
    portal = start_portal(tmp_path, port, settings, own_group=True)
    arriving = threading.Event()
    background: list[threading.Thread] = []
    answers: list[tuple[int | str, float]] = []
    try:
        if case.page_delay is None:
            arriving.set()
            background.append(threading.Thread(target=connect_while, args=(port, arriving)))
            background[0].start()
            time.sleep(0.3)
        else:
            browser = http_login(portal.url)
            emulator.fault(endpoint="api", kind="delay", delay=case.page_delay, count=1)
            background.append(threading.Thread(target=get_into, args=(browser, f"{portal.url}/account", answers)))
            background[0].start()
            wait_until(lambda: emulator.stats()["in_flight"] == 1)  # the page waits on its Mediaflow call
        began = time.monotonic()
        for number, (sent, to_group) in enumerate(case.sends):
            if number:  # the master has taken the one before: two signals pending at once would count as one
                wait_until(lambda taken=number: portal.logs().count("Handling signal") >= taken)
            last_sent = time.monotonic()
            if to_group:
                os.killpg(portal.process.pid, sent)
            else:
                portal.process.send_signal(sent)
        assert portal.process.wait(timeout=30) == 0
        # A hung worker held the master for the 10 s graceful timeout; a kept-alive connection lingers 2 s.
        assert time.monotonic() - last_sent < 8
        # No worker outlives its master, one still booting included (it leaves once it sees the master gone).
        wait_until(lambda: not group_alive(portal.process.pid))
    finally:
        arriving.clear()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(portal.process.pid, signal.SIGKILL)
        portal.process.wait()
        for thread in background:
            if thread.ident is not None:
                thread.join()
    assert "SIGKILL" not in portal.logs() and "Traceback" not in portal.logs()
    if case.page_delay is not None:
        [(answer, answered_at)] = answers
        assert (answer == 200) == case.page_answers, answer
        assert answered_at > began  # it was in flight when the stop began
        if not case.page_answers:  # not after the page's own time, nor the master's 2 s before it kills
            assert answered_at - last_sent < 1.5


def wait_until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "waited too long"
        time.sleep(0.02)


def get_into(browser: requests.Session, url: str, answers: list[tuple[int | str, float]]) -> None:
    """GET url and note its status, or the kind of error that ended it, with when."""
    try:
        answers.append((browser.get(url, timeout=30).status_code, time.monotonic()))
    except requests.RequestException as error:
        answers.append((error.__class__.__name__, time.monotonic()))


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def connect_while(port: int, arriving: threading.Event) -> None:
    """Open a new connection after another, as a busy server sees them, while arriving is set."""
    while arriving.is_set():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")


@pytest.mark.gunicorn
@pytest.mark.parametrize(
    ("settings", "message"),
    [({"GUNICORN_WORKERS": "4", "SESSION_BACKEND": "filesystem"}, "SESSION_BACKEND=filesystem with 4 workers"),
     ({"MEDIAFLOW_CLIENT_SECRET": "a-secret-without-an-id"}, "MEDIAFLOW_CLIENT_SECRET is set without"),
     ({"MEDIAFLOW_CLIENT_ID": "c", "MEDIAFLOW_CLIENT_SECRET": "s", "SECRET_KEY": "short"}, "SECRET_KEY is too short"),
     ({"GUNICORN_WORKERS": "four"}, "GUNICORN_WORKERS='four'"),
     ({"SESSION_FILE_DIR": "/proc/version"}, "SESSION_FILE_DIR='/proc/version' cannot hold the sessions")],
    ids=["filesystem-and-workers", "secret-without-id", "weak-secret-key", "unreadable-setting", "session-folder"],
)
def test_a_setting_the_portal_refuses_stops_gunicorn_at_once_with_one_line(tmp_path: Path, settings: dict[str, str],
                                                                          message: str) -> None:
    app_dir = stage_image(tmp_path / "image")
    pidfile = tmp_path / "gunicorn.pid"
    (tmp_path / "tmp").mkdir()
    env = env_with(GUNICORN_BIND=f"127.0.0.1:{PORTAL_PORTS[2]}", GUNICORN_CMD_ARGS=f"--pid {pidfile}",
                   TMPDIR=str(tmp_path / "tmp"), **settings)
    command = dockerfile_cmd()
    result = subprocess.run([str(Path(sys.executable).parent / "gunicorn"), *command[1:]], cwd=app_dir, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    refusals = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(refusals) == 1 and message in refusals[0], result.stderr  # once, not once per worker boot
    assert "Booting worker" not in result.stderr and "Traceback" not in result.stderr
    # Stopped as gunicorn stops itself: the pidfile it wrote before the check is gone, and the metrics folder.
    assert not pidfile.exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_product_image_ships_no_emulator_and_a_plain_build_makes_it(tmp_path: Path) -> None:
    image = stage_image(tmp_path / "image")
    assert not (image / "emulator").exists() and (image / "portal").is_dir()
    imported = subprocess.run([sys.executable, "-c", "import app, portal.auth, portal.config; import emulator"],
                              cwd=image, env=env_with(PYTHONPATH=str(image)), capture_output=True, text=True,
                              timeout=60)
    assert "No module named 'emulator'" in imported.stderr  # the product imports, and the emulator is not there
    stages = [line.split() for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")]
    assert stages[-1] == ["FROM", "portal", "AS", "production"]  # `docker build .` builds the last stage
    assert ["FROM", "portal", "AS", "demo"] in stages


def test_dockerignore_keeps_secrets_venvs_caches_and_tests_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    for entry in (".env", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", "tests", "instance"):
        assert entry in ignored, entry


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "hadolint"), str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
