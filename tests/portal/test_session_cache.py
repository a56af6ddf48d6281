"""A worker's copy of session records: served without a round trip, dropped whenever Redis changes them."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from portal import redis_target, session_cache
from portal.redis_target import RedisTarget
from portal.session_cache import SessionCache
from tests.conftest import RedisServer, Sentinels, replicated, start_redis, start_sentinels
from tests.support import stop

PREFIX = "mediaflow:session:"
KEY = PREFIX + "0123abcd"


class Reads:
    """The cache's way to the store, counting the round trips it makes."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.count = 0

    def __call__(self, key: str) -> bytes | None:
        self.count += 1
        value: bytes | None = self.client.get(key)
        return value


@pytest.fixture
def store(redis_server: RedisServer) -> redis.Redis:
    redis_server.client.flushdb()
    redis_server.client.set(KEY, b"old")
    return redis_server.client


@pytest.fixture
def cache(redis_server: RedisServer) -> Iterator[SessionCache]:
    made = SessionCache(RedisTarget(redis_server.url), PREFIX, connect_timeout=1.0)
    yield made
    made.close()


def settled(store: redis.Redis) -> None:
    # Redis sends its invalidation messages in the turn that answers the write; a later round trip
    # from the writer is the test's stand-in for "the next request comes after the write".
    store.ping()


