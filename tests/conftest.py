"""Fixtures: a running emulator, a real redis-server, and portal apps built with create_app()."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask

from app import create_app
from portal import sessions
from scripts.servers import wait_for_port
from tests.support import (
    MAX_TEST_PROCESSES,
    PORTAL_PORTS,
    Emulator,
    client_settings,
    free_port,
    require_binary,
    start_emulator,
    stop,
)
from tests.tls import HTTPS_PORTS, NGINX_HTTPS_PORT, NGINX_OUTAGE_PORT, TEST_DOMAIN, Certificate

TEST_CALLBACKS = (["http://localhost/callback"] + [f"http://127.0.0.1:{p}/callback" for p in PORTAL_PORTS]
                  + [f"https://127.0.0.1:{p}/callback" for p in HTTPS_PORTS]
                  + [f"https://portal.{TEST_DOMAIN}:{p}/callback" for p in (NGINX_HTTPS_PORT, NGINX_OUTAGE_PORT)])

CLIENTS = [
    client_settings("portal-test", redirect_uris=TEST_CALLBACKS),
    # Short-lived tokens, so tests can wait for expiry: refresh works, the refresh token is omitted.
    client_settings("short", redirect_uris=TEST_CALLBACKS, expires_in=4),
    client_settings("rotating", redirect_uris=TEST_CALLBACKS, expires_in=4, rotate_refresh_tokens=True),
    # One expiry to watch: the refreshed tokens live an hour, so however slow the machine, one refresh is due.
    client_settings("rotating-once", redirect_uris=TEST_CALLBACKS, expires_in=4, refreshed_expires_in=3600,
                    rotate_refresh_tokens=True),
    client_settings("no-refresh", redirect_uris=TEST_CALLBACKS, expires_in=4, issue_refresh_token=False),
    client_settings("empty-refresh", redirect_uris=TEST_CALLBACKS, expires_in=4, empty_refresh_token_on_refresh=True),
    client_settings("code-only", redirect_uris=TEST_CALLBACKS, grants=["authorization_code"],
                    issue_refresh_token=False),
]
SECRET_KEY = "test-secret-key-0123456789-abcdefghijklmnop"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` (pyproject.toml): twice the CPUs this process may use, at most 8; most tests wait on servers.

    Measured on 2 CPUs: 4 processes ran the suite in 2 min 50 s, against 3 min 51 s for 2 and 3 min 06 s
    for 6. None defers to pytest-xdist, which reads PYTEST_XDIST_AUTO_NUM_WORKERS.
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return min(MAX_TEST_PROCESSES, 2 * len(os.sched_getaffinity(0)))


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    running = start_emulator(tmp_path_factory.mktemp("emulator"), CLIENTS)
    yield running
    stop(running.process)


@pytest.fixture(autouse=True)
def _clean_emulator(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fresh stats and no faults for each test; afterwards, wait out any call it left in flight."""
    if "emulator" not in request.fixturenames:
        yield
        return
    emulator: Emulator = request.getfixturevalue("emulator")
    emulator.reset()
    yield
    # A delayed call that the portal gave up on still ends at the emulator, and would count in the next test.
    deadline = time.monotonic() + 30
    while emulator.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)


class RedisServer:
    def __init__(self, port: int, process: subprocess.Popen[bytes], password: str | None = None,
                 ca: Certificate | None = None) -> None:
        self.port = port
        self.process = process
        self.url = f"{'rediss' if ca else 'redis'}://{f':{password}@' if password else ''}127.0.0.1:{port}/0"
        self.client = redis_lib.Redis.from_url(self.url, **({"ssl_ca_certs": str(ca.cert)} if ca else {}))


def replicated(master: RedisServer, seconds: float = 30) -> None:
    """Wait until a replica holds everything written to master so far (WAIT counts this client's writes).

    In short WAITs: one long WAIT would outlast redis-py's socket timeout on a busy machine.
    """
    master.client.set("written-before-the-failover", b"1")
    deadline = time.monotonic() + seconds
    while master.client.execute_command("WAIT", 1, 500) < 1:
        assert time.monotonic() < deadline, "the replica did not catch up"


