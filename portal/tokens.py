"""The token set of a session: where it is kept, when it is refreshed, and one refresh at a time.

Tokens do not live in the Flask-Session record itself but under their own key in the same store,
written only at login and by the refresh. Flask-Session writes a whole session back at the end of
every request without a lock, so a slow request could otherwise put an old token set back.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import filelock
import redis
from flask import Flask, current_app

from . import mediaflow

log = logging.getLogger(__name__)

# Backoff after a failed refresh while the access token is still valid: 5 s, 10 s, … at most 60 s.
BACKOFF_START, BACKOFF_MAX = 5.0, 60.0
# The filesystem backend removes expired session, token and lock files at most this often.
SWEEP_INTERVAL = 60.0
# Token sets this worker keeps a copy of (the sessions it served most recently).
MAX_COPIES = 10_000


class SessionEnded(Exception):
    """The Mediaflow session cannot go on; the user must log in again."""


class RefreshFailed(Exception):
    """The access token has expired and Mediaflow could not refresh it just now; the session is kept."""


class LockTimeout(Exception):
    """Another request of this session held the refresh lock too long: Mediaflow is slow."""


class StoreUnavailable(Exception):
    """The session store (Redis, or the session folder) did not answer."""


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    expires_at: float
    lifetime: int
    refreshed_at: float | None = None
    retry_at: float = 0.0
    failures: int = 0

    @classmethod
    def from_response(cls, token: dict[str, Any], now: float) -> TokenSet:
        return cls(token["access_token"], token.get("refresh_token"), now + token["expires_in"], token["expires_in"])

    def refreshed(self, token: dict[str, Any], now: float) -> TokenSet:
        """The token set after a refresh; Mediaflow may omit the refresh token, so keep ours."""
        return TokenSet(token["access_token"], token.get("refresh_token") or self.refresh_token,
                        now + token["expires_in"], token["expires_in"], refreshed_at=now)

    def expires_in(self, now: float) -> float:
        return self.expires_at - now

    def is_expired(self, now: float) -> bool:
        return self.expires_in(now) <= 0

    def is_due(self, leeway: float, now: float) -> bool:
        # Never more than half the lifetime, or short-lived tokens refresh on every request.
        return self.expires_in(now) < min(leeway, self.lifetime / 2)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> TokenSet | None:
        """The stored token set, or None (logged) when what is stored is not one."""
        try:
            stored = json.loads(raw)
            # Fields this version no longer writes (older records) are left out.
            return cls(**{f.name: stored[f.name] for f in fields(cls) if f.name in stored})
        except (ValueError, TypeError):
            log.warning("A stored token set could not be read; its session ends")
            return None


class TokenService:
    """A session's token set: stored under its own key, refreshed when due, at most one refresh at a time.

    Holds the store, the refresh policy, the clock and the call to Mediaflow; init_app builds one per
    app. Tests give it another clock instead of waiting for tokens to expire.
    """

    def __init__(self, store: TokenStore, *, leeway: float, lock_timeout: float, ttl: int,
                 refresh: Callable[[str], dict[str, Any]] = mediaflow.refresh,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.leeway = leeway
        self.lock_timeout = lock_timeout
        self.ttl = ttl
        self.refresh = refresh
        self.clock = clock
        # A token set changes only when due or deleted, so a copy that is not due is as good as the
        # stored one: it saves the store read a request would make. Every refresh re-reads the store.
        self._copies: dict[str, TokenSet] = {}
        self._copies_lock = threading.Lock()

    def start(self, token: dict[str, Any]) -> str:
        """Store the token set of a new login under a new key, and return the key."""
        key = secrets.token_urlsafe(32)
        self.store.put(key, TokenSet.from_response(token, self.clock()), self.ttl)
        return key

    def fresh(self, key: str) -> TokenSet:
        """A usable token set, refreshed first when due.

        Raises SessionEnded, RefreshFailed, LockTimeout or StoreUnavailable.
        """
        tokens = self._copies.get(key)
        if tokens is None or tokens.is_due(self.leeway, self.clock()):
            tokens = self._refresh_if_due(key)
            with self._copies_lock:
                self._copies[key] = tokens
                if len(self._copies) > MAX_COPIES:
                    del self._copies[next(iter(self._copies))]
        return tokens

    def forget(self, key: str) -> None:
        """Delete a session's token set (logout, or the session ended)."""
        with self._copies_lock:
            self._copies.pop(key, None)
        self.store.delete(key)

    def _stored(self, key: str) -> TokenSet:
        tokens = self.store.get(key)
        if tokens is None:
            raise SessionEnded("no token set is stored for this session")
        return tokens

    def _refresh_if_due(self, key: str) -> TokenSet:
        tokens = self._stored(key)
        if not tokens.is_due(self.leeway, self.clock()):
            return tokens
        with self.store.lock(key, self.lock_timeout):
            # Whoever held the lock before us may have refreshed already.
            tokens = self._stored(key)
            now = self.clock()
            if not tokens.is_due(self.leeway, now) or (tokens.retry_at > now and not tokens.is_expired(now)):
                return tokens
            if not tokens.refresh_token:
                if tokens.is_expired(now):
                    raise SessionEnded("the access token expired and Mediaflow gave no refresh token")
                return tokens
            return self._refresh(key, tokens, now)

    def _refresh(self, key: str, tokens: TokenSet, now: float) -> TokenSet:
        assert tokens.refresh_token
        try:
            fresh = tokens.refreshed(self.refresh(tokens.refresh_token), now)
        except mediaflow.MediaflowRefused as error:
            if error.is_final:
                log.info("Token refresh refused by Mediaflow (%s): the Mediaflow session ends", error.error)
                raise SessionEnded(f"Mediaflow refused the refresh: {error.error}") from None
            # Any other OAuth error is Mediaflow misbehaving, not a verdict on this session.
            return self._after_failure(key, tokens, now, error)
        except mediaflow.MediaflowError as error:
            return self._after_failure(key, tokens, now, error)
        self.store.put(key, fresh, self.ttl)
        log.info("Token refreshed; the new access token expires in %d s", fresh.lifetime)
        return fresh

    def _after_failure(self, key: str, tokens: TokenSet, now: float, error: Exception) -> TokenSet:
        """Keep the session; serve with the current token while it lasts, retry later with backoff."""
        failures = tokens.failures + 1
        delay = min(BACKOFF_START * 2 ** (failures - 1), BACKOFF_MAX)
        self.store.put(key, replace(tokens, retry_at=now + delay, failures=failures), self.ttl)
        if tokens.is_expired(now):
            log.warning("Token refresh failed (%s); the access token has expired, answering 503", error)
            raise RefreshFailed(str(error))
        log.warning("Token refresh failed (%s); using the current token, next try in %.0f s", error, delay)
        return tokens


