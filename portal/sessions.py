"""Server-side sessions (Flask-Session) and the token store beside them, on one backend."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import flask
import redis
from cachelib.file import FileSystemCache
from flask import Flask, current_app, g, render_template
from flask.sessions import SessionMixin
from flask_session.base import ServerSideSession
from flask_session.cachelib import CacheLibSessionInterface
from flask_session.redis import RedisSessionInterface
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.http import parse_cookie
from werkzeug.utils import cached_property
from werkzeug.wrappers import Request, Response

from .session_cache import SessionCache
from .tokens import FileTokenStore, LocalCache, RedisTokenStore, RefreshPolicy, StoreUnavailable, TokenStore

log = logging.getLogger(__name__)
STORE_ERRORS = (redis.exceptions.RedisError, OSError)


class CookieRequest(flask.Request):
    """Flask's request, with the cookies read from the one variable WSGI puts them in.

    Werkzeug finds them by turning every variable of the environment into a header and keeping those
    named Cookie; Flask-Session reads the session cookie on every request.
    """

    @cached_property
    def cookies(self) -> ImmutableMultiDict[str, str]:
        # parse_cookie is typed to return the mutable base class of the class it is given.
        return parse_cookie(self.environ.get("HTTP_COOKIE"), cls=self.dict_storage_class)  # type: ignore[return-value]


class StoreGuard:
    """Let a session-store outage reach the error handler as a 503, not a 500 from inside Flask.

    Flask opens the session before any hook runs, so an exception there bypasses the error
    handlers; instead the request gets a null session and auth.load_session raises StoreUnavailable.
    """

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        try:
            session: SessionMixin | None = super().open_session(app, request)  # type: ignore[misc]
            return session
        except STORE_ERRORS as error:
            log.error("The session store failed while loading a session (%s)", error.__class__.__name__)
            g.session_store_down = True
            null: SessionMixin | None = self.make_null_session(app)  # type: ignore[attr-defined]
            return null

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not session.modified:
            # With SESSION_REFRESH_EACH_REQUEST off, Flask-Session would only add this header too. Most
            # requests only read the session; a Vary line of its own is valid HTTP and cheaper than merging.
            if session.accessed:
                response.headers.add("Vary", "Cookie")
            return
        try:
            super().save_session(app, session, response)  # type: ignore[misc]
        except STORE_ERRORS as error:
            log.error("The session store failed while saving a session (%s)", error.__class__.__name__)
            # The response would claim a change that was not stored: answer 503 instead.
            response.set_data(render_template("errors/store.html"))
            response.status_code = 503
            response.headers.pop("Location", None)
            response.headers.pop("Set-Cookie", None)
            response.mimetype = "text/html"


class GuardedRedisSessionInterface(StoreGuard, RedisSessionInterface):
    """Flask-Session's Redis interface, reading records through this worker's tracked copies when given."""

    def __init__(self, app: Flask, *, cache: SessionCache | None, **options: Any) -> None:
        super().__init__(app, **options)
        self.cache = cache

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


class GuardedCacheLibSessionInterface(StoreGuard, CacheLibSessionInterface):
    pass


def init_app(app: Flask) -> None:
    """Attach Flask-Session's interface for SESSION_BACKEND, and the token store and refresh policy beside it."""
    app.request_class = CookieRequest
    config = app.config
    config.update(
        SESSION_PERMANENT=True,
        # A minute past the absolute lifetime, so auth.load_session ends it politely before the store drops it.
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=config["SESSION_MAX_LIFETIME"] + 60),
        # __Host-: a browser takes the cookie only from this host over https, so a sibling subdomain or a
        # plain-http answer cannot plant a session id; it needs exactly Secure, Path=/ and no Domain.
        SESSION_COOKIE_NAME="__Host-mediaflow_portal" if config["SESSION_COOKIE_SECURE"] else "mediaflow_portal",
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_DOMAIN=None,
        SESSION_COOKIE_HTTPONLY=True,
        # Lax, never Strict: the top-level redirect back from Mediaflow must carry the cookie.
        SESSION_COOKIE_SAMESITE="Lax",
        # Only write the session when it changed; the token set is stored apart anyway.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    options: dict[str, Any] = {"key_prefix": "mediaflow:session:", "use_signer": False, "permanent": True}
    store: TokenStore
    if config["SESSION_BACKEND"] == "redis":
        client = redis.Redis.from_url(
            config["REDIS_URL"], socket_timeout=config["MEDIAFLOW_READ_TIMEOUT"],
            socket_connect_timeout=config["MEDIAFLOW_CONNECT_TIMEOUT"],
        )
        config["SESSION_REDIS"] = client
        cache = None
        if config["SESSION_REDIS_CACHE"]:
            cache = SessionCache(config["REDIS_URL"], options["key_prefix"],
                                 connect_timeout=config["MEDIAFLOW_CONNECT_TIMEOUT"])
        app.session_interface = GuardedRedisSessionInterface(app, client=client, cache=cache, **options)
        store = RedisTokenStore(client)
    else:
        base = Path(config.get("SESSION_FILE_DIR") or app.instance_path)
        folder = base / "sessions"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # threshold=0: never evict live sessions to make room.
        cache = FileSystemCache(str(folder), threshold=0, mode=0o600)
        app.session_interface = GuardedCacheLibSessionInterface(app, client=cache, **options)
        store = FileTokenStore(base / "tokens")
    app.extensions["mediaflow_tokens"] = store
    app.extensions["mediaflow_token_cache"] = LocalCache()
    app.extensions["mediaflow_refresh_policy"] = RefreshPolicy(
        leeway=config["MEDIAFLOW_REFRESH_LEEWAY"],
        # How long a request waits for another's refresh: long enough for that refresh to finish or time out.
        lock_timeout=config["MEDIAFLOW_CONNECT_TIMEOUT"] + config["MEDIAFLOW_READ_TIMEOUT"] + 2,
        # A token set lives as long as the session record that points at it.
        ttl=int(config["PERMANENT_SESSION_LIFETIME"].total_seconds()),
    )


def token_store() -> TokenStore:
    store: TokenStore = current_app.extensions["mediaflow_tokens"]
    return store


def token_cache() -> LocalCache:
    cache: LocalCache = current_app.extensions["mediaflow_token_cache"]
    return cache


def refresh_policy() -> RefreshPolicy:
    policy: RefreshPolicy = current_app.extensions["mediaflow_refresh_policy"]
    return policy


def check_store_is_up() -> None:
    """Raise StoreUnavailable when this request could not load its session."""
    if g.get("session_store_down"):
        raise StoreUnavailable("the session store cannot be reached")


def close(app: Flask) -> None:
    """Close this app's connections to Redis (a worker's are closed when it exits)."""
    interface = app.session_interface
    if isinstance(interface, GuardedRedisSessionInterface):
        if interface.cache is not None:
            interface.cache.close()
        interface.client.close()


def regenerate_id(session: Any) -> None:
    """Give the session a new id, dropping the old record (no session fixation)."""
    current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
