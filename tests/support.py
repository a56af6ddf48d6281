"""Helpers the fixtures share: free ports, real processes, and the login a person would do."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from scripts.servers import NotUp, free_port, wait_for_http

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(path_or_name: str, what: str) -> str:
    """Return the binary's path; skip on a laptop without it, fail under CI=true."""
    found = shutil.which(path_or_name)
    if found:
        return found
    message = f"{what} is not installed ({path_or_name}); .ci/run installs it"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


# The most test processes `-n auto` starts (tests/conftest.py): each has a block of ports of its own.
MAX_TEST_PROCESSES = 8


def reserved_ports(count: int) -> list[int]:
    """count free ports below the kernel's ephemeral range, in a block of this xdist worker's own.

    A port that free_port() found stays free only until a server asks the kernel for any port: another
    xdist worker's emulator could be given it, and a portal started on it later would fail to bind while
    that server answered its readiness check. The kernel never gives out ports below its ephemeral range.
    """
    lowest = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    blocks = (lowest - 1024) // 100
    if blocks < MAX_TEST_PROCESSES:
        raise RuntimeError(f"no room for the tests' ports below the ephemeral range ({lowest})")
    # Two runs on one host (two clones, say) take different blocks, chosen by the run's id: their servers
    # do not race for a port. One block per process of the run (xdist's workers).
    run = zlib.crc32((os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())).encode())
    block = ((run % (blocks // MAX_TEST_PROCESSES)) * MAX_TEST_PROCESSES + worker) % blocks
    first = lowest - 100 * (block + 1)
    found = []
    for port in range(first, first + 100):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"fewer than {count} free ports in {first}-{first + 99}")


# Ports reserved for servers whose callback URLs the emulator's test clients register (tests/tls.py takes its own).
RESERVED_PORTS = reserved_ports(8)
# Portals served by gunicorn in tests.
PORTAL_PORTS = RESERVED_PORTS[:4]


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def client_settings(client_id: str, **settings: Any) -> dict[str, Any]:
    return {"id": client_id, "secret": f"secret-of-{client_id}-0123456789", **settings}


@dataclass
class Emulator:
    url: str
    process: subprocess.Popen[bytes]
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        return dict(requests.get(f"{self.url}/_emulator/stats", timeout=5).json())

    def refreshes(self) -> int:
        return int(self.stats()["token"].get("refresh_token", {}).get("ok", 0))

    def fault(self, **fault: Any) -> None:
        response = requests.post(f"{self.url}/_emulator/faults", json=fault, timeout=5)
        assert response.status_code == 200, response.text

    def reset(self) -> None:
        requests.post(f"{self.url}/_emulator/reset", timeout=5).raise_for_status()

    def secret(self, client_id: str) -> str:
        return str(self.clients[client_id]["secret"])

    def token(self, **form: str) -> requests.Response:
        return requests.post(f"{self.url}/1/oauth2/token", data=form, timeout=10)


def start_emulator(tmp: Path, clients: list[dict[str, Any]], **top: Any) -> Emulator:
    config = {"clients": clients, "users": [
        {"username": "demo", "password": "demo", "name": "Demo User", "email": "demo@example.com"},
        {"username": "editor", "password": "editor", "name": "Erika Editor", "email": "editor@example.com"},
        # Another company's user, for the allow-lists (portal/gate.py); the two above are of customer 1.
        {"username": "outsider", "password": "outsider", "name": "Olga Outsider", "email": "olga@other.example",
         "customer_id": 2},
    ], **top}
    path = tmp / "emulator.json"
    path.write_text(json.dumps(config))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", str(port), "--config", str(path)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/_emulator/stats", process)
    return Emulator(url, process, {c["id"]: c for c in clients})


def authorize_url(emulator: Emulator, client_id: str, redirect_uri: str, **extra: str) -> str:
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, **extra}
    return requests.Request("GET", f"{emulator.url}/authorize", params=query).prepare().url or ""


def sign_in(url: str, username: str = "demo", password: str = "demo", action: str = "allow") -> requests.Response:
    """Submit the emulator's login form as a person would, without following the redirect."""
    return requests.post(url, data={"username": username, "password": password, "action": action},
                         allow_redirects=False, timeout=10)


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query, keep_blank_values=True).items()}


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def portal_login(client: Any, next_url: str | None = None, username: str = "demo") -> Any:
    """Log in through the Flask test client; the portal and the emulator talk real HTTP."""
    login = client.get("/login" + (f"?next={next_url}" if next_url else ""))
    assert login.status_code in (302, 303), login.status_code
    answer = sign_in(login.headers["Location"], username=username, password=username)
    assert answer.status_code == 302, answer.text
    callback = urlsplit(answer.headers["Location"])
    return client.get(f"{callback.path}?{callback.query}")