def init_app(app: Flask, store: TokenStore) -> None:
    """Attach this app's token service, on the store of its session backend."""
    config = app.config
    app.extensions["mediaflow_tokens"] = TokenService(
        store,
        leeway=config["MEDIAFLOW_REFRESH_LEEWAY"],
        # How long a request waits for another's refresh: long enough for that refresh to finish or time out.
        lock_timeout=config["MEDIAFLOW_CONNECT_TIMEOUT"] + config["MEDIAFLOW_READ_TIMEOUT"] + 2,
        # A token set lives as long as the session record that points at it.
        ttl=int(config["PERMANENT_SESSION_LIFETIME"].total_seconds()),
    )


def service() -> TokenService:
    """The token service of the current app."""
    tokens: TokenService = current_app.extensions["mediaflow_tokens"]
    return tokens


class TokenStore(Protocol):
    def get(self, key: str) -> TokenSet | None: ...
    def put(self, key: str, tokens: TokenSet, ttl: int) -> None: ...
    def delete(self, key: str) -> None: ...
    def lock(self, key: str, timeout: float) -> Any: ...
    def ping(self) -> None: ...


class FileTokenStore:
    """One JSON file per token set under the instance folder, locked with an OS file lock.

    A file's modification time is its expiry, as for the session files beside it.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> TokenSet | None:
        try:
            with self._path(key).open() as handle:
                if os.fstat(handle.fileno()).st_mtime <= time.time():
                    return None
                raw = handle.read()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            raise StoreUnavailable(f"the token folder cannot be read ({error.__class__.__name__})") from None
        return TokenSet.from_json(raw)

    def put(self, key: str, tokens: TokenSet, ttl: int) -> None:
        try:
            write_file(self._path(key), tokens.to_json().encode(), expires_at=time.time() + ttl)
        except OSError as error:
            raise StoreUnavailable(f"the token folder cannot be written ({error.strerror})") from None

    def delete(self, key: str) -> None:
        # The lock file stays until a sweep: removing it while another process waits on it would split the lock.
        self._path(key).unlink(missing_ok=True)

    @contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[None]:
        try:
            with filelock.FileLock(self.directory / f"{key}.lock", timeout=timeout):
                yield
        except filelock.Timeout:
            raise LockTimeout("the token refresh lock was held too long") from None

    def ping(self) -> None:
        if not os.access(self.directory, os.W_OK):
            raise StoreUnavailable(f"the session folder {self.directory} is not writable")

    def sweep(self, now: float) -> int:
        """Remove expired token sets, and the lock files of token sets that are gone; return how many went."""
        def expired(entry: os.DirEntry[str]) -> bool:
            if entry.name.endswith(".lock"):
                # A lock is taken only after its token set was read, so one without a live token set is idle.
                try:
                    token_gone = os.stat(entry.path.removesuffix(".lock") + ".json").st_mtime <= now
                except FileNotFoundError:
                    token_gone = True
                return token_gone and entry.stat().st_mtime < now - SWEEP_INTERVAL
            return entry.stat().st_mtime <= now

        return sweep_folder(self.directory, now, expired)


def write_file(path: Path, data: bytes, expires_at: float) -> None:
    """Write aside, then rename: a reader never sees half a file. The file's mtime is its expiry."""
    fd, draft = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.utime(draft, (expires_at, expires_at))
        os.replace(draft, path)
    except BaseException:
        Path(draft).unlink(missing_ok=True)
        raise


