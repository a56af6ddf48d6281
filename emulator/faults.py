"""Faults injected at run time, and the counts tests read back."""

from __future__ import annotations

import socket
import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any

ENDPOINTS = ("authorize", "token", "api")
KINDS = ("delay", "status", "garbage", "drop", "oauth_error", "rate_limit")


class FaultError(ValueError):
    """A fault request that cannot be used; the message says which field."""


@dataclass
class Fault:
    endpoint: str
    kind: str
    remaining: int
    delay: float = 0.0
    status: int = 500
    error: str = "invalid_grant"
    retry_after: int = 1

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        if not isinstance(data, dict):
            raise FaultError("send a JSON object")
        endpoint, kind = data.get("endpoint"), data.get("kind")
        if endpoint not in ENDPOINTS:
            raise FaultError(f"endpoint must be one of {', '.join(ENDPOINTS)}")
        if kind not in KINDS:
            raise FaultError(f"kind must be one of {', '.join(KINDS)}")
        count = data.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10_000:
            raise FaultError("count must be a whole number from 1 to 10000")
        delay = data.get("delay", 0.0)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 120:
            raise FaultError("delay must be a number of seconds from 0 to 120")
        status = data.get("status", 500 if kind == "status" else 200 if kind == "garbage" else
                          429 if kind == "rate_limit" else 400)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise FaultError("status must be an HTTP status from 100 to 599")
        if kind == "rate_limit" and status != 429:
            raise FaultError("a rate_limit fault is always status 429")
        retry_after = data.get("retry_after", 1)
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or not 0 <= retry_after <= 60:
            raise FaultError("retry_after must be a whole number of seconds from 0 to 60")
        error = data.get("error", "invalid_grant")
        if not isinstance(error, str) or not error:
            raise FaultError("error must be a non-empty string")
        return cls(endpoint, kind, count, float(delay), status, error, retry_after)


class Faults:
    """Pending faults, each applied to the next N calls of its endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._pending.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._pending]

    def take(self, endpoint: str) -> Fault | None:
        with self._lock:
            for fault in self._pending:
                if fault.endpoint == endpoint:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._pending.remove(fault)
                    return fault
        return None


def drop_connection(environ: dict[str, Any]) -> None:
    """Shut the client's socket so it sees the connection close with no response."""
    sock = environ.get("gunicorn.socket")
    if isinstance(sock, socket.socket):
        sock.shutdown(socket.SHUT_RDWR)


DOWNLOAD_OUTCOMES = ("ok", "tampered", "expired")


class Stats:
    """Counts of token requests per grant and outcome, API calls per path, downloads and previews."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: Counter[tuple[str, str]] = Counter()
        self._api: Counter[str] = Counter()
        self._recent: deque[dict[str, Any]] = deque(maxlen=50)
        self._seconds: dict[str, float] = {}
        self._api_seconds: dict[str, float] = {}
        self._downloads: Counter[str] = Counter()
        self._previews = 0
        self._last_search_lang: str | None = None
        # Token and API requests being answered now (a delayed one may outlive the caller's timeout).
        self._in_flight = 0

    def token_request(self, grant_type: str, ok: bool, shape: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._tokens[(grant_type, "ok" if ok else "failed")] += 1
            if shape is not None:
                self._recent.append(shape | {"ok": ok})

    def busy(self, area: str, seconds: float, path: str | None = None) -> None:
        """Time spent answering, so benchmarks can tell the emulator's share from the portal's."""
        with self._lock:
            self._seconds[area] = self._seconds.get(area, 0.0) + seconds
            if path is not None:
                self._api_seconds[path] = self._api_seconds.get(path, 0.0) + seconds

    def started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def finished(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def api_call(self, path: str) -> None:
        with self._lock:
            self._api[path] += 1

    def search(self, lang: str | None) -> None:
        with self._lock:
            self._last_search_lang = lang

    def download(self, outcome: str) -> None:
        with self._lock:
            self._downloads[outcome] += 1

    def preview(self) -> None:
        with self._lock:
            self._previews += 1

    def reset(self) -> None:
        with self._lock:
            self._tokens.clear()
            self._api.clear()
            self._recent.clear()
            self._seconds.clear()
            self._api_seconds.clear()
            self._downloads.clear()
            self._previews = 0
            self._last_search_lang = None

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            tokens: dict[str, dict[str, int]] = {}
            for (grant, outcome), n in self._tokens.items():
                tokens.setdefault(grant, {"ok": 0, "failed": 0})[outcome] = n
            return {"token": tokens, "api": dict(self._api), "recent_token_requests": list(self._recent),
                    "in_flight": self._in_flight,
                    "busy_ms": _milliseconds(self._seconds), "api_busy_ms": _milliseconds(self._api_seconds),
                    "downloads": {o: self._downloads[o] for o in DOWNLOAD_OUTCOMES}, "previews": self._previews,
                    "last_search_lang": self._last_search_lang}


def _milliseconds(seconds: dict[str, float]) -> dict[str, float]:
    return {key: round(value * 1000, 3) for key, value in seconds.items()}
