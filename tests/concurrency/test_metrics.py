"""/metrics under gunicorn with 2 workers: the sum over both, kept when one is killed, zero after a restart."""

from __future__ import annotations

import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from portal.metrics import UNMATCHED
from scripts.servers import free_port
from tests.support import PORTAL_PORTS, Emulator, Portal, http_login, portal_settings, start_portal, stop

pytestmark = pytest.mark.gunicorn


def scrape(portal: Portal) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = requests.get(f"{portal.url}/metrics", timeout=10)
    assert answer.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def requests_to(route: str, status: str = "200") -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("mediaflow_portal_requests_total", (("route", route), ("status", status)))


LOGINS_OK = ("mediaflow_portal_logins_total", (("outcome", "ok"),))


def test_metrics_are_the_sum_over_workers_and_outlive_a_killed_one(emulator: Emulator, tmp_path: Path) -> None:
    port = PORTAL_PORTS[0]
    folder = tmp_path / "metrics"
    # One thread per worker: two slow requests at once are served by the two workers.
    settings = portal_settings(emulator, "portal-test", port, GUNICORN_WORKERS="2", GUNICORN_THREADS="1",
                               SESSION_FILE_DIR=str(tmp_path / "sessions"), SESSION_FILESYSTEM_ALLOW_WORKERS="true",
                               PROMETHEUS_MULTIPROC_DIR=str(folder))
    portal = start_portal(tmp_path, port, settings)
    try:
        browser = http_login(portal.url)
        # Two 3-s pages: served together in well under 6 s, one after the other in 6 s or more.
        emulator.fault(endpoint="api", kind="delay", delay=3.0, count=2)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=2) as pool:
            pages = list(pool.map(lambda _: browser.get(f"{portal.url}/account", timeout=30).status_code, range(2)))
        assert pages == [200, 200]
        assert time.monotonic() - started < 5, "the two slow pages ran one after the other: one worker served both"
        for _ in range(20):
            assert requests.get(f"{portal.url}/healthz", timeout=10).status_code == 200
        before = scrape(portal)
        assert before[requests_to("/account")] == 2
        assert before[LOGINS_OK] == 1
        assert before[requests_to("/healthz")] >= 20
        assert len({path.name for path in folder.glob("counter_*.db")}) == 2  # one file per worker

        killed = min(portal.workers())
        os.kill(killed, signal.SIGTERM)
        # Replaced once the new worker has built its app: its file joins the dead worker's, which stays.
        deadline = time.monotonic() + 30
        while len(list(folder.glob("counter_*.db"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert killed not in portal.workers() and len(portal.workers()) == 2, "gunicorn did not replace the worker"
        assert f"counter_{killed}.db" in {path.name for path in folder.glob("counter_*.db")}

        after = scrape(portal)
        # The /metrics answers themselves are counted: everything else is as it was.
        moved = {key: after.get(key, 0) - count for key, count in before.items()
                 if count != after.get(key, 0) and dict(key[1]).get("route") != "/metrics"}
        assert moved == {}
    finally:
        stop(portal.process)

    # A new gunicorn starts from zero: the folder is emptied at start.
    portal = start_portal(tmp_path, port, settings)
    try:
        again = scrape(portal)
        assert again.get(requests_to("/account"), 0) == 0
        assert again[LOGINS_OK] == 0
    finally:
        stop(portal.process)
    assert list(folder.glob("counter_*.db")), "a folder the operator named is left as it is"


def test_a_metrics_folder_gunicorn_made_is_removed_when_it_exits(emulator: Emulator, tmp_path: Path) -> None:
    port = PORTAL_PORTS[0]
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    # No folder named: gunicorn makes one in TMPDIR.
    settings = portal_settings(emulator, "portal-test", port, GUNICORN_WORKERS="1", PROMETHEUS_MULTIPROC_DIR="",
                               TMPDIR=str(temporary))
    portal = start_portal(tmp_path, port, settings)
    try:
        assert requests.get(f"{portal.url}/healthz", timeout=10).status_code == 200
        [made] = temporary.glob("mediaflow-portal-metrics-*")
        assert list(made.glob("counter_*.db"))
    finally:
        stop(portal.process)
    assert portal.process.returncode == 0
    assert list(temporary.iterdir()) == []


def test_metrics_port_serves_the_sum_over_workers_and_the_public_port_none(emulator: Emulator,
                                                                          tmp_path: Path) -> None:
    port, metrics_port = PORTAL_PORTS[0], free_port()
    folder = tmp_path / "metrics"
    settings = portal_settings(emulator, "portal-test", port, GUNICORN_WORKERS="2", GUNICORN_THREADS="1",
                               SESSION_FILE_DIR=str(tmp_path / "sessions"), SESSION_FILESYSTEM_ALLOW_WORKERS="true",
                               PROMETHEUS_MULTIPROC_DIR=str(folder), METRICS_PORT=str(metrics_port))
    portal = start_portal(tmp_path, port, settings)
    try:
        browser = http_login(portal.url)
        # Two 3-s pages at once, on one thread each: one per worker.
        emulator.fault(endpoint="api", kind="delay", delay=3.0, count=2)
        with ThreadPoolExecutor(max_workers=2) as pool:
            pages = list(pool.map(lambda _: browser.get(f"{portal.url}/account", timeout=30).status_code, range(2)))
        assert pages == [200, 200]
        assert len(list(folder.glob("counter_*.db"))) == 2  # both workers counted

        # The public port: the unknown path's 404, from loopback too, with or without a proxy's header.
        unknown = requests.get(f"{portal.url}/nowhere", timeout=10)
        for headers in ({}, {"X-Forwarded-For": "127.0.0.1"}):
            public = requests.get(f"{portal.url}/metrics", headers=headers, timeout=10)
            assert (public.status_code, public.text) == (404, unknown.text)

        # The metrics port, from gunicorn's master: both workers' numbers added up.
        answer = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert answer.status_code == 200
        samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                   for family in text_string_to_metric_families(answer.text) for sample in family.samples}
        assert samples[requests_to("/account")] == 2
        assert samples[LOGINS_OK] == 1
        assert samples[requests_to(UNMATCHED, "404")] == 3  # /nowhere and the two refused /metrics
        # It listens on METRICS_BIND_HOST (127.0.0.1 by default) only: not on another loopback address.
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.2:{metrics_port}/metrics", timeout=10)
    finally:
        stop(portal.process)
    assert portal.process.returncode == 0
    assert f"Metrics of every worker at http://127.0.0.1:{metrics_port}/metrics" in portal.logs()


def test_a_metrics_port_already_taken_stops_gunicorn_with_one_line(emulator: Emulator, tmp_path: Path) -> None:
    port = PORTAL_PORTS[0]
    pidfile = tmp_path / "gunicorn.pid"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1]
        settings = portal_settings(emulator, "portal-test", port, GUNICORN_WORKERS="1", METRICS_PORT=str(metrics_port),
                                   GUNICORN_CMD_ARGS=f"--pid {pidfile}")
        with pytest.raises(RuntimeError, match="did not start") as refused:
            start_portal(tmp_path, port, settings)
    assert f"cannot start: METRICS_PORT={metrics_port} on METRICS_BIND_HOST=127.0.0.1: Address already in use" in (
        str(refused.value))
    assert str(refused.value).count("cannot start:") == 1
    assert "Booting worker" not in str(refused.value)
    assert not pidfile.exists(), "gunicorn's pidfile was left behind"


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_after_a_usr2_upgrade_the_new_master_serves_the_metrics_port_once_the_old_one_stops(
        emulator: Emulator, tmp_path: Path) -> None:
    port, metrics_port = PORTAL_PORTS[0], free_port()
    pidfile = tmp_path / "gunicorn.pid"
    settings = portal_settings(emulator, "portal-test", port, GUNICORN_WORKERS="1", METRICS_PORT=str(metrics_port),
                               GUNICORN_CMD_ARGS=f"--pid {pidfile}")
    portal = start_portal(tmp_path, port, settings)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    new_master = 0
    upgraded = Path(f"{pidfile}.2")
    try:
        assert requests.get(metrics_url, timeout=10).status_code == 200
        # gunicorn's binary upgrade: USR2 starts a new master beside the old one, which keeps the metrics port.
        portal.process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not (upgraded.exists() and "served from here once that one stops" in portal.logs()):
            assert time.monotonic() < deadline, portal.logs()
            time.sleep(0.1)
        new_master = int(upgraded.read_text())
        # The operator then stops the old master; the new one takes the port within its retry's longest wait.
        stop(portal.process)
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = requests.get(metrics_url, timeout=5)
                # An empty 200 until the new master's worker has booted: the metrics are in its files.
                if answer.status_code == 200 and "mediaflow_portal_logins_total" in answer.text:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"no metrics on the port 20 s after the old master stopped:\n" \
                                                f"{portal.logs()}"
            time.sleep(0.2)
        assert requests.get(f"{portal.url}/healthz", timeout=10).status_code == 200  # the new master's worker
    finally:
        stop(portal.process)
        if not new_master and upgraded.exists():  # a failure before it was read: no stray master on this port
            new_master = int(upgraded.read_text())
        if new_master and running(new_master):
            os.kill(new_master, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while running(new_master) and time.monotonic() < deadline:
                time.sleep(0.1)
    assert portal.logs().count(f"Metrics of every worker at http://127.0.0.1:{metrics_port}/metrics") == 2