def start_redis(directory: Path, port: int | None = None, extra: list[str] | None = None,
                password: str | None = None, tls: Certificate | None = None,
                ca: Certificate | None = None) -> RedisServer:
    """A redis-server on 127.0.0.1; with tls (a certificate that ca signed), it speaks TLS only."""
    binary = require_binary("redis-server", "redis-server")
    port = port or free_port()
    listen = ["--port", str(port)]
    if tls and ca:
        listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls.cert), "--tls-key-file",
                  str(tls.key), "--tls-ca-cert-file", str(ca.cert), "--tls-auth-clients", "no"]
    process = subprocess.Popen(
        [binary, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), *(["--requirepass", password] if password else []), *(extra or [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    return RedisServer(port, process, password, ca if tls else None)


class Sentinels:
    """Redis Sentinels on 127.0.0.1 that watch one master under one name."""

    def __init__(self, name: str, ports: list[int], processes: list[subprocess.Popen[bytes]],
                 ca: Certificate | None = None, password: str | None = None,
                 client_certificate: Certificate | None = None) -> None:
        self.name = name
        self.ports = ports
        self.processes = processes
        # The harness checks the CA only: a test may give a Sentinel a certificate for another host.
        tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(ca.cert), "ssl_check_hostname": False} if ca else {}
        if ca and client_certificate:
            tls.update(ssl_certfile=str(client_certificate.cert), ssl_keyfile=str(client_certificate.key))
        self.clients = [redis_lib.Redis(port=port, password=password, **tls) for port in ports]

    @property
    def setting(self) -> str:
        """The value of REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def master_port(self) -> int | None:
        """The master's port as the first Sentinel that answers names it."""
        for client in self.clients:
            try:
                address = client.sentinel_get_master_addr_by_name(self.name)
            except redis_lib.ConnectionError:
                continue
            return int(address[1]) if address else None
        return None

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        for process in self.processes:
            stop(process)


def start_sentinels(directory: Path, master_port: int, replicas: int, count: int = 3, name: str = "main",
                    down_after_ms: int = 1000, tls: Certificate | None = None, ca: Certificate | None = None,
                    password: str | None = None, master_password: str | None = None,
                    client_certificate: Certificate | None = None) -> Sentinels:
    """count Sentinels (`redis-server --sentinel`) with quorum count // 2 + 1, once they know each other and
    the replicas: a master silent for down_after_ms is failed over within a few seconds.

    With tls (a certificate that ca signed) they speak TLS only, and to the master too; with
    client_certificate they accept only clients that show one ca signed (the harness shows that one);
    with password they ask clients for it; master_password is the master's own.
    """
    binary = require_binary("redis-server", "redis-server")
    ports = [free_port() for _ in range(count)]
    processes = []
    for port in ports:
        # Sentinel rewrites its config file as it learns: one writable file each.
        config = directory / f"sentinel-{port}.conf"
        listen = f"port {port}"
        if tls and ca:
            listen = (f"port 0\ntls-port {port}\ntls-cert-file {tls.cert}\ntls-key-file {tls.key}\n"
                      f"tls-ca-cert-file {ca.cert}\ntls-auth-clients {'yes' if client_certificate else 'no'}\n"
                      "tls-replication yes")
        config.write_text(f"""{listen}
bind 127.0.0.1
dir {directory}
sentinel monitor {name} 127.0.0.1 {master_port} {count // 2 + 1}
sentinel down-after-milliseconds {name} {down_after_ms}
sentinel failover-timeout {name} 10000
sentinel parallel-syncs {name} 1
{f"requirepass {password}" if password else ""}
{f"sentinel auth-pass {name} {master_password}" if master_password else ""}
""")
        processes.append(subprocess.Popen([binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
    sentinels = Sentinels(name, ports, processes, ca if tls else None, password, client_certificate)
    try:
        for port, process in zip(ports, processes, strict=True):
            wait_for_port(port, process)
        # Sentinels find each other and the replicas through the master (hello messages every 2 s).
        deadline = time.monotonic() + 30
        while not all(state["num-other-sentinels"] == count - 1 and state["num-slaves"] == replicas
                      for state in (client.sentinel_master(name) for client in sentinels.clients)):
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinels did not find each other and the replicas within 30 s")
            time.sleep(0.1)
    except BaseException:
        sentinels.stop()
        raise
    return sentinels


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.client.close()
    stop(server.process)


@pytest.fixture(params=["filesystem", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run a test once per session backend."""
    return str(request.param)


class FakeClock:
    """The portal's clock in a test: it starts at the real time and moves only when the test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_app(emulator: Emulator, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Flask]]:
    """Build a portal for one emulator client and one session backend; with clock=, on that clock."""
    built: list[Flask] = []

    def build(client_id: str = "portal-test", backend: str = "filesystem", clock: FakeClock | None = None,
              **overrides: Any) -> Flask:
        config: dict[str, Any] = {
            "TESTING": True,
            "SECRET_KEY": SECRET_KEY,
            "MEDIAFLOW_CLIENT_ID": client_id,
            "MEDIAFLOW_CLIENT_SECRET": emulator.secret(client_id),
            "MEDIAFLOW_AUTHORIZE_URL": f"{emulator.url}/authorize",
            "MEDIAFLOW_TOKEN_URL": f"{emulator.url}/1/oauth2/token",
            "MEDIAFLOW_API_BASE": f"{emulator.url}/1",
            "SESSION_COOKIE_SECURE": False,
            "SESSION_BACKEND": backend,
            "SESSION_FILE_DIR": str(tmp_path / "sessions"),
        }
        if backend == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            server.client.flushdb()
            config["REDIS_URL"] = server.url
        config.update(overrides)
        app = create_app(config)
        if clock is not None:
            app.extensions["mediaflow_tokens"].clock = clock
        built.append(app)
        return app

    yield build
    for app in built:
        sessions.close(app)


@pytest.fixture
def app(make_app: Callable[..., Flask], backend: str) -> Flask:
    return make_app(backend=backend)


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()
