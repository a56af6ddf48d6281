"""Mediaflow's REST API: one call, with timeouts, the documented shapes, and a token that can expire mid-page.

Every GET answers a JSON array, even for one object; an error is an object `{"status", "error"}`.
A page's call goes through `get` or `post`, which use the session's token set (auth.load_session
made it fresh) and handle the three things a token cannot foresee:
- 401 although the token looked valid (revoked, clock skew, rotated elsewhere): refresh once through
  the token service's single-flight refresh, retry once, and end the session only if that fails;
- 429: wait as Retry-After says (a few seconds at most), retry once, else a page that says how long;
- anything else that is not an answer: MediaflowUnavailable, a 502 or 503 page with "Try again".
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
from flask import Flask, current_app, g, session
from urllib3.exceptions import ReadTimeoutError

from . import metrics, tokens
from .mediaflow import MediaflowRefused, MediaflowUnavailable
from .tokens import SessionEnded

# The longest Retry-After the portal waits out within a request; a longer one is a page saying how long.
MAX_RETRY_WAIT = 5
# More than any page of Mediaflow's answers holds: a bigger answer is not read to the end.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
# Mediaflow's refusals a page explains (not found, no access, a request it does not take); 401 is the token's.
REFUSALS = (400, 401, 403, 404)
# Half of a UTF-16 pair, escaped ("\\ud800") or raw: JSON lets either through, and no page can encode one.
LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


class RateLimited(MediaflowUnavailable):
    """Mediaflow answered 429 twice, or asked for a longer wait than a page should take."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("Mediaflow asked the portal to slow down", status=429)
        self.retry_after = retry_after


def init_app(app: Flask) -> None:
    """One HTTP session per worker: its connection pool keeps Mediaflow's connections open between calls."""
    http = requests.Session()
    http.headers["Accept"] = "application/json"
    # Shared by every user of this worker: a cookie Mediaflow (or a balancer in front of it) sets must
    # not travel with the next user's calls.
    http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    # The environment's proxy and CA settings (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE) for the API's
    # host, read once: requests would read them again on every call, which cost a third of the call.
    found = http.merge_environment_settings(app.config["MEDIAFLOW_API_BASE"], {}, None, None, None)
    http.proxies, http.verify, http.trust_env = found["proxies"], found["verify"], False
    app.extensions["mediaflow_api"] = http


def me(access_token: str) -> dict[str, Any]:
    """GET /me with this access token (at login, before a session has one); the user's record."""
    return first(_answer(_send("GET", "me", access_token, {}, None), "me"))


def get(path: str, **params: Any) -> list[Any]:
    """GET path (relative to MEDIAFLOW_API_BASE) as the session's user; Mediaflow's array."""
    answer = _call("GET", path, params, None)
    if not isinstance(answer, list):
        raise MediaflowUnavailable(f"Mediaflow's API answered {_name(path)} with an unexpected shape", 502)
    return answer


def post(path: str, body: dict[str, Any], **params: Any) -> Any:
    """POST a JSON body to path as the session's user."""
    return _call("POST", path, params, body)


def first(answer: Any) -> dict[str, Any]:
    """The one object of an answer about one thing (GET /me, /file/{id}, …)."""
    if not isinstance(answer, list) or not answer or not isinstance(answer[0], dict):
        raise MediaflowUnavailable("Mediaflow's API answered with an unexpected shape", 502)
    return answer[0]


@dataclass(frozen=True)
class Answer:
    """One answer from Mediaflow, read whole within the call's time limit."""

    status: int
    retry_after: int
    body: bytes


def _call(method: str, path: str, params: dict[str, Any], body: dict[str, Any] | None) -> Any:
    held: tokens.TokenSet = g.tokens
    answer = _retrying_429(lambda: _send(method, path, held.access_token, params, body))
    if answer.status == 401:
        # The token looked valid to us but not to Mediaflow: one refresh, shared with every other request.
        g.tokens = tokens.service().renew(session["tokens_key"], held.access_token)
        answer = _retrying_429(lambda: _send(method, path, g.tokens.access_token, params, body))
        if answer.status == 401:
            raise SessionEnded(f"Mediaflow refused a freshly refreshed access token on {_name(path)}", "token_rejected")
    return _answer(answer, path)