def sweep_folder(folder: Path, now: float, expired: Callable[[os.DirEntry[str]], bool]) -> int:
    """Unlink the files of folder for which expired(entry) is true, and drafts a crash left behind."""
    removed = 0
    written_before = now - SWEEP_INTERVAL
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                # A draft's mtime is already its record's expiry; its ctime says when it was written.
                gone = entry.stat().st_ctime < written_before if entry.name.startswith(".tmp-") else expired(entry)
                if gone:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
    return removed


class RedisTokenStore:
    """Token sets as Redis strings with a TTL, locked with redis-py's Lock."""

    def __init__(self, client: redis.Redis, prefix: str = "mediaflow:") -> None:
        self.client = client
        self.prefix = prefix

    def get(self, key: str) -> TokenSet | None:
        raw = self._call(self.client.get, f"{self.prefix}tokens:{key}")
        return TokenSet.from_json(raw) if raw else None

    def put(self, key: str, tokens: TokenSet, ttl: int) -> None:
        self._call(self.client.set, f"{self.prefix}tokens:{key}", tokens.to_json(), ex=ttl)

    def delete(self, key: str) -> None:
        self._call(self.client.delete, f"{self.prefix}tokens:{key}")

    @contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[None]:
        # The lock expires on its own if its holder dies mid-refresh.
        lock = self.client.lock(f"{self.prefix}lock:{key}", timeout=timeout + 5, blocking_timeout=timeout)
        if not self._call(lock.acquire):
            raise LockTimeout("the token refresh lock was held too long")
        try:
            yield
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("The refresh lock expired before its holder released it")
            except redis.exceptions.RedisError:
                pass

    def ping(self) -> None:
        self._call(self.client.ping)

    @staticmethod
    def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except redis.exceptions.ConnectionError:
            raise StoreUnavailable("the session store (Redis) cannot be reached") from None
        except redis.exceptions.TimeoutError:
            raise StoreUnavailable("the session store (Redis) did not answer in time") from None


