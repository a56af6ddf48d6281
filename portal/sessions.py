"""Server-side sessions (Flask-Session) and the token store beside them, on one backend."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from cachelib.file import FileSystemCache
from flask import Flask, current_app
from flask_session import Session

from .tokens import FileTokenStore, RedisTokenStore, TokenStore


def init_app(app: Flask) -> None:
    """Attach Flask-Session and the token store for SESSION_BACKEND."""
    config = app.config
    config.update(
        SESSION_PERMANENT=True,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=config["SESSION_MAX_LIFETIME"]),
        SESSION_COOKIE_NAME="mediaflow_portal",
        SESSION_COOKIE_HTTPONLY=True,
        # Lax, never Strict: the top-level redirect back from Mediaflow must carry the cookie.
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_USE_SIGNER=False,
        SESSION_KEY_PREFIX="mediaflow:session:",
        # Only write the session when it changed; the token set is stored apart anyway.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    store: TokenStore
    if config["SESSION_BACKEND"] == "redis":
        client = redis.Redis.from_url(
            config["REDIS_URL"], socket_timeout=config["MEDIAFLOW_READ_TIMEOUT"],
            socket_connect_timeout=config["MEDIAFLOW_CONNECT_TIMEOUT"],
        )
        config.update(SESSION_TYPE="redis", SESSION_REDIS=client)
        store = RedisTokenStore(client)
    else:
        base = Path(config.get("SESSION_FILE_DIR") or app.instance_path)
        folder = base / "sessions"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # threshold=0: never evict live sessions to make room.
        config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=FileSystemCache(str(folder), threshold=0, mode=0o600))
        store = FileTokenStore(base / "tokens")
    Session(app)
    app.extensions["mediaflow_tokens"] = store


def token_store() -> TokenStore:
    store: TokenStore = current_app.extensions["mediaflow_tokens"]
    return store


def regenerate_id(session: Any) -> None:
    """Give the session a new id, dropping the old record (no session fixation)."""
    current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