def _retrying_429(send: Callable[[], Answer]) -> Answer:
    answer = send()
    if answer.status != 429:
        return answer
    # One wait per page at most: a page of several calls must not sleep through each of them.
    if answer.retry_after > MAX_RETRY_WAIT or g.get("waited_for_mediaflow"):
        raise RateLimited(answer.retry_after)
    g.waited_for_mediaflow = True
    time.sleep(answer.retry_after)
    answer = send()
    if answer.status == 429:
        raise RateLimited(answer.retry_after)
    return answer


def _send(method: str, path: str, access_token: str, params: dict[str, Any], body: dict[str, Any] | None) -> Answer:
    config = current_app.config
    http: requests.Session = current_app.extensions["mediaflow_api"]
    endpoint = metrics.api_endpoint(_name(path))
    started = time.perf_counter()
    # The read timeout bounds each wait for bytes; an answer that trickles in is cut off here instead.
    deadline = time.monotonic() + config["MEDIAFLOW_CONNECT_TIMEOUT"] + config["MEDIAFLOW_READ_TIMEOUT"]
    try:
        with http.request(
            method, f"{config['MEDIAFLOW_API_BASE'].rstrip('/')}/{path}", params=params, json=body,
            # A header, never ?access_token=: query strings end up in logs.
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=(config["MEDIAFLOW_CONNECT_TIMEOUT"], config["MEDIAFLOW_READ_TIMEOUT"]),
            allow_redirects=False, stream=True,
        ) as response:
            content = bytearray()
            for chunk in _read(response):
                content += chunk
                if time.monotonic() > deadline:
                    raise requests.Timeout
                if len(content) > MAX_ANSWER_BYTES:
                    metrics.current().mediaflow_call(endpoint, "too_large", time.perf_counter() - started)
                    raise MediaflowUnavailable(f"Mediaflow's API answered {_name(path)} with too much data", 502)
    except requests.Timeout:
        metrics.current().mediaflow_call(endpoint, "timeout", time.perf_counter() - started)
        raise MediaflowUnavailable("Mediaflow's API did not answer in time") from None
    except requests.RequestException:
        metrics.current().mediaflow_call(endpoint, "unreachable", time.perf_counter() - started)
        raise MediaflowUnavailable("Mediaflow's API cannot be reached") from None
    metrics.current().mediaflow_call(endpoint, response.status_code, time.perf_counter() - started)
    return Answer(response.status_code, _retry_after(response.headers.get("Retry-After", "")), bytes(content))


def _read(response: requests.Response) -> Iterator[bytes]:
    """The answer's bytes; a read that stalls past the read timeout is requests.Timeout, as one before the headers is.

    requests reports a stall in the body as a ConnectionError around urllib3's ReadTimeoutError.
    """
    try:
        yield from response.iter_content(64 * 1024)
    except requests.ConnectionError as error:
        if error.args and isinstance(error.args[0], ReadTimeoutError):
            raise requests.Timeout from None
        raise


def _answer(answer: Answer, path: str) -> Any:
    """The JSON of a 2xx answer; an error as MediaflowRefused (4xx) or MediaflowUnavailable (the rest)."""
    try:
        body = json.loads(answer.body)
        if LONE_SURROGATE.search(answer.body):
            body = _clean(body)
    except (ValueError, RecursionError):
        raise MediaflowUnavailable(f"Mediaflow's API answered {_name(path)} with HTTP {answer.status} "
                                   "without usable JSON", 502) from None
    if 200 <= answer.status < 300:
        return body
    if answer.status in REFUSALS:
        # Not this user's, not there, or not a request Mediaflow takes: the page says so.
        message = body.get("error") if isinstance(body, dict) else None
        raise MediaflowRefused(str(message or "error")[:200], status=answer.status)
    # Mediaflow failing, or an answer the portal does not understand: a 502.
    raise MediaflowUnavailable(f"Mediaflow's API answered {_name(path)} with HTTP {answer.status}", 502)


def _clean(value: Any) -> Any:
    """The decoded JSON with each lone surrogate (half an emoji) replaced by U+FFFD; a whole pair stays."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, dict):
        return {_clean(key): _clean(item) for key, item in value.items()}
    return value


def _retry_after(raw: str) -> int:
    # Seconds only: Mediaflow's HTTP-date form is not seen, and a wrong guess must not block a worker.
    return min(int(raw), 3600) if raw.isascii() and raw.isdigit() else 1


def _name(path: str) -> str:
    """The endpoint without ids, for messages: /file/{id}."""
    return "/" + "/".join("{id}" if part.lstrip("-").isdigit() else part for part in path.split("/"))
