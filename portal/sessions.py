"""Server-side sessions (Flask-Session) and the token store beside them, on one backend.

Session records are data, never code: Flask-Session 0.8 falls back to pickle for a Redis record it
cannot decode, and cachelib's file cache pickles every value, so whoever can write to the store could
run code in a worker. Both backends here read msgpack or JSON only, and a record without the shape
the portal wrote starts a new, empty session.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import redis
from flask import Flask, current_app, render_template
from flask.sessions import SessionMixin
from flask_session.base import Serializer, ServerSideSession
from flask_session.cachelib import CacheLibSessionInterface
from flask_session.redis import RedisSessionInterface
from werkzeug.wrappers import Request, Response

from . import metrics
from .redis_target import RedisTarget, describe
from .session_cache import SessionCache
from .stores import SWEEP_INTERVAL, UNREADABLE, FileTokenStore, JsonFileCache, RedisTokenStore
from .tokens import TokenStore

log = logging.getLogger(__name__)
STORE_ERRORS = (redis.exceptions.RedisError, OSError)

# How long a login may take between /login and /callback. A session that holds no login lives this
# long in the store, not a whole session lifetime: anonymous visitors cannot fill it.
LOGIN_LIFETIME = 600
# The values the portal reads from a session, and their types.
RECORD_SHAPE: dict[str, type | tuple[type, ...]] = {
    "tokens_key": str, "user": dict, "login_at": (int, float), "seen_at": (int, float), "pending_logins": dict,
    "csrf_token": str, "_flashes": list, "_permanent": bool,
}


# Write the idle-timeout mark at most this often, so most requests do not write the session.
SEEN_RESOLUTION = 60
# tokens.TokenService.start makes these: secrets.token_urlsafe(32).
TOKENS_KEY = re.compile(r"[A-Za-z0-9_-]{43}")


def well_formed(record: dict[str, Any]) -> bool:
    """True when every value in this record has the type the portal (or an extension) wrote.

    Values the portal reads have their own type; any other key is an extension's record, which is a
    dict (Authlib's login states), so no planted value can make a library fail on every request.
    """
    return (UNREADABLE not in record
            and all(isinstance(value, RECORD_SHAPE.get(name, dict)) for name, value in record.items())
            # Times a clock can reach: NaN or infinity would never time out, and True is an int to Python.
            and all(math.isfinite(record[name]) and not isinstance(record[name], bool)
                    for name in ("login_at", "seen_at") if name in record)
            and ("tokens_key" not in record or TOKENS_KEY.fullmatch(record["tokens_key"]) is not None)
            # Flask's flashed messages: [category, message] pairs, which every page's template reads.
            and all(isinstance(flash, list | tuple) and len(flash) == 2 and all(isinstance(part, str) for part in flash)
                    for flash in record.get("_flashes", [])))


def timed_out(record: Mapping[str, Any], now: float, config: Mapping[str, Any]) -> str | None:
    """Why a logged-in session is over by the clock ("lifetime" or "idle"), or None while it is not."""
    if now - record.get("login_at", 0) > config["SESSION_MAX_LIFETIME"]:
        return "lifetime"
    if now - record.get("seen_at", 0) > config["SESSION_IDLE_TIMEOUT"]:
        return "idle"
    return None


def seen_mark_due(record: Mapping[str, Any], now: float, config: Mapping[str, Any]) -> bool:
    """True when this request is to write the idle-timeout mark (seen_at) into the session."""
    return bool(now - record.get("seen_at", 0) > min(SEEN_RESOLUTION, config["SESSION_IDLE_TIMEOUT"] / 10))


class RecordSerializer(Serializer):
    """Redis records as msgpack, as Flask-Session writes them; decoding never falls back to pickle."""

    def encode(self, session: ServerSideSession) -> bytes:
        return msgspec.msgpack.encode(dict(session))

    def decode(self, serialized_data: bytes) -> dict[str, Any]:
        try:
            record = msgspec.msgpack.decode(serialized_data)
        except msgspec.DecodeError:
            return {UNREADABLE: True}
        return record if isinstance(record, dict) else {UNREADABLE: True}


class StoreGuard:
    """Let a session-store outage reach the error handler as a 503, not a 500 from inside Flask.

    Flask opens the session before any hook runs, so an exception there bypasses the error
    handlers; instead the request gets Flask's NullSession, and auth.load_session raises StoreUnavailable.
    """

    # Set by the Flask-Session interface this is mixed into: a Redis client, or the file backend's cache.
    client: Any

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        try:
            session: SessionMixin | None = super().open_session(app, request)  # type: ignore[misc]
        except STORE_ERRORS as error:
            log.error("The session store failed while loading a session (%s)", describe(error, self.client))
            null: SessionMixin | None = self.make_null_session(app)  # type: ignore[attr-defined]
            return null
        if session is not None and not well_formed(dict(session)):
            log.warning("A session record could not be read; a new, empty session starts")
            # Saved as an emptied session: Flask-Session deletes the record and the cookie.
            session.clear()
        elif session:
            session.loaded_sid = session.sid  # type: ignore[attr-defined]
        return session

    def still_stored(self, store_id: str) -> bool:
        """True while the store holds this record (each backend says how)."""
        raise NotImplementedError

    def kept_record(self, sid: str) -> dict[str, Any] | None:
        """The session record of this cookie's id as this worker keeps it; None when it keeps none (files)."""
        return None

    # One of the three storage methods Flask-Session's base class declares for each backend: the place
    # where the record's lifetime in the store is chosen, in the same write.
    def _upsert_session(self, session_lifetime: timedelta, session: ServerSideSession, store_id: str) -> None:
        if getattr(session, "loaded_sid", None) == session.sid and not self.still_stored(store_id):
            # A logout elsewhere deleted this record while this request ran: writing it back would undo it.
            log.info("A session ended while one of its requests ran; it is not written back")
            return
        if "tokens_key" not in session:
            # Pending logins or a message only: kept as long as a login may take, not a whole session.
            session_lifetime = timedelta(seconds=LOGIN_LIFETIME)
        super()._upsert_session(session_lifetime, session, store_id)  # type: ignore[misc]

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not session.modified:
            # With SESSION_REFRESH_EACH_REQUEST off, Flask-Session would only add this header: skip the rest.
            if session.accessed:
                # gate.KeptSessions sends this Vary too, on the 202s it answers before Flask.
                # response.vary parses the header into a set and writes it back: only worth it to merge with a view's.
                if response.headers.getlist("Vary"):
                    response.vary.add("Cookie")
                else:
                    response.headers.add("Vary", "Cookie")
            return
        try:
            super().save_session(app, session, response)  # type: ignore[misc]
        except STORE_ERRORS as error:
            log.error("The session store failed while saving a session (%s)", describe(error, self.client))
            metrics.current().store_errors.inc()
            # The response would claim a change that was not stored: answer 503 instead.
            response.set_data(render_template("errors/store.html"))
            response.status_code = 503
            response.headers.pop("Location", None)
            response.headers.pop("Set-Cookie", None)
            response.mimetype = "text/html"


class GuardedRedisSessionInterface(StoreGuard, RedisSessionInterface):
    """Flask-Session's Redis interface, reading records through this worker's tracked copies when given."""

    def __init__(self, app: Flask, *, target: RedisTarget, cache: SessionCache | None, **options: Any) -> None:
        super().__init__(app, **options)
        self.serializer = RecordSerializer()
        self.target = target
        self.cache = cache

    # The three storage methods are the ones Flask-Session's base class declares abstract for each
    # backend to implement; wrapping them is how a backend of its own reads through the cache.
    def still_stored(self, store_id: str) -> bool:
        return bool(self.client.exists(store_id))

    def kept_record(self, sid: str) -> dict[str, Any] | None:
        """The record from this worker's tracked copy, when it has one and it is well formed; never reads Redis."""
        raw = self.cache.copy(self.key_prefix + sid) if self.cache is not None else None
        record = self.serializer.decode(raw) if raw else None
        return record if record is not None and well_formed(record) else None

    def _retrieve_session_data(self, store_id: str) -> dict[str, Any] | None:
        if self.cache is None:
            data: dict[str, Any] | None = super()._retrieve_session_data(store_id)
            return data
        record = self.cache.get(store_id, self.client.get)
        return self.serializer.decode(record) if record else None

    def _upsert_session(self, session_lifetime: timedelta, session: ServerSideSession, store_id: str) -> None:
        super()._upsert_session(session_lifetime, session, store_id)
        if self.cache is not None:
            self.cache.forget(store_id)

    def _delete_session(self, store_id: str) -> None:
        super()._delete_session(store_id)
        if self.cache is not None:
            self.cache.forget(store_id)


class GuardedFileSessionInterface(StoreGuard, CacheLibSessionInterface):
    """Flask-Session's cachelib interface over JSON files, sweeping expired session and token files."""

    def __init__(self, app: Flask, *, files: JsonFileCache, tokens: FileTokenStore, **options: Any) -> None:
        super().__init__(app, client=files, **options)
        self.files = files
        self.tokens = tokens
        self.next_sweep = 0.0

    def still_stored(self, store_id: str) -> bool:
        return self.files.get(store_id) is not None

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        super().save_session(app, session, response)
        now = time.time()
        # On writes only, and at a bounded rate: a sweep lists both folders.
        if session.modified and now >= self.next_sweep:
            self.next_sweep = now + SWEEP_INTERVAL
            self.sweep(now)

    def sweep(self, now: float) -> int:
        """Remove expired session records, token sets and idle lock files; return how many went."""
        try:
            return self.files.sweep(now) + self.tokens.sweep(now)
        except OSError as error:
            log.warning("Could not sweep expired session files (%s)", error.__class__.__name__)
            return 0


def cookie_name(secure: bool, domain: str | None) -> str:
    """The session cookie's name: with the strongest prefix the browser allows for these settings."""
    if not secure:
        return "mediaflow_portal"  # a browser refuses either prefix without Secure
    # __Host-: a browser takes the cookie only from this host over https, so a sibling subdomain or a
    # plain-http answer cannot plant a session id; it needs exactly Secure, Path=/ and no Domain.
    # A cookie shared with subdomains (the gate) can only be __Secure-: https, but any subdomain may set it.
    return "__Secure-mediaflow_portal" if domain else "__Host-mediaflow_portal"


def init_app(app: Flask, counts: metrics.Metrics) -> TokenStore:
    """Attach Flask-Session's interface for SESSION_BACKEND; return the token store on the same backend.

    counts: the app's metrics, which count the questions to Redis Sentinel.
    """
    config = app.config
    config.update(
        SESSION_PERMANENT=True,
        # A minute past the absolute lifetime, so auth.load_session ends it politely before the store drops it.
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=config["SESSION_MAX_LIFETIME"] + 60),
        SESSION_COOKIE_NAME=cookie_name(config["SESSION_COOKIE_SECURE"], config.get("SESSION_COOKIE_DOMAIN")),
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_DOMAIN=config.get("SESSION_COOKIE_DOMAIN") or None,
        SESSION_COOKIE_HTTPONLY=True,
        # Lax, never Strict: the top-level redirect back from Mediaflow must carry the cookie.
        SESSION_COOKIE_SAMESITE="Lax",
        # Only write the session when it changed; the token set is stored apart anyway.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    options: dict[str, Any] = {"key_prefix": "mediaflow:session:", "use_signer": False, "permanent": True}
    store: TokenStore
    if config["SESSION_BACKEND"] == "redis":
        target = RedisTarget.from_config(config, counts.sentinel_question)
        client = target.client(socket_timeout=config["MEDIAFLOW_READ_TIMEOUT"],
                               socket_connect_timeout=config["MEDIAFLOW_CONNECT_TIMEOUT"])
        config["SESSION_REDIS"] = client
        cache = None
        if config["SESSION_REDIS_CACHE"]:
            cache = SessionCache(target, options["key_prefix"], store=client,
                                 connect_timeout=config["MEDIAFLOW_CONNECT_TIMEOUT"])
        app.session_interface = GuardedRedisSessionInterface(app, client=client, target=target, cache=cache,
                                                             **options)
        store = RedisTokenStore(client)
    else:
        base = Path(config.get("SESSION_FILE_DIR") or app.instance_path)
        files = FileTokenStore(base / "tokens")
        app.session_interface = GuardedFileSessionInterface(app, files=JsonFileCache(base / "sessions"),
                                                            tokens=files, **options)
        store = files
    return store


def close(app: Flask) -> None:
    """Close this app's connections to Redis (a worker's are closed when it exits)."""
    interface = app.session_interface
    if isinstance(interface, GuardedRedisSessionInterface):
        if interface.cache is not None:
            interface.cache.close()
        interface.client.close()
        interface.target.close()


def regenerate_id(session: Any) -> None:
    """Give the session a new id, dropping the old record (no session fixation)."""
    current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