def eventually(condition: Callable[[], bool], seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_record_is_read_from_redis_once_then_served_from_the_copy(cache: SessionCache, store: redis.Redis) -> None:
    reads = Reads(store)
    assert [cache.get(KEY, reads) for _ in range(5)] == [b"old"] * 5
    assert reads.count == 1


def test_a_missing_record_is_never_kept(cache: SessionCache, store: redis.Redis) -> None:
    reads = Reads(store)
    assert cache.get(PREFIX + "unknown", reads) is None
    assert cache.get(PREFIX + "unknown", reads) is None
    assert reads.count == 2


CHANGES: dict[str, tuple[Callable[[redis.Redis], Any], bytes | None]] = {
    "overwritten": (lambda r: r.set(KEY, b"new"), b"new"),
    "overwritten with a lifetime": (lambda r: r.set(KEY, b"new", ex=60), b"new"),
    "deleted": (lambda r: r.delete(KEY), None),
    "renamed away": (lambda r: r.rename(KEY, "elsewhere"), None),
    "database flushed": (lambda r: r.flushdb(), None),
    "written in a transaction": (lambda r: r.pipeline().set(KEY, b"new").expire(KEY, 60).execute(), b"new"),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_a_change_by_another_writer_reaches_the_next_read(
    cache: SessionCache, store: redis.Redis, change: tuple[Callable[[redis.Redis], Any], bytes | None]
) -> None:
    write, expected = change
    reads = Reads(store)
    assert cache.get(KEY, reads) == b"old"

    write(store)
    settled(store)

    assert cache.get(KEY, reads) == expected
    assert reads.count == 2


def test_a_record_that_expires_in_redis_is_dropped_too(cache: SessionCache, store: redis.Redis) -> None:
    reads = Reads(store)
    store.pexpire(KEY, 50)
    assert cache.get(KEY, reads) == b"old"
    # Nothing reads the key from Redis meanwhile: Redis's own expiry cycle must send the message.
    assert eventually(lambda: cache.get(KEY, reads) is None)


def test_a_read_that_failed_mid_outage_does_not_break_later_reads(cache: SessionCache, store: redis.Redis) -> None:
    def store_down(key: str) -> bytes | None:
        raise redis.ConnectionError("the store did not answer")

    with pytest.raises(redis.ConnectionError):
        cache.get(KEY, store_down)
    reads = Reads(store)
    assert [cache.get(KEY, reads) for _ in range(2)] == [b"old", b"old"]
    assert reads.count == 1


def test_keys_outside_the_session_prefix_do_not_drop_copies(cache: SessionCache, store: redis.Redis) -> None:
    reads = Reads(store)
    cache.get(KEY, reads)
    store.set("mediaflow:tokens:0123abcd", b"x")
    settled(store)
    assert cache.get(KEY, reads) == b"old"
    assert reads.count == 1


def test_forget_drops_the_copy_before_redis_says_so(cache: SessionCache, store: redis.Redis) -> None:
    reads = Reads(store)
    cache.get(KEY, reads)
    store.set(KEY, b"mine")
    cache.forget(KEY)  # this worker wrote it: the next read must not wait for Redis's message
    assert cache.get(KEY, reads) == b"mine"


def test_a_value_read_while_another_request_saw_it_change_is_not_kept(cache: SessionCache,
                                                                      store: redis.Redis) -> None:
    def read_then_changed_by_another_writer(key: str) -> bytes | None:
        value: bytes | None = store.get(key)
        store.set(key, b"new")
        settled(store)
        # Another thread's request reads the message and the new record meanwhile.
        assert cache.get(key, Reads(store)) == b"new"
        return value

    assert cache.get(KEY, read_then_changed_by_another_writer) == b"old"
    assert cache.get(KEY, Reads(store)) == b"new"


def test_threads_reading_at_once_all_see_a_change_once_it_is_made(cache: SessionCache, store: redis.Redis,
                                                                 redis_server: RedisServer) -> None:
    changed = threading.Event()
    stale: list[bytes | None] = []

    def reader() -> None:
        client = redis.Redis.from_url(redis_server.url)
        reads = Reads(client)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            after_change = changed.is_set()
            value = cache.get(KEY, reads)
            if after_change and value != b"new":
                stale.append(value)
        client.close()

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    store.set(KEY, b"new")
    settled(store)
    changed.set()
    for thread in threads:
        thread.join()
    assert stale == []


def served_from_copy(cache: SessionCache, reads: Any, value: bytes) -> bool:
    """Whether the record reads as value, the second time from the worker's copy (no read of Redis)."""
    first = cache.get(KEY, reads)
    count = reads.count
    return bool(first == value and cache.get(KEY, reads) == value and reads.count == count)


def tracking_connections(store: redis.Redis) -> list[dict[str, Any]]:
    return [c for c in store.client_list() if "t" in c["flags"]]


def test_one_connection_per_worker_tracks_and_receives_its_own_invalidations(cache: SessionCache,
                                                                             store: redis.Redis) -> None:
    cache.get(KEY, Reads(store))
    [tracking] = tracking_connections(store)
    # Subscribed (P), broadcast mode (B), redirecting to itself: if it drops, nothing keeps tracking
    # on a connection that no one reads.
    assert "P" in tracking["flags"] and "B" in tracking["flags"]
    assert tracking["redir"] == tracking["id"]


def test_a_lost_tracking_connection_drops_every_copy_and_comes_back(
    cache: SessionCache, store: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    reads = Reads(store)
    cache.get(KEY, reads)
    [tracking] = tracking_connections(store)
    store.client_kill_filter(_id=tracking["id"])
    store.set(KEY, b"new")  # no message can reach the killed connection

    with caplog.at_level(logging.WARNING, "portal.session_cache"):
        assert cache.get(KEY, reads) == b"new"
    assert "lost the tracking connection" in caplog.text

    # Tracking resumes with a new connection: copies are served and dropped as before.
    assert served_from_copy(cache, reads, b"new")
    assert len(tracking_connections(store)) == 1
    store.set(KEY, b"newer")
    settled(store)
    assert cache.get(KEY, reads) == b"newer"


@pytest.fixture
def quick_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PING every 0.2 s, copies trusted 0.5 s after the last answer: the same rule, in test time."""
    monkeypatch.setattr(session_cache, "HEARTBEAT", 0.2)
    monkeypatch.setattr(session_cache, "TRUSTED_FOR", 0.5)


@pytest.mark.usefixtures("quick_heartbeat")
def test_a_redis_that_stops_answering_stops_the_copies_within_seconds(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    cache = SessionCache(RedisTarget(server.url), PREFIX, connect_timeout=1.0)
    try:
        server.client.set(KEY, b"old")
        assert served_from_copy(cache, Reads(server.client), b"old")
        # Paused, Redis keeps the connection open and sends nothing: neither an invalidation nor an answer.
        server.process.send_signal(signal.SIGSTOP)
        try:
            assert eventually(lambda: cache.copy(KEY) is None, seconds=2.0)
        finally:
            server.process.send_signal(signal.SIGCONT)
        # Redis answers again after every message it sent before: the copies it did not invalidate serve again.
        assert eventually(lambda: cache.copy(KEY) == b"old")
    finally:
        cache.close()
        stop(server.process)


@pytest.mark.usefixtures("quick_heartbeat")
def test_after_a_quiet_spell_redis_is_read_until_it_answers_again(cache: SessionCache, store: redis.Redis) -> None:
    reads = Reads(store)
    assert served_from_copy(cache, reads, b"old")
    time.sleep(0.25)
    assert cache.get(KEY, reads) == b"old"  # sends a PING; its answer waits, unread, through the quiet spell
    time.sleep(0.7)  # no lookup: the latest answer is to a PING sent 0.7 s ago, which says nothing of since
    count = reads.count
    assert cache.get(KEY, reads) == b"old" and reads.count == count + 1
    assert eventually(lambda: served_from_copy(cache, reads, b"old"))


REFUSALS = {
    "CLIENT renamed away": ["--rename-command", "CLIENT", ""],
    "CLIENT TRACKING denied by ACL": ["--user", "default", "on", "nopass", "~*", "&*", "+@all", "-client|tracking"],
}


@pytest.mark.parametrize("refusal", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_redis_without_client_tracking_is_read_every_time(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                            refusal: list[str]) -> None:
    server = start_redis(tmp_path, extra=refusal)
    cache = SessionCache(RedisTarget(server.url), PREFIX, connect_timeout=1.0)
    try:
        server.client.set(KEY, b"old")
        reads = Reads(server.client)
        with caplog.at_level(logging.WARNING, "portal.session_cache"):
            assert [cache.get(KEY, reads) for _ in range(3)] == [b"old"] * 3
        assert reads.count == 3
        assert caplog.text.count("Session cache off") == 1
    finally:
        cache.close()
        server.client.close()
        stop(server.process)


def _read_in_child(cache: SessionCache, url: str, results: Any) -> None:
    client = redis.Redis.from_url(url)
    results.put(cache.get(KEY, Reads(client)))
    client.close()


def test_a_forked_worker_opens_its_own_tracking_connection(cache: SessionCache, store: redis.Redis,
                                                           redis_server: RedisServer) -> None:
    reads = Reads(store)
    cache.get(KEY, reads)
    store.set(KEY, b"new")
    settled(store)

    # gunicorn forks workers: the child must neither use the parent's socket nor trust its copies.
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_read_in_child, args=(cache, redis_server.url, results))
    child.start()
    assert results.get(timeout=10) == b"new"
    child.join(timeout=10)
    assert child.exitcode == 0

    # The parent's tracking connection still works.
    assert cache.get(KEY, reads) == b"new"
    store.set(KEY, b"newer")
    settled(store)
    assert cache.get(KEY, reads) == b"newer"


def test_copies_are_dropped_when_sentinel_names_another_master(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    servers = []
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        servers.append(start_redis(tmp_path / name))
    old, new = servers
    sentinels = start_sentinels(tmp_path, old.port, replicas=0, count=1)
    target = RedisTarget("redis://main/0", sentinels=[("127.0.0.1", sentinels.ports[0])], master="main")
    store = target.client()
    cache = SessionCache(target, PREFIX, connect_timeout=1.0, store=store)
    try:
        old.client.set(KEY, b"on the old master")
        new.client.set(KEY, b"on the new master")
        reads = Reads(store)
        assert [cache.get(KEY, reads) for _ in range(2)] == [b"on the old master"] * 2
        assert reads.count == 1

        # Sentinel names another master while this worker's tracking connection to the old one stays open
        # (a failover it did not see); the session client moves at its next connection.
        sentinels.clients[0].sentinel_remove("main")
        sentinels.clients[0].sentinel_monitor("main", "127.0.0.1", new.port, 1)
        store.connection_pool.disconnect()
        store.ping()
        with caplog.at_level(logging.WARNING, "portal.session_cache"):
            assert cache.get(KEY, reads) == b"on the new master"
        assert "Sentinel named another master" in caplog.text

        # Tracking starts again on the new master: copies are kept, and dropped by its messages.
        assert served_from_copy(cache, reads, b"on the new master")
        new.client.set(KEY, b"newer")
        settled(new.client)
        assert cache.get(KEY, reads) == b"newer"
    finally:
        cache.close()
        store.close()
        target.close()
        sentinels.stop()
        for server in servers:
            server.client.close()
            stop(server.process)


def test_a_planned_failover_drops_copies_within_a_second(tmp_path: Path) -> None:
    for name in ("master", "replica"):
        (tmp_path / name).mkdir()
    master = start_redis(tmp_path / "master")
    replica = start_redis(tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(master.port)])
    sentinels = start_sentinels(tmp_path, master.port, replicas=1, count=1)
    target = RedisTarget("redis://main/0", sentinels=[("127.0.0.1", sentinels.ports[0])], master="main")
    store = target.client()
    cache = SessionCache(target, PREFIX, connect_timeout=1.0, store=store)
    try:
        store.set(KEY, b"old")
        replicated(master)
        reads = Reads(store)
        assert [cache.get(KEY, reads) for _ in range(2)] == [b"old"] * 2

        # SENTINEL FAILOVER: the old master runs on, a master with open connections, until Sentinel
        # demotes it about 10 s later. Sentinel refuses while it has not yet judged the replica.
        assert eventually(lambda: _failover(sentinels), seconds=15)
        assert eventually(lambda: sentinels.master_port() == replica.port, seconds=10)
        replica.client.set(KEY, b"new")
        switched = time.monotonic()
        assert eventually(lambda: cache.get(KEY, reads) == b"new", seconds=3)
        # Within the once-a-second question and a busy machine's slack.
        assert time.monotonic() - switched < 2.5
        assert master.client.info("replication")["role"] == "master"  # not yet demoted
    finally:
        cache.close()
        store.close()
        target.close()
        sentinels.stop()
        for server in (master, replica):
            server.client.close()
            stop(server.process)


def test_a_stopped_sentinel_holds_up_only_the_request_that_asks_it_and_briefly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    master = start_redis(tmp_path)
    sentinels = start_sentinels(tmp_path, master.port, replicas=0, count=1)
    timeout = 2.0
    # A longer wait for the Sentinel than the portal's 0.5 s: the thread that asks and those that do not are then
    # told apart by a wide margin, however busy the machine.
    asking = 1.5
    monkeypatch.setattr(redis_target, "SENTINEL_TIMEOUT", asking)
    target = RedisTarget("redis://main/0", sentinels=[("127.0.0.1", sentinels.ports[0])], master="main",
                         timeout=timeout)
    store = target.client()
    cache = SessionCache(target, PREFIX, connect_timeout=timeout, store=store)
    # Straight to the master: what is timed is the cache's own work, not the session client's new connections.
    reads = Reads(master.client)
    try:
        master.client.set(KEY, b"old")
        assert [cache.get(KEY, reads) for _ in range(2)] == [b"old"] * 2
        sentinels.processes[0].send_signal(signal.SIGSTOP)
        time.sleep(1.1)  # the once-a-second question is due

        def page_loads() -> list[float]:
            start = threading.Barrier(8)
            seconds: list[float] = []

            def load() -> None:
                start.wait()
                began = time.monotonic()
                assert cache.get(KEY, reads) == b"old"
                seconds.append(time.monotonic() - began)

            threads = [threading.Thread(target=load) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(seconds) == 8
            return sorted(seconds)

        # One request asks and waits out the Sentinel's brief timeout (not MEDIAFLOW_CONNECT_TIMEOUT's 2 s); the others
        # go on with the master they know. Its copies stay: the tracking connection to that master is still open.
        first = page_loads()
        assert first[-1] < asking + 1 and all(elapsed < asking - 0.5 for elapsed in first[:-1]), first
        assert reads.count == 1
        # A question no Sentinel answered is not asked again at once.
        assert all(elapsed < asking - 0.5 for elapsed in page_loads())
        assert reads.count == 1
    finally:
        sentinels.processes[0].send_signal(signal.SIGCONT)
        cache.close()
        store.close()
        target.close()
        sentinels.stop()
        master.client.close()
        stop(master.process)


def _failover(sentinels: Sentinels) -> bool:
    try:
        return bool(sentinels.clients[0].execute_command("SENTINEL", "FAILOVER", sentinels.name))
    except redis.ResponseError:
        return False  # NOGOODSLAVE: the replica is not judged yet