def env_with(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEDIAFLOW_", "SESSION_", "REDIS_", "SECRET_", "GUNICORN_", "LOG_", "TRUSTED_",
                                 "PROMETHEUS_"))}
    env.update(values)
    return env


def product_stage() -> list[str]:
    """The Dockerfile lines that make the product: its "portal" stage, which the last stage builds on."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("FROM ") and line.endswith(" AS portal"))
    end = next((i for i, line in enumerate(lines[start + 1:], start + 1) if line.startswith("FROM ")), len(lines))
    return lines[start:end]


def dockerfile_cmd() -> list[str]:
    """The CMD of the product's stage, parsed from the Dockerfile (exec form)."""
    for line in product_stage():
        if line.startswith("CMD "):
            return list(json.loads(line[4:]))
    raise AssertionError("the Dockerfile's portal stage has no CMD")


def stage_image(target: Path) -> Path:
    """Copy what the product stage's COPY lines put in the image, so tests run exactly that."""
    target.mkdir(parents=True, exist_ok=True)
    for line in product_stage():
        if not line.startswith("COPY "):
            continue
        *sources, _destination = [part for part in line.split()[1:] if not part.startswith("--")]
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, target / source.rstrip("/"), dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, target / source)
    return target


@dataclass
class Portal:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> set[int]:
        """The process ids of gunicorn's workers: its master's children."""
        pid = self.process.pid
        return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def start_portal(tmp: Path, port: int, settings: Mapping[str, str], own_group: bool = False) -> Portal:
    """Run the Dockerfile's CMD (gunicorn) from a staged image folder with these settings.

    own_group: gunicorn and its workers in a process group of their own, as a terminal's foreground job.
    With GUNICORN_CERTFILE among the settings, gunicorn serves https and is checked against that certificate.
    The metrics folder is tmp/metrics unless the settings name one (PROMETHEUS_MULTIPROC_DIR="": gunicorn's own).
    """
    app_dir = stage_image(tmp / "image")
    command = dockerfile_cmd()
    assert command[0] == "gunicorn"
    # The workers' metrics in the test's folder, not in a new folder under /tmp at each start.
    env = env_with(GUNICORN_BIND=f"127.0.0.1:{port}", **{"PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
                                                         **settings})
    log = tmp / f"portal-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), *command[1:]], cwd=app_dir,
                                   env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=own_group)
    certfile = settings.get("GUNICORN_CERTFILE")
    url = f"{'https' if certfile else 'http'}://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", process, cafile=certfile)
    except NotUp:
        stop(process)
        raise RuntimeError(f"the portal did not start:\n{log.read_text()}") from None
    return Portal(url, process, log)


def portal_settings(emulator: Emulator, client_id: str, port: int, **extra: str) -> dict[str, str]:
    return {
        "MEDIAFLOW_CLIENT_ID": client_id,
        "MEDIAFLOW_CLIENT_SECRET": emulator.secret(client_id),
        "MEDIAFLOW_AUTHORIZE_URL": f"{emulator.url}/authorize",
        "MEDIAFLOW_TOKEN_URL": f"{emulator.url}/1/oauth2/token",
        "MEDIAFLOW_API_BASE": f"{emulator.url}/1",
        "MEDIAFLOW_REDIRECT_URI": f"http://127.0.0.1:{port}/callback",
        "SECRET_KEY": "gunicorn-test-secret-key-0123456789abcdef",
        "SESSION_COOKIE_SECURE": "false",
        **extra,
    }


def http_login(portal_url: str, username: str = "demo", next_url: str = "") -> requests.Session:
    """Log in over real HTTP as a browser would; returns the session holding the cookie."""
    browser = requests.Session()
    login = browser.get(f"{portal_url}/login" + (f"?next={next_url}" if next_url else ""), allow_redirects=False,
                        timeout=10)
    assert login.status_code == 302, login.text
    answer = sign_in(login.headers["Location"], username=username, password=username)
    assert answer.status_code == 302, answer.text
    landed = browser.get(answer.headers["Location"], timeout=10)
    assert landed.status_code == 200, landed.text
    return browser
