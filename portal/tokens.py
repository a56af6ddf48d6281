"""The token set of a session: where it is kept, when it is refreshed, and one refresh at a time.

Tokens do not live in the Flask-Session record itself but under their own key in the same store,
written only at login and by the refresh. Flask-Session writes a whole session back at the end of
every request without a lock, so a slow request could otherwise put an old token set back.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Protocol

from flask import Flask, current_app

from . import mediaflow
from .metrics import Metrics

log = logging.getLogger(__name__)

# Backoff after a failed refresh while the access token is still valid: 5 s, 10 s, … at most 60 s.
BACKOFF_START, BACKOFF_MAX = 5.0, 60.0
# Token sets this worker keeps a copy of (the sessions it served most recently).
MAX_COPIES = 10_000
# How long the claim on a session's end is kept: far longer than a page's requests take to find it over.
ENDED_CLAIM_SECONDS = 600


class SessionEnded(Exception):
    """The Mediaflow session cannot go on; the user must log in again.

    cause, for the audit trail: refresh_refused, no_refresh_token, token_rejected or token_set_missing.
    first: set when the token service has already ended the session (TokenService.end): whether this
    request was the one that ended it.
    """

    def __init__(self, message: str, cause: str, first: bool | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.first = first


class RefreshFailed(Exception):
    """The access token has expired and Mediaflow could not refresh it just now; the session is kept."""


class StoreUnavailable(Exception):
    """The session store (Redis, or the session folder) did not answer."""


class LockTimeout(Exception):
    """Another request of this session held the refresh lock too long: Mediaflow is slow."""


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

    def needs_refresh(self, leeway: float, now: float) -> bool:
        """Due, and not waiting out the backoff of a failed refresh (an expired token never waits)."""
        return self.is_due(leeway, now) and (self.retry_at <= now or self.is_expired(now))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> TokenSet | None:
        """The stored token set, or None (logged) when what is stored is not one."""
        try:
            stored = json.loads(raw)
            # Fields this version no longer writes (older records) are left out.
            tokens = cls(**{f.name: stored[f.name] for f in fields(cls) if f.name in stored})
            numbers = (tokens.expires_at, tokens.lifetime, tokens.retry_at, tokens.failures, tokens.refreshed_at or 0)
            if not isinstance(tokens.access_token, str) or not isinstance(tokens.refresh_token, str | None) or not all(
                isinstance(n, int | float) and not isinstance(n, bool) for n in numbers
            ):
                raise TypeError("a field has the wrong type")
            return tokens
        except (ValueError, TypeError):
            log.warning("A stored token set could not be read; its session ends")
            return None


class TokenStore(Protocol):
    def get(self, key: str) -> TokenSet | None: ...
    def put(self, key: str, tokens: TokenSet, ttl: int) -> None: ...
    def delete(self, key: str) -> None: ...
    def lock(self, key: str, timeout: float) -> AbstractContextManager[None]: ...
    def ping(self) -> None: ...
    def claim(self, name: str, ttl: int) -> bool: ...
    def remember(self, name: str, value: Any, ttl: int) -> None: ...
    def recall(self, name: str) -> Any: ...


class TokenService:
    """A session's token set: stored under its own key, refreshed when due, at most one refresh at a time.

    Holds the store, the refresh policy, the clock and the call to Mediaflow; init_app builds one per
    app. Tests give it another clock instead of waiting for tokens to expire.
    """

    def __init__(self, store: TokenStore, *, leeway: float, lock_timeout: float, ttl: int,
                 refresh: Callable[[str], dict[str, Any]] = mediaflow.refresh,
                 clock: Callable[[], float] = time.time, metrics: Metrics | None = None) -> None:
        self.store = store
        self.leeway = leeway
        self.lock_timeout = lock_timeout
        self.ttl = ttl
        self.refresh = refresh
        self.clock = clock
        self.metrics = metrics
        # A token set changes only when due or deleted, so a copy that is not due is as good as the
        # stored one: it saves the store read a request would make. Every refresh re-reads the store.
        self._copies: dict[str, TokenSet] = {}
        self._copies_lock = threading.Lock()

    def start(self, token: dict[str, Any], received_at: float | None = None) -> str:
        """Store the token set of a new login (received at received_at, else now) under a new key; return it."""
        key = secrets.token_urlsafe(32)
        self.store.put(key, TokenSet.from_response(token, received_at or self.clock()), self.ttl)
        return key

    def fresh(self, key: str) -> TokenSet:
        """A usable token set, refreshed first when due.

        Raises SessionEnded, RefreshFailed, LockTimeout or StoreUnavailable.
        """
        tokens = self.kept(key)
        if tokens is None:
            tokens = self._refresh_if_due(key)
            self._keep_copy(key, tokens)
        return tokens

    def kept(self, key: str) -> TokenSet | None:
        """This worker's copy of the token set while it needs no refresh, else None; never reads the store."""
        tokens = self._copies.get(key)
        return None if tokens is None or tokens.needs_refresh(self.leeway, self.clock()) else tokens

    def renew(self, key: str, rejected: str) -> TokenSet:
        """A token set after Mediaflow rejected the access token `rejected` before its expiry.

        Refreshes at once, one refresh at a time: a request that waited for the lock finds the new
        token and does not refresh again. Raises SessionEnded, RefreshFailed, LockTimeout or StoreUnavailable.
        """
        with self._locked(key):
            tokens = self._stored(key)
            if tokens.access_token != rejected:
                self._count("waited")
            else:
                if not tokens.refresh_token:
                    self._count("ended_session")
                    raise SessionEnded("Mediaflow rejected the access token and gave no refresh token",
                                       "no_refresh_token")
                now = self.clock()
                if tokens.retry_at > now:
                    # A refresh failed moments ago: waiting out its backoff spares Mediaflow a herd of retries.
                    raise RefreshFailed("Mediaflow rejected the access token, and its last refresh failed")
                tokens = self._refresh(key, tokens, now)
                if tokens.access_token == rejected:
                    raise RefreshFailed("Mediaflow rejected the access token and could not refresh it just now")
        self._keep_copy(key, tokens)
        return tokens

    def _keep_copy(self, key: str, tokens: TokenSet) -> None:
        with self._copies_lock:
            self._copies[key] = tokens
            if len(self._copies) > MAX_COPIES:
                del self._copies[next(iter(self._copies))]

    def end(self, key: str) -> bool:
        """Forget the session's token set; True for the one request that ends the session.

        A page's requests arrive at once, and each may find the session over. The claim comes before
        end() deletes the token set, so a request that then finds it missing never wins: the winner saw
        why it ended.
        """
        first = self.store.claim(f"ended:{key}", ENDED_CLAIM_SECONDS)
        try:
            self.forget(key)
        except (StoreUnavailable, OSError):
            if not first:
                raise
            # The end is claimed: were it given up now, no request could ever write its event. The set is
            # unreachable once the session forgets its key, and expires with its TTL.
            log.warning("The ended session's token set could not be deleted; it expires on its own")
        return first

    def forget(self, key: str) -> None:
        """Delete a session's token set (its end, or a new login in the same session)."""
        with self._copies_lock:
            self._copies.pop(key, None)
        self.store.delete(key)

    def _stored(self, key: str) -> TokenSet:
        tokens = self.store.get(key)
        if tokens is None:
            raise SessionEnded("no token set is stored for this session", "token_set_missing")
        return tokens

    def _refresh_if_due(self, key: str) -> TokenSet:
        tokens = self._stored(key)
        if not tokens.needs_refresh(self.leeway, self.clock()):
            return tokens
        try:
            with self._locked(key):
                # Whoever held the lock before us may have refreshed already.
                tokens = self._stored(key)
                now = self.clock()
                if not tokens.needs_refresh(self.leeway, now):
                    if not tokens.is_due(self.leeway, now):
                        self._count("waited")  # another request refreshed while this one waited: its token serves
                    return tokens
                if not tokens.refresh_token:
                    if tokens.is_expired(now):
                        self._count("ended_session")
                        raise SessionEnded("the access token expired and Mediaflow gave no refresh token",
                                           "no_refresh_token")
                    return tokens
                return self._refresh(key, tokens, now)
        except LockTimeout:
            # Another request's refresh is stuck on a slow Mediaflow: a token that still works is served.
            if tokens.is_expired(self.clock()):
                raise
            log.warning("Token refresh lock held too long; using the current token")
            return tokens

    def _refresh(self, key: str, tokens: TokenSet, now: float) -> TokenSet:
        assert tokens.refresh_token
        try:
            fresh = tokens.refreshed(self.refresh(tokens.refresh_token), now)
        except mediaflow.MediaflowRefused as error:
            if error.is_final:
                log.info("Token refresh refused by Mediaflow (%s): the Mediaflow session ends", error.error)
                self._count("ended_session")
                # Gone before the lock is let go: a request that waited for it must not try the same token again.
                first = self.end(key)
                raise SessionEnded(f"Mediaflow refused the refresh: {error.error}", "refresh_refused",
                                   first) from None
            # Any other OAuth error is Mediaflow misbehaving, not a verdict on this session.
            return self._after_failure(key, tokens, now, error)
        except mediaflow.MediaflowError as error:
            return self._after_failure(key, tokens, now, error)
        self.store.put(key, fresh, self.ttl)
        self._count("ok")
        log.info("Token refreshed; the new access token expires in %d s", fresh.lifetime)
        return fresh

    def _after_failure(self, key: str, tokens: TokenSet, now: float, error: Exception) -> TokenSet:
        """Keep the session; serve with the current token while it lasts, retry later with backoff."""
        failures = tokens.failures + 1
        delay = min(BACKOFF_START * 2 ** (failures - 1), BACKOFF_MAX)
        waiting = replace(tokens, retry_at=now + delay, failures=failures)
        self.store.put(key, waiting, self.ttl)
        self._count("failed_kept")
        if tokens.is_expired(now):
            log.warning("Token refresh failed (%s); the access token has expired, answering 503", error)
            raise RefreshFailed(str(error))
        log.warning("Token refresh failed (%s); using the current token, next try in %.0f s", error, delay)
        # Returned with its retry time, so this worker's copy waits out the backoff without the lock.
        return waiting


    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """The session's refresh lock; the wait for it is measured, a timed-out one too."""
        started = time.perf_counter()
        try:
            with self.store.lock(key, self.lock_timeout):
                self._waited(time.perf_counter() - started)
                yield
        except LockTimeout:
            self._waited(time.perf_counter() - started)
            raise

    def _count(self, outcome: str) -> None:
        if self.metrics:
            self.metrics.refresh(outcome)

    def _waited(self, seconds: float) -> None:
        if self.metrics:
            self.metrics.refresh_lock_wait.observe(seconds)


def init_app(app: Flask, store: TokenStore, metrics: Metrics | None = None) -> None:
    """Attach this app's token service, on the store of its session backend."""
    config = app.config
    app.extensions["mediaflow_tokens"] = TokenService(
        store,
        leeway=config["MEDIAFLOW_REFRESH_LEEWAY"],
        # How long a request waits for another's refresh: long enough for that refresh to finish or time out.
        lock_timeout=config["MEDIAFLOW_CONNECT_TIMEOUT"] + config["MEDIAFLOW_READ_TIMEOUT"] + 2,
        # A token set lives as long as the session record that points at it.
        ttl=int(config["PERMANENT_SESSION_LIFETIME"].total_seconds()),
        metrics=metrics,
    )


def service() -> TokenService:
    """The token service of the current app."""
    tokens: TokenService = current_app.extensions["mediaflow_tokens"]
    return tokens


