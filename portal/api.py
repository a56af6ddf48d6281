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

import time
from collections.abc import Callable
from typing import Any

import requests
from flask import Flask, current_app, g, session

from . import metrics, tokens
from .mediaflow import MediaflowRefused, MediaflowUnavailable
from .tokens import SessionEnded

# The longest Retry-After the portal waits out within a request; a longer one is a page saying how long.
MAX_RETRY_WAIT = 5.0


class RateLimited(MediaflowUnavailable):
    """Mediaflow answered 429 twice, or asked for a longer wait than a page should take."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("Mediaflow asked the portal to slow down", status=429)
        self.retry_after = retry_after


def init_app(app: Flask) -> None:
    """One HTTP session per worker: its connection pool keeps Mediaflow's connections open between calls."""
    http = requests.Session()
    http.headers["Accept"] = "application/json"
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


def first(answer: list[Any]) -> dict[str, Any]:
    """The one object of an answer about one thing (GET /me, /file/{id}, …)."""
    if not answer or not isinstance(answer[0], dict):
        raise MediaflowUnavailable("Mediaflow's API answered with an unexpected shape", 502)
    return answer[0]


def _call(method: str, path: str, params: dict[str, Any], body: dict[str, Any] | None) -> Any:
    held: tokens.TokenSet = g.tokens
    response = _retrying_429(lambda: _send(method, path, held.access_token, params, body))
    if response.status_code == 401:
        # The token looked valid to us but not to Mediaflow: one refresh, shared with every other request.
        g.tokens = tokens.service().renew(session["tokens_key"], held.access_token)
        response = _retrying_429(lambda: _send(method, path, g.tokens.access_token, params, body))
        if response.status_code == 401:
            raise SessionEnded("Mediaflow refused a freshly refreshed access token", "token_rejected")
    return _answer(response, path)


def _retrying_429(send: Callable[[], requests.Response]) -> requests.Response:
    response = send()
    if response.status_code != 429:
        return response
    wait = _retry_after(response)
    if wait > MAX_RETRY_WAIT:
        raise RateLimited(wait)
    time.sleep(wait)
    response = send()
    if response.status_code == 429:
        raise RateLimited(_retry_after(response))
    return response


def _send(method: str, path: str, access_token: str, params: dict[str, Any], body: dict[str, Any] | None
          ) -> requests.Response:
    config = current_app.config
    http: requests.Session = current_app.extensions["mediaflow_api"]
    endpoint = metrics.api_endpoint(_name(path))
    started = time.perf_counter()
    try:
        response = http.request(
            method, f"{config['MEDIAFLOW_API_BASE'].rstrip('/')}/{path}", params=params, json=body,
            # A header, never ?access_token=: query strings end up in logs.
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=(config["MEDIAFLOW_CONNECT_TIMEOUT"], config["MEDIAFLOW_READ_TIMEOUT"]),
            allow_redirects=False,
        )
    except requests.Timeout:
        metrics.current().mediaflow_call(endpoint, "timeout", time.perf_counter() - started)
        raise MediaflowUnavailable("Mediaflow's API did not answer in time") from None
    except requests.RequestException:
        metrics.current().mediaflow_call(endpoint, "unreachable", time.perf_counter() - started)
        raise MediaflowUnavailable("Mediaflow's API cannot be reached") from None
    metrics.current().mediaflow_call(endpoint, response.status_code, time.perf_counter() - started)
    return response


def _answer(response: requests.Response, path: str) -> Any:
    """The JSON of a 2xx answer; an error as MediaflowRefused (4xx) or MediaflowUnavailable (the rest)."""
    try:
        body = response.json()
    except ValueError:
        raise MediaflowUnavailable(f"Mediaflow's API answered {_name(path)} with HTTP {response.status_code} "
                                   "without JSON", 502) from None
    if 200 <= response.status_code < 300:
        return body
    if response.status_code in (401, 403, 404):
        # Not this user's, or not there: the page says so. Mediaflow's own text is kept short.
        message = body.get("error") if isinstance(body, dict) else None
        raise MediaflowRefused(str(message or "error")[:200], status=response.status_code)
    # Any other refusal is a request the portal should not have made, or Mediaflow failing: a 502.
    raise MediaflowUnavailable(f"Mediaflow's API answered {_name(path)} with HTTP {response.status_code}", 502)


def _retry_after(response: requests.Response) -> int:
    # Seconds only: Mediaflow's HTTP-date form is not seen, and a wrong guess must not block a worker.
    raw = response.headers.get("Retry-After", "")
    return min(int(raw), 3600) if raw.isdigit() else 1


def _name(path: str) -> str:
    """The endpoint without ids, for messages: /file/{id}."""
    return "/" + "/".join("{id}" if part.lstrip("-").isdigit() else part for part in path.split("/"))
