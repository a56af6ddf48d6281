"""A worker's copy of the Redis session records it has read, kept true by Redis itself.

Reading the session record is the one store round trip a normal request makes. Redis's
client-side caching removes it safely. Each worker opens one redis-py PubSub connection (RESP2),
asks for its own id (CLIENT ID), turns on CLIENT TRACKING in broadcast mode with REDIRECT to that
id, and subscribes to __redis__:invalidate. From then on Redis publishes an "invalidate" message
there whenever a key under the session prefix changes, expires or is deleted, by any worker of any
replica (a null key list for FLUSHDB and FLUSHALL). Before each lookup the worker asks the
connection whether anything has arrived (its can_read(timeout=0), a poll of the socket) and reads
what has with PubSub.get_message, under the cache's lock. Redis sends a message in the same
turn of its event loop as its reply to the write, so by the time anything can follow a logout (the
browser's next request, on whatever replica), the message waits on every worker's socket.

One connection both tracks and listens: in RESP2 a separate tracking connection that dropped would
go unnoticed (Redis reports a broken redirect only to RESP3 connections), and its copies would
never be dropped. Here losing the connection is an error where the messages are read: the copies
are dropped, and records are read from Redis until tracking is back. A connection that stays open
while Redis is silent (hung, or a split that drops packets) is caught by a PING every HEARTBEAT:
copies serve only while Redis answered one within TRUSTED_FOR.

Behind Sentinel, the tracking connection must be on the master the session records are read from.
It is opened after the session client has asked a Sentinel for the master, and copies are kept only
while both point at the same one: after a failover the old master's connection breaks or is killed
by Sentinel, or the session client moves first; either way the copies are dropped and tracking
starts again on the new master. A planned failover breaks nothing until Sentinel demotes the old
master, so each worker also asks a Sentinel which master it names, at most once a second; the
answer moves the session client too. One thread asks while the others go on; while no Sentinel
answers, the question ends after each Sentinel's brief timeout with the master they last named
(redis_target.SteadySentinel), and the copies stay: their tracking connection is on that master.

redis-py's own client-side cache (cache_config) would do this for us, but it needs Redis 7.4 or
later; Debian 12 ships 7.0.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.retry import Retry

from .redis_target import RedisTarget, describe

log = logging.getLogger(__name__)

CHANNEL = "__redis__:invalidate"
# How long to read straight from Redis after the tracking connection failed, before trying again.
RETRY_AFTER = 5.0
# Bounds how long a copy can outlive an invalidation that never arrived (a silent network split).
MAX_AGE = 60.0
# A worker in use sends Redis a PING this often on the tracking connection, and uses its copies only while
# Redis has answered one sent within TRUSTED_FOR: Redis answers after every message it sent before, so the
# answer says no invalidation from before that PING is missing. A split that keeps the connection open (or a
# Redis that hangs) stops the copies within seconds instead of MAX_AGE: the worker reads Redis, and fails closed.
HEARTBEAT = 1.0
TRUSTED_FOR = 3.0
# Behind Sentinel, how often a worker asks which master it names, although no connection broke.
ASK_SENTINEL_EVERY = 1.0


class SessionCache:
    """Session records by key, each dropped as soon as Redis reports that it changed."""

    def __init__(self, target: RedisTarget, prefix: str, *, connect_timeout: float, store: redis.Redis | None = None,
                 max_entries: int = 10_000) -> None:
        self._target = target
        # The client that reads the records: copies are kept only while it and the tracking connection share a server.
        self._store = store
        self._prefix = prefix
        self._connect_timeout = connect_timeout
        self._max_entries = max_entries
        self._lock = threading.Lock()
        # Held by the one thread that connects or asks Sentinel, outside _lock: a slow Sentinel holds up only it.
        self._asking = threading.Lock()
        # A key maps to (read at, record), or to a marker while a thread reads it from Redis.
        self._entries: dict[str, tuple[float, bytes] | object] = {}
        self._client: redis.Redis | None = None
        self._pubsub: PubSub | None = None
        # Set by redis-py when it reconnects the PubSub connection by itself: the new one does not track.
        self._reconnected = False
        # The master the tracking connection is on (behind Sentinel; else None).
        self._tracked: tuple[str, int] | None = None
        self._pid = 0
        self._retry_at = 0.0
        self._ask_at = 0.0
        self._pinged_at = 0.0
        self._answered_at = 0.0
        self._supported = True

    def get(self, key: str, load: Callable[[str], bytes | None]) -> bytes | None:
        """The record under key: this worker's copy when Redis has not changed it, else load(key)."""
        now = time.monotonic()
        self._keep_up(now)
        with self._lock:
            tracking = self._read_invalidations(now)
            record = self._live(key, now) if tracking else None
            if record is not None:
                return record
            marker = object()
            if tracking:
                self._make_room()
                self._entries[key] = marker
        try:
            value = load(key)
        except BaseException:
            if tracking:
                with self._lock:
                    if self._entries.get(key) is marker:
                        del self._entries[key]
            raise
        if tracking:
            with self._lock:
                # An invalidation read meanwhile removed the marker: the value may be stale, do not keep it.
                if self._entries.get(key) is marker:
                    if value is None:
                        del self._entries[key]
                    else:
                        self._entries[key] = (now, value)
        return value

    def copy(self, key: str) -> bytes | None:
        """This worker's copy of the record under key while Redis has not changed it, else None; never reads Redis."""
        now = time.monotonic()
        self._keep_up(now)
        with self._lock:
            return self._live(key, now) if self._read_invalidations(now) else None

    def forget(self, key: str) -> None:
        """Drop the copy after this worker wrote or deleted the record (before Redis's message arrives)."""
        with self._lock:
            self._entries.pop(key, None)

    def close(self) -> None:
        with self._lock:
            self._drop(time.monotonic())

    def _live(self, key: str, now: float) -> bytes | None:
        entry = self._entries.get(key)
        return entry[1] if isinstance(entry, tuple) and now - entry[0] < MAX_AGE else None

    def _keep_up(self, now: float) -> None:
        """Open the tracking connection, or ask Sentinel, when due: one thread does it while the others go on."""
        if self._due(now) and self._asking.acquire(blocking=False):
            try:
                self._reach_redis(now)
            finally:
                self._asking.release()

    def _due(self, now: float) -> bool:
        """Whether the tracking connection is to be opened, or Sentinel asked (read without the lock: a hint)."""
        if self._pid != os.getpid():
            return True
        if self._pubsub is None:
            return self._supported and now >= self._retry_at
        return self._store is not None and now >= self._ask_at

    def _reach_redis(self, now: float) -> None:
        """Open the tracking connection, or ask which master Sentinel names: network calls, outside _lock."""
        with self._lock:
            if self._pid != os.getpid():
                # A forked worker never shares its parent's socket, nor trusts copies it cannot track.
                self._client, self._pubsub, self._reconnected = None, None, False
                self._entries, self._pid = {}, os.getpid()
            connect = self._pubsub is None and self._supported and now >= self._retry_at
            ask = self._pubsub is not None and self._store is not None and now >= self._ask_at
            if ask:
                self._ask_at = now + ASK_SENTINEL_EVERY
        if connect:
            self._connect(now)
        elif ask and self._store is not None:
            # A planned failover leaves the old master running, and every connection to it open, until
            # Sentinel demotes it some 10 s later: ask which master Sentinel names (no I/O without Sentinel).
            try:
                self._target.server(self._store, ask=True)
            except (redis.RedisError, OSError) as error:
                with self._lock:
                    self._lost(now, describe(error, self._store), retry_after=RETRY_AFTER)

    def _read_invalidations(self, now: float) -> bool:
        """Apply the messages Redis has published; False when records cannot be tracked just now."""
        if self._pubsub is None or self._pid != os.getpid():
            return False
        connection = self._pubsub.connection
        assert connection is not None  # set when the cache subscribed
        try:
            # The connection's own readiness check first, under the lock like every read: most lookups find
            # nothing, and get_message would go through its command machinery to learn the same.
            while connection.can_read(timeout=0):
                message = self._pubsub.get_message(timeout=0)
                if message is None:
                    break
                if message["type"] == "pong":
                    # The PING carried its own send time: an answer read late says nothing about later.
                    self._answered_at = max(self._answered_at, _sent_at(message["data"]))
                else:
                    self._invalidated(message)
            if now - self._pinged_at >= HEARTBEAT:
                self._pubsub.ping(repr(now))  # its answer arrives as a "pong" message, read like the others
                self._pinged_at = now
        except (redis.RedisError, OSError) as error:
            self._lost(now, error.__class__.__name__)
            return False
        if self._reconnected:
            self._lost(now, "reconnected")
            return False
        if self._store is not None and self._target.server(self._store) != self._tracked:
            self._lost(now, "Sentinel named another master")
            return False
        # Idle a while, or Redis silent: read Redis until it answers a PING sent within TRUSTED_FOR. The clock is
        # read again: asking a Sentinel may have taken a while since `now`.
        return time.monotonic() - self._answered_at <= TRUSTED_FOR

    def _connect(self, now: float) -> None:
        # A client of its own, outside the session pool. RESP2, so that invalidations arrive as PubSub
        # messages; no retry, and no error that redis-py would answer by reconnecting under the cache's lock,
        # so that a broken connection is reported instead of silently replaced.
        client = self._target.client(protocol=2, socket_connect_timeout=self._connect_timeout,
                                     socket_timeout=self._connect_timeout,
                                     retry=Retry(NoBackoff(), 0, supported_errors=()))
        pubsub: PubSub = client.pubsub()
        try:
            if self._store is not None:
                # Behind Sentinel: bring the session client up to date on the master, to track that one.
                self._target.server(self._store, ask=True)
            # Before SUBSCRIBE: a RESP2 connection that has subscribed accepts no other commands.
            own_id = self._ask(pubsub, "CLIENT", "ID")
            self._ask(pubsub, "CLIENT", "TRACKING", "ON", "REDIRECT", own_id, "BCAST", "PREFIX", self._prefix)
            pubsub.subscribe(CHANNEL)
            confirmed = pubsub.get_message(timeout=self._connect_timeout)
            if confirmed is None or confirmed["type"] != "subscribe":
                raise redis.ConnectionError("no confirmation of the subscription")
            tracked = self._target.server(client)
            if self._store is not None and self._target.server(self._store) != tracked:
                raise redis.ConnectionError("Sentinel named another master meanwhile")
        except redis.ResponseError as error:
            pubsub.close()
            client.close()
            self._supported = False
            log.warning("Session cache off: this Redis does not allow CLIENT TRACKING (%s)", error.__class__.__name__)
            return
        except (redis.RedisError, OSError) as error:
            pubsub.close()
            client.close()
            with self._lock:
                self._retry_at = now + RETRY_AFTER
            log.warning("Session cache: cannot open the tracking connection to Redis (%s)", describe(error, client))
            return
        assert pubsub.connection is not None  # set by the first command
        pubsub.connection.register_connect_callback(self._on_reconnect)
        with self._lock:
            # Copies from before this connection may have missed messages.
            self._entries = {}
            self._client, self._pubsub, self._reconnected, self._tracked = client, pubsub, False, tracked
            self._pinged_at = self._answered_at = now  # the subscription was just confirmed

    def _ask(self, pubsub: PubSub, *command: Any) -> Any:
        """Send a command on the PubSub connection and wait for its answer."""
        pubsub.execute_command(*command)
        answer = pubsub.parse_response(block=False, timeout=self._connect_timeout)
        if answer is None:
            raise redis.TimeoutError("Redis did not answer in time")
        return answer

    def _on_reconnect(self, connection: Any) -> None:
        self._reconnected = True

    def _invalidated(self, message: dict[str, Any]) -> None:
        if message["type"] != "message":
            return
        keys = message["data"]
        if keys is None:
            # FLUSHDB or FLUSHALL.
            self._entries = {}
            return
        for key in keys:
            self._entries.pop(key.decode() if isinstance(key, bytes) else key, None)

    def _lost(self, now: float, reason: str, retry_after: float = 0.0) -> None:
        log.warning("Session cache: lost the tracking connection to Redis (%s); reading Redis directly", reason)
        self._drop(now, retry_after)

    def _drop(self, now: float, retry_after: float = 0.0) -> None:
        client, pubsub = self._client, self._pubsub
        self._client, self._pubsub, self._reconnected = None, None, False
        self._entries = {}
        self._retry_at = now + retry_after
        if pubsub is not None:
            pubsub.close()
        if client is not None:
            client.close()

    def _make_room(self) -> None:
        while len(self._entries) >= self._max_entries:
            # Oldest first: dicts keep insertion order.
            del self._entries[next(iter(self._entries))]


def _sent_at(data: Any) -> float:
    """The send time that one of the cache's PINGs carried, from its answer; 0 for any other answer."""
    try:
        return float(data)
    except (TypeError, ValueError):
        return 0.0
