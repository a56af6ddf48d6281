"""Redis as companies run it: TLS (rediss://) with a private CA, always verified, a wrong CA a 503 and not a 500;
Sentinel, with passwords and over TLS. The failover itself: tests/concurrency/test_failover.py."""

from __future__ import annotations

import logging
import signal
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError

from portal.metrics import SENTINEL_OUTCOMES, Metrics
from portal.redis_target import (
    REFUSAL_LOG_EVERY,
    SENTINEL_QUIET,
    SENTINEL_TIMEOUT,
    RedisTarget,
    SentinelsSilent,
    SteadySentinel,
    check_at_start,
    describe,
)
from portal.session_cache import SessionCache
from tests.conftest import FakeClock, RedisServer, start_redis, start_sentinels
from tests.support import PORTAL_PORTS, Emulator, portal_login, portal_settings, start_portal, stop
from tests.tls import Certificate, make_ca, make_certificate

PREFIX = "mediaflow:session:"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_ca(tmp_path_factory.mktemp("redis-ca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A CA that did not sign the server's certificate: a typo in REDIS_CA_CERT, or another environment's."""
    return make_ca(tmp_path_factory.mktemp("other-ca"), "Some other CA")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, ca: Certificate) -> Iterator[RedisServer]:
    """A redis-server that speaks TLS only, with a certificate for 127.0.0.1 that the private CA signed."""
    directory = tmp_path_factory.mktemp("tls-redis")
    server = start_redis(directory, tls=make_certificate(directory / "tls", issuer=ca), ca=ca)
    yield server
    server.client.close()
    stop(server.process)


def session_reads(server: RedisServer) -> int:
    return int(server.client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


@pytest.mark.parametrize("where", ["REDIS_CA_CERT", "ssl_ca_certs"])
def test_a_login_works_over_rediss_with_a_private_ca(make_app: Callable[..., Flask], tls_redis: RedisServer,
                                                     ca: Certificate, where: str) -> None:
    tls_redis.client.flushdb()
    settings = ({"REDIS_URL": tls_redis.url, "REDIS_CA_CERT": str(ca.cert)} if where == "REDIS_CA_CERT"
                else {"REDIS_URL": f"{tls_redis.url}?ssl_ca_certs={ca.cert}"})
    app = make_app(SESSION_BACKEND="redis", **settings)
    client = app.test_client()
    assert portal_login(client).status_code == 302
    assert client.get("/session").status_code == 200
    assert client.get("/readyz").json == {"status": "ready"}
    # The server has no plain-text port: the session and its token set went over TLS.
    assert tls_redis.client.keys(f"{PREFIX}*") and tls_redis.client.keys("mediaflow:tokens:*")


def test_the_session_cache_tracks_over_tls(make_app: Callable[..., Flask], tls_redis: RedisServer,
                                          ca: Certificate) -> None:
    tls_redis.client.flushdb()
    app = make_app(SESSION_BACKEND="redis", REDIS_URL=tls_redis.url, REDIS_CA_CERT=str(ca.cert))
    client = app.test_client()
    portal_login(client)
    assert client.get("/session").status_code == 200
    before = session_reads(tls_redis)
    assert [client.get("/session").status_code for _ in range(5)] == [200] * 5
    assert session_reads(tls_redis) == before  # served from the worker's copy

    [tracking] = [c for c in tls_redis.client.client_list() if "t" in c["flags"]]
    assert "P" in tracking["flags"] and tracking["redir"] == tracking["id"]
    # Another replica ends the session: Redis's message reaches this worker over TLS, and the copy goes.
    [key] = tls_redis.client.keys(f"{PREFIX}*")
    tls_redis.client.delete(key)
    assert client.get("/session").status_code == 302


def test_the_cache_alone_over_tls_is_dropped_by_a_change(tls_redis: RedisServer, ca: Certificate) -> None:
    tls_redis.client.flushdb()
    key = f"{PREFIX}tls"
    tls_redis.client.set(key, b"old")
    target = RedisTarget(tls_redis.url, ca_cert=str(ca.cert))
    cache = SessionCache(target, PREFIX, connect_timeout=1.0)
    try:
        assert cache.get(key, tls_redis.client.get) == b"old"
        assert cache.get(key, lambda _: pytest.fail("read Redis although a copy was kept")) == b"old"
        tls_redis.client.set(key, b"new")
        tls_redis.client.ping()
        assert cache.get(key, tls_redis.client.get) == b"new"
    finally:
        cache.close()
        target.close()


def test_a_wrong_ca_is_a_503_page_and_readyz_says_why(make_app: Callable[..., Flask], tls_redis: RedisServer,
                                                      other_ca: Certificate,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app(SESSION_BACKEND="redis", REDIS_URL=tls_redis.url, REDIS_CA_CERT=str(other_ca.cert))
    client = app.test_client()
    assert client.get("/").status_code == 200  # no cookie: the landing page needs no store
    login = client.get("/login")
    assert login.status_code == 503 and "cannot reach its session store" in login.text
    # Someone who logged in before the CA changed: their cookie names a record the portal cannot read.
    client.set_cookie("mediaflow_portal", "a-session-from-before-the-change")
    for path in ("/", "/account", "/library"):
        page = client.get(path)
        assert page.status_code == 503, path
        assert "cannot reach its session store" in page.text and "Try again" in page.text
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "Redis's TLS certificate was not accepted" in ready.json["reason"]
    assert "REDIS_CA_CERT" in ready.json["reason"]
    assert "The session store failed while loading a session (Redis's TLS certificate was not accepted" in (
        capsys.readouterr().out)


@pytest.fixture(scope="module")
def misnamed_redis(tmp_path_factory: pytest.TempPathFactory, ca: Certificate) -> Iterator[RedisServer]:
    """A TLS-only redis-server whose certificate the right CA signed, for another host."""
    directory = tmp_path_factory.mktemp("misnamed-redis")
    misnamed = make_certificate(directory / "tls", hosts=("redis.other.example",), issuer=ca)
    server = start_redis(directory, tls=misnamed, ca=ca)
    yield server
    stop(server.process)


# where the certificate for another host is: the master REDIS_URL names, the master a Sentinel names, the Sentinel
MISNAMED = ["master", "master behind Sentinel", "Sentinel"]
# In every URL: TLS fails before the password is sent, and no message may show it.
URL_PASSWORD = "url-password-0123"


@pytest.mark.parametrize("misnamed", MISNAMED)
def test_a_certificate_for_another_host_is_refused_naming_the_server(
        make_app: Callable[..., Flask], tls_redis: RedisServer, misnamed_redis: RedisServer, ca: Certificate,
        tmp_path: Path, capsys: pytest.CaptureFixture[str], misnamed: str) -> None:
    settings = {"REDIS_URL": misnamed_redis.url.replace("rediss://", f"rediss://:{URL_PASSWORD}@")}
    sentinels = None
    if misnamed != "master":
        master = misnamed_redis if misnamed == "master behind Sentinel" else tls_redis
        certificate = (make_certificate(tmp_path / "tls", hosts=("redis.other.example",), issuer=ca)
                       if misnamed == "Sentinel" else make_certificate(tmp_path / "tls", issuer=ca))
        sentinels = start_sentinels(tmp_path, master.port, replicas=0, count=1, tls=certificate, ca=ca)
        settings = {"REDIS_URL": f"rediss://:{URL_PASSWORD}@main/0", "REDIS_SENTINELS": sentinels.setting.split(","),
                    "REDIS_SENTINEL_MASTER": "main"}
    # What failed, and where: never "no Sentinel names a master" for a certificate.
    where = {"master": f"Redis's TLS certificate was not accepted at 127.0.0.1:{misnamed_redis.port} (",
             "master behind Sentinel": "TLS verification failed against the master Sentinel named, "
                                       f"127.0.0.1:{misnamed_redis.port}: Redis's TLS certificate was not accepted (",
             "Sentinel": f"TLS verification failed against the Sentinel at {sentinels.setting if sentinels else ''}: "
                         "its certificate was not accepted ("}[misnamed]
    try:
        app = make_app(SESSION_BACKEND="redis", REDIS_CA_CERT=str(ca.cert), **settings)
        # gunicorn's start-up check says it once, before any worker.
        problem = check_at_start(app.config)
        assert problem is not None and where in problem and "mismatch" in problem
        client = app.test_client()
        assert client.get("/login").status_code == 503
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert where in ready.json["reason"]
        assert "mismatch" in ready.json["reason"] and "REDIS_CA_CERT" in ready.json["reason"]
        if misnamed == "Sentinel":
            # It answered, with a certificate the portal refused: counted as refused, never as silence.
            counted = sentinel_questions(client.get("/metrics").text)
            assert counted["refused"] >= 1 and counted["silent"] == 0 and counted["master"] == 0
    finally:
        if sentinels is not None:
            sentinels.stop()
    logged = capsys.readouterr().out
    assert f"The session store failed while saving a session ({where}" in logged
    assert URL_PASSWORD not in logged + problem + ready.text


def test_a_login_works_through_sentinels_over_tls(make_app: Callable[..., Flask], tls_redis: RedisServer,
                                                  ca: Certificate, tmp_path: Path) -> None:
    tls_redis.client.flushdb()
    sentinels = start_sentinels(tmp_path, tls_redis.port, replicas=0, count=1,
                                tls=make_certificate(tmp_path / "tls", issuer=ca), ca=ca)
    try:
        # The Sentinels speak TLS too, with the same CA: both connections are verified.
        app = make_app(SESSION_BACKEND="redis", REDIS_URL="rediss://main/0", REDIS_CA_CERT=str(ca.cert),
                       REDIS_SENTINELS=sentinels.setting.split(","), REDIS_SENTINEL_MASTER="main")
        client = app.test_client()
        assert portal_login(client).status_code == 302
        assert client.get("/session").status_code == 200
        assert tls_redis.client.keys("mediaflow:tokens:*")
        assert client.get("/readyz").json == {"status": "ready"}
    finally:
        sentinels.stop()


def test_the_client_certificate_in_redis_url_is_shown_to_the_sentinels_too(
        make_app: Callable[..., Flask], tls_redis: RedisServer, ca: Certificate, tmp_path: Path) -> None:
    tls_redis.client.flushdb()
    mine = make_certificate(tmp_path / "client", hosts=("portal.example",), issuer=ca, client=True)
    sentinels = start_sentinels(tmp_path, tls_redis.port, replicas=0, count=1,
                                tls=make_certificate(tmp_path / "tls", issuer=ca), ca=ca, client_certificate=mine)
    try:
        app = make_app(SESSION_BACKEND="redis", REDIS_URL=f"rediss://main/0?ssl_certfile={mine.cert}&ssl_keyfile={mine.key}",
                       REDIS_CA_CERT=str(ca.cert), REDIS_SENTINELS=sentinels.setting.split(","),
                       REDIS_SENTINEL_MASTER="main")
        client = app.test_client()
        assert portal_login(client).status_code == 302
        assert client.get("/readyz").json == {"status": "ready"}
    finally:
        sentinels.stop()


@pytest.mark.parametrize("sentinel_password", ["sentinel-pw-0123", "wrong-pw"])
def test_sentinels_with_their_own_password_and_a_master_with_another(make_app: Callable[..., Flask], tmp_path: Path,
                                                                     sentinel_password: str) -> None:
    master = start_redis(tmp_path, password="master-pw-0123")
    sentinels = start_sentinels(tmp_path, master.port, replicas=0, count=1, password="sentinel-pw-0123",
                                master_password="master-pw-0123")
    try:
        app = make_app(SESSION_BACKEND="redis", REDIS_URL="redis://:master-pw-0123@main/0",
                       REDIS_SENTINELS=sentinels.setting.split(","), REDIS_SENTINEL_MASTER="main",
                       REDIS_SENTINEL_PASSWORD=sentinel_password)
        client = app.test_client()
        if sentinel_password == "wrong-pw":
            assert client.get("/login").status_code == 503
            reason = client.get("/readyz").json["reason"]
            assert f"the Sentinel at {sentinels.setting} refused REDIS_SENTINEL_PASSWORD (wrong, " in reason
            assert sentinel_password not in reason and "sentinel-pw-0123" not in reason
            return
        assert portal_login(client).status_code == 302
        assert client.get("/session").status_code == 200
        assert master.client.keys("mediaflow:tokens:*")
    finally:
        sentinels.stop()
        master.client.close()
        stop(master.process)


@pytest.mark.gunicorn
def test_gunicorn_names_a_wrong_ca_at_start_and_serves_503s(emulator: Emulator, tls_redis: RedisServer,
                                                            other_ca: Certificate, tmp_path: Path) -> None:
    port = PORTAL_PORTS[3]
    settings = portal_settings(emulator, "portal-test", port, SESSION_BACKEND="redis", REDIS_URL=tls_redis.url,
                               REDIS_CA_CERT=str(other_ca.cert), GUNICORN_WORKERS="2")
    portal = start_portal(tmp_path, port, settings)
    try:
        assert requests.get(f"{portal.url}/login", timeout=30).status_code == 503
        cookie = {"mediaflow_portal": "a-session-from-before-the-change"}
        assert requests.get(f"{portal.url}/account", cookies=cookie, timeout=30).status_code == 503
        ready = requests.get(f"{portal.url}/readyz", timeout=30)
        assert ready.status_code == 503 and "TLS certificate was not accepted" in ready.json()["reason"]
    finally:
        stop(portal.process)
    logs = portal.logs()
    assert logs.count("the session store does not answer at start (Redis's TLS certificate was not accepted") == 1
    assert "Traceback" not in logs


# what the Sentinels do while the master they named keeps serving, and whether a new connection may go there
SENTINELS_AWAY = [
    ("paused", True),  # SIGSTOP: connections open, no answer; the master is fine
    ("stopped", True),  # the processes are gone: connections refused
    ("answer-master-down", False),  # they answer, and say the master is down: a failover, never the old master
]


@pytest.mark.parametrize(("away", "served"), SENTINELS_AWAY, ids=[row[0] for row in SENTINELS_AWAY])
def test_while_no_sentinel_answers_new_connections_go_to_the_master_they_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, away: str, served: bool) -> None:
    master = start_redis(tmp_path)
    sentinels = start_sentinels(tmp_path, master.port, replicas=0, count=2, down_after_ms=500)
    # MEDIAFLOW_CONNECT_TIMEOUT's 3 s would be each Sentinel's wait before; now at most SENTINEL_TIMEOUT.
    target = RedisTarget("redis://main/0", sentinels=[("127.0.0.1", port) for port in sentinels.ports],
                         master="main", timeout=3.0)
    client = target.client()
    try:
        client.set("k", b"v")  # a Sentinel named the master
        if away == "paused":
            for process in sentinels.processes:
                process.send_signal(signal.SIGSTOP)
        elif away == "stopped":
            for process in sentinels.processes:
                stop(process)
        else:
            # Gone: a connection to the master they named would be refused, and say so; theirs is the answer.
            stop(master.process)
            # Every one of them: a Sentinel that still sees it up names it, and is rightly believed.
            deadline = time.monotonic() + 10
            while not all(each.sentinel_master("main")["is_sdown"] for each in sentinels.clients):
                assert time.monotonic() < deadline, "the Sentinels did not all see the master down"
                time.sleep(0.1)
        waits = []
        with caplog.at_level(logging.INFO, "portal.redis_target"):
            for _ in range(3):
                client.connection_pool.disconnect()  # each time a new connection, which asks the Sentinels
                began = time.monotonic()
                if served:
                    assert client.get("k") == b"v"
                else:
                    with pytest.raises(redis.ConnectionError) as raised:
                        client.get("k")
                    assert describe(raised.value, client).startswith("no Sentinel names a master")
                waits.append(time.monotonic() - began)
        if served:
            # The first asks both Sentinels (0.5 s each at most); the next ones take the known master at once: less
            # than asking even one paused Sentinel would cost. With room for a busy machine.
            assert waits[0] < 2 * SENTINEL_TIMEOUT + 1.5 and max(waits[1:]) < SENTINEL_TIMEOUT, waits
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and warnings[0].startswith("Redis Sentinel: no Sentinel answers (")
            assert f"the master they last named, 127.0.0.1:{master.port}" in warnings[0]
    finally:
        for process in sentinels.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
        client.close()
        target.close()
        sentinels.stop()
        master.client.close()
        stop(master.process)


class StubSentinel:
    """A stand-in Sentinel on loopback, which answers SENTINEL MASTERS as its mode says.

    "ok": the master "main" at master_port, seen up; "sdown": the same master, but down to this Sentinel
    (a lagging or cut-off Sentinel); "silent": reads the question and never answers; "wrongpass": refuses
    every password (NOAUTH on a connection authenticated before). It accepts any password otherwise. The
    mode may change while clients are connected.
    """

    def __init__(self, mode: str, master_port: int) -> None:
        self.mode = mode
        self.master_port = master_port
        stub = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while command := read_command(self.rfile):
                    self.wfile.write(stub.answer(command))

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, command: list[bytes]) -> bytes:
        """The reply, in RESP3 as redis-py asks (HELLO 3, with AUTH when it has a password)."""
        name = command[0].upper()
        if self.mode == "silent":
            time.sleep(3 * SENTINEL_TIMEOUT)  # the client has given up by then
            return b""
        if self.mode == "wrongpass":
            if b"AUTH" in command or name == b"AUTH":
                return b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
            return b"-NOAUTH Authentication required.\r\n"
        if name == b"HELLO":
            return b"%1\r\n" + bulk("proto") + b":3\r\n"
        if name in (b"AUTH", b"CLIENT"):
            return b"+OK\r\n"
        if command[:2] == [b"SENTINEL", b"MASTERS"]:
            flags = "master" if self.mode == "ok" else "master,s_down"
            state = {"name": "main", "ip": "127.0.0.1", "port": str(self.master_port), "flags": flags,
                     "num-other-sentinels": "2", "quorum": "2"}
            return b"*1\r\n" + f"%{len(state)}\r\n".encode() + b"".join(
                bulk(key) + bulk(value) for key, value in state.items())
        return b"-ERR unknown command\r\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def read_command(rfile: Any) -> list[bytes]:
    """One command a client sent (a RESP array of bulk strings); empty when it hung up."""
    header = rfile.readline()
    if not header.startswith(b"*"):
        return []
    parts = []
    for _ in range(int(header[1:])):
        length = int(rfile.readline()[1:])
        parts.append(rfile.read(length + 2)[:-2])
    return parts


def bulk(text: str) -> bytes:
    return f"${len(text)}\r\n{text}\r\n".encode()


@pytest.fixture
def stubs() -> Iterator[Callable[..., list[StubSentinel]]]:
    """Start stub Sentinels by mode; the one at index i names the master at port 7000 + i."""
    started: list[StubSentinel] = []

    def start(*modes: str) -> list[StubSentinel]:
        made = [StubSentinel(mode, 7000 + index) for index, mode in enumerate(modes)]
        started.extend(made)
        return made

    yield start
    for stub in started:
        stub.close()


def steady_sentinel(stubs: list[StubSentinel], metrics: Metrics, clock: FakeClock | None = None,
                    password: str | None = None) -> SteadySentinel:
    """A SteadySentinel asking these stubs as the portal asks its Sentinels."""
    options: dict[str, Any] = {"clock": clock} if clock else {}
    return SteadySentinel([("127.0.0.1", stub.port) for stub in stubs], sentinel_kwargs={
        "socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT, "password": password,
        "retry": Retry(NoBackoff(), 0)}, on_question=metrics.sentinel_question, **options)


def questions(metrics: Metrics) -> dict[str, int]:
    """mediaflow_portal_sentinel_questions_total by outcome, the ones above 0."""
    counts = {outcome: metrics.sentinel_questions.labels(outcome)._value.get() for outcome in SENTINEL_OUTCOMES}
    return {outcome: int(count) for outcome, count in counts.items() if count}


def sentinel_questions(scrape: str) -> dict[str, float]:
    """mediaflow_portal_sentinel_questions_total by outcome, from a /metrics answer."""
    return {sample.labels["outcome"]: sample.value for family in text_string_to_metric_families(scrape)
            for sample in family.samples if sample.name == "mediaflow_portal_sentinel_questions_total"}


# the Sentinels' modes in the order they are listed → the master named (its port), or the error of the question
FIRST_QUESTIONS = [
    (["sdown", "ok"], 7001),
    (["silent", "sdown", "ok"], 7002),
    (["sdown", "sdown"], MasterNotFoundError),
    (["silent", "sdown"], MasterNotFoundError),
    (["silent", "silent"], SentinelsSilent),
]


@pytest.mark.parametrize(("modes", "expected"), FIRST_QUESTIONS, ids=["-".join(row[0]) for row in FIRST_QUESTIONS])
def test_every_sentinel_is_asked_until_one_names_a_usable_master(
        stubs: Callable[..., list[StubSentinel]], caplog: pytest.LogCaptureFixture, modes: list[str],
        expected: int | type[Exception]) -> None:
    metrics = Metrics(CollectorRegistry())
    sentinel = steady_sentinel(stubs(*modes), metrics)
    try:
        if isinstance(expected, int):
            assert sentinel.discover_master("main") == ("127.0.0.1", expected)
        else:
            with pytest.raises(MasterNotFoundError) as raised:
                sentinel.discover_master("main")
            # Silent only when none answered; a Sentinel that says the master is down is an answer.
            assert type(raised.value) is expected
    finally:
        sentinel.close()
    outcome = {"ok": "master", "sdown": "no_master", "silent": "silent"}
    assert questions(metrics) == dict(Counter(outcome[mode] for mode in modes))
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_a_lagging_sentinel_listed_first_fails_no_connection_and_is_asked_second(
        stubs: Callable[..., list[StubSentinel]], clock: FakeClock) -> None:
    metrics = Metrics(CollectorRegistry())
    lagging, good = stubs("ok", "ok")
    good.master_port = lagging.master_port
    sentinel = steady_sentinel([lagging, good], metrics, clock)
    try:
        assert sentinel.discover_master("main") == ("127.0.0.1", 7000)
        lagging.mode = "sdown"  # cut off from the master, which serves on; the other Sentinel sees it up
        assert sentinel.discover_master("main") == ("127.0.0.1", 7000)
        assert questions(metrics) == {"master": 2, "no_master": 1}
        # The one that named the master is asked first from now on.
        assert sentinel.discover_master("main") == ("127.0.0.1", 7000)
        assert questions(metrics) == {"master": 3, "no_master": 1}
    finally:
        sentinel.close()


def test_a_sentinel_that_refuses_the_password_is_an_error_each_minute_and_counted(
        stubs: Callable[..., list[StubSentinel]], clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(CollectorRegistry())
    [stub] = stubs("ok")
    sentinel = steady_sentinel([stub], metrics, clock, password="sentinel-pw-0123")
    address = f"127.0.0.1:{stub.port}"
    try:
        assert sentinel.discover_master("main") == ("127.0.0.1", 7000)
        stub.mode = "wrongpass"  # its password changed, and the portal's did not
        with caplog.at_level(logging.INFO, "portal.redis_target"):
            # The master is still the one they named, and serves: new connections go on to it.
            for _ in range(4):
                assert sentinel.discover_master("main") == ("127.0.0.1", 7000)
                clock.advance(SENTINEL_QUIET + 1)  # past the quiet: the next one asks again
            assert questions(metrics) == {"master": 1, "refused": 4}
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert errors == [f"Redis Sentinel: the Sentinel at {address} refused REDIS_SENTINEL_PASSWORD (wrong, or "
                              "not set where it asks for one)"]
            clock.advance(REFUSAL_LOG_EVERY)
            assert sentinel.discover_master("main") == ("127.0.0.1", 7000)
            assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and "refused REDIS_SENTINEL_PASSWORD" in warnings[0]
            assert "sentinel-pw-0123" not in caplog.text
            stub.mode = "ok"
            clock.advance(SENTINEL_QUIET + 1)
            assert sentinel.discover_master("main") == ("127.0.0.1", 7000)
            assert "A Sentinel answers again" in caplog.text
    finally:
        sentinel.close()
    assert questions(metrics) == {"master": 2, "refused": 5}


def test_once_the_sentinels_say_the_master_is_down_no_thread_is_handed_it(
        stubs: Callable[..., list[StubSentinel]]) -> None:
    metrics = Metrics(CollectorRegistry())
    [stub] = stubs("ok")
    sentinel = steady_sentinel([stub], metrics)

    def connect_to() -> str:
        try:
            host, port = sentinel.discover_master("main")
        except MasterNotFoundError:
            return "no master"
        return f"{host}:{port}"

    try:
        assert connect_to() == "127.0.0.1:7000"
        stub.mode = "sdown"  # a failover under way: the old master may still answer writes
        assert connect_to() == "no master"
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert list(pool.map(lambda _: connect_to(), range(8))) == ["no master"] * 8
        stub.mode = "ok"
        assert connect_to() == "127.0.0.1:7000"
    finally:
        sentinel.close()


def test_threads_that_know_no_master_yet_ask_the_sentinels_once(stubs: Callable[..., list[StubSentinel]]) -> None:
    metrics = Metrics(CollectorRegistry())
    sentinel = steady_sentinel(stubs("silent", "ok"), metrics)
    # All at once, as a page's requests arrive: a thread that came after the first answer would rightly ask again.
    together = threading.Barrier(8)

    def discover(_: int) -> tuple[str, int]:
        together.wait()
        return sentinel.discover_master("main")

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            found = list(pool.map(discover, range(8)))
    finally:
        sentinel.close()
    # One thread asked (the silent one's 0.5 s, then the other); the rest waited for it and took its master.
    assert found == [("127.0.0.1", 7001)] * 8
    assert questions(metrics) == {"silent": 1, "master": 1}


def test_options_the_portal_does_not_use_are_refused() -> None:
    with pytest.raises(TypeError):
        SteadySentinel([("127.0.0.1", 26379)], sentinel_kwargs={}, force_master_ip="10.0.0.1")  # type: ignore[call-arg]
