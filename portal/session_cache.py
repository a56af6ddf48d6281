"""A worker's copy of the Redis session records it has read, kept true by Redis itself.

Reading the session record is the one store round trip a normal request makes. Redis's
client-side caching removes it safely: one connection per worker asks for CLIENT TRACKING in
broadcast mode, and from then on Redis pushes an "invalidate" message on it whenever a key under
the session prefix changes, expires or is deleted, by any worker of any replica. Before each
lookup the worker reads the messages that have arrived. Redis sends a message in the same turn
of its event loop as its reply to the write, so by the time anything can follow a logout (the
browser's next request, on whatever replica), the message waits on every worker's socket.

Whenever the tracking connection is lost, the copies are dropped and records are read from Redis
until it is back.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger(__name__)

# How long to read straight from Redis after the tracking connection failed, before trying again.
RETRY_AFTER = 5.0
# Bounds how long a copy can outlive an invalidation that never arrived (a silent network split).
MAX_AGE = 60.0


class SessionCache:
    """Session records by key, each dropped as soon as Redis reports that it changed."""

    def __init__(self, url: str, prefix: str, *, connect_timeout: float, max_entries: int = 10_000) -> None:
        self._url = url
        self._prefix = prefix
        self._connect_timeout = connect_timeout
        self._max_entries = max_entries
        self._lock = threading.Lock()
        # A key maps to (read at, record), or to a marker while a thread reads it from Redis.
        self._entries: dict[str, tuple[float, bytes] | object] = {}
        self._client: redis.Redis | None = None
        self._connection: Any = None
        # The tracking socket's file descriptor; -1 while there is no tracking connection.
        self._fd = -1
        self._pid = 0
        self._retry_at = 0.0
        self._supported = True

    def get(self, key: str, load: Callable[[str], bytes | None]) -> bytes | None:
        """The record under key: this worker's copy when Redis has not changed it, else load(key)."""
        now = time.monotonic()
        if self._quiet():
            entry = self._entries.get(key)
            if isinstance(entry, tuple) and now - entry[0] < MAX_AGE:
                copy: bytes = entry[1]
                return copy
        with self._lock:
            tracking = self._read_invalidations(now)
            entry = self._entries.get(key)
            if tracking and isinstance(entry, tuple) and now - entry[0] < MAX_AGE:
                record: bytes = entry[1]
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

    def forget(self, key: str) -> None:
        """Drop the copy after this worker wrote or deleted the record (before Redis's message arrives)."""
        with self._lock:
            self._entries.pop(key, None)

    def _quiet(self) -> bool:
        """True when tracking is on, no message waits on the socket, and no thread is reading one.

        Checked without the lock: a lock held across a system call makes every thread of the worker
        queue behind the one that waits to get the GIL back. A message that arrived before this poll is
        either still on the socket, or being applied by a thread that holds the lock.
        """
        fd = self._fd
        if fd < 0 or self._pid != os.getpid():
            return False
        # A poll object per call: one object cannot be polled by two threads at once.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return not poller.poll(0) and not self._lock.locked()

    def close(self) -> None:
        with self._lock:
            self._drop(time.monotonic())

    def _read_invalidations(self, now: float) -> bool:
        """Apply the messages Redis has pushed; False when records cannot be tracked just now."""
        if self._pid != os.getpid():
            # A forked worker never shares its parent's socket, nor trusts copies it cannot track.
            self._client, self._connection, self._fd = None, None, -1
            self._entries, self._pid = {}, os.getpid()
        if self._connection is None:
            if not self._supported or now < self._retry_at:
                return False
            self._connect(now)
            if self._connection is None:
                return False
        try:
            while self._connection.can_read(timeout=0):
                self._connection.read_response(push_request=True)
        except (redis.RedisError, OSError) as error:
            log.warning("Session cache: lost the tracking connection to Redis (%s); reading Redis directly",
                        error.__class__.__name__)
            self._drop(now)
            return False
        return True

    def _connect(self, now: float) -> None:
        # A connection of its own, outside any pool: it carries only Redis's pushed messages (RESP3).
        client = redis.Redis.from_url(self._url, protocol=3, socket_connect_timeout=self._connect_timeout,
                                      socket_timeout=self._connect_timeout)
        connection: Any = client.connection_pool.make_connection()
        try:
            connection.connect()
            connection.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self._prefix)
            connection.read_response()
        except redis.ResponseError as error:
            connection.disconnect()
            client.close()
            self._supported = False
            log.warning("Session cache off: this Redis does not allow CLIENT TRACKING (%s)", error.__class__.__name__)
            return
        except (redis.RedisError, OSError) as error:
            connection.disconnect()
            client.close()
            self._retry_at = now + RETRY_AFTER
            log.warning("Session cache: cannot open the tracking connection to Redis (%s)", error.__class__.__name__)
            return
        # redis-py delivers "invalidate" pushes to the parser's handler; its own client-side cache does the same.
        connection._parser.set_invalidation_push_handler(self._invalidated)
        # Copies from before this connection may have missed messages.
        self._entries = {}
        self._client, self._connection = client, connection
        self._fd = connection._sock.fileno()

    def _invalidated(self, message: list[Any]) -> None:
        keys = message[1]
        if keys is None:
            # FLUSHDB or FLUSHALL.
            self._entries = {}
            return
        for key in keys:
            self._entries.pop(key.decode() if isinstance(key, bytes) else key, None)

    def _drop(self, now: float) -> None:
        client, connection = self._client, self._connection
        self._client, self._connection, self._fd = None, None, -1
        self._entries = {}
        self._retry_at = now
        if connection is not None:
            connection.disconnect()
        if client is not None:
            client.close()

    def _make_room(self) -> None:
        while len(self._entries) >= self._max_entries:
            # Oldest first: dicts keep insertion order.
            del self._entries[next(iter(self._entries))]
