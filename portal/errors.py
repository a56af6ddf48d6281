"""One error model: each expected failure has a status and a page; anything else is a 500 page, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError, SecurityError
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Response

from . import metrics
from .api import RateLimited
from .gate import Refused, answers_plainly
from .mediaflow import MediaflowRefused, MediaflowUnavailable
from .tokens import LockTimeout, RefreshFailed, StoreUnavailable

log = logging.getLogger(__name__)

# Exception → status, page, and the log line operators watch (README, "What to monitor").
# A status of None means the exception's own (502 for an answer that is not understood, else 503).
PAGES: dict[type[Exception], tuple[int | None, str, int, str]] = {
    CSRFError: (400, "errors/csrf.html", logging.INFO, "CSRF check failed"),
    MediaflowUnavailable: (None, "errors/mediaflow.html", logging.WARNING, "Mediaflow unavailable"),
    RefreshFailed: (503, "errors/mediaflow.html", logging.WARNING, "Mediaflow unavailable"),
    # Another request of this session is still waiting on Mediaflow: Mediaflow is slow, the store is fine.
    LockTimeout: (503, "errors/mediaflow.html", logging.WARNING, "Mediaflow slow"),
    StoreUnavailable: (503, "errors/store.html", logging.ERROR, "Session store unavailable"),
    # Mediaflow's API said 403 or 404 (or 401 after a refresh, outside a page): the file or folder is not this user's.
    MediaflowRefused: (None, "errors/api.html", logging.INFO, "Mediaflow refused an API call"),
    RateLimited: (429, "errors/rate_limited.html", logging.WARNING, "Mediaflow rate limit"),
    # The allow-lists do not name this account (portal/gate.py); the page names the account it signed in with.
    Refused: (403, "errors/refused.html", logging.WARNING, "Login refused"),
}


def init_app(app: Flask) -> None:
    for exception in PAGES:
        app.register_error_handler(exception, expected_failure)
    # Flask cannot build URLs for a Host outside TRUSTED_HOSTS, so this page is rendered once, at start,
    # for a trusted one; it names no host, and its links are paths.
    with app.test_request_context(base_url="http://localhost/"):
        page = BadRequest("The portal does not answer to this host name.")
        app.extensions["portal_untrusted_host_page"] = render_template("errors/http.html", status=400, error=page)
    app.register_error_handler(SecurityError, untrusted_host)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(InternalServerError, internal_error)


def expected_failure(error: Exception) -> Any:
    fixed, page, level, label = next(PAGES[kind] for kind in type(error).__mro__ if kind in PAGES)
    status = int(fixed or getattr(error, "status", None) or 503)
    log.log(level, "%s on %s: %s", label, request.path, error)
    if isinstance(error, StoreUnavailable):
        metrics.current().store_errors.inc()
    headers = [("Retry-After", str(error.retry_after))] if isinstance(error, RateLimited) else None
    return _answer(page, status, headers, error=error)


def untrusted_host(error: SecurityError) -> Any:
    log.warning("Untrusted Host header on %s", request.path)
    if answers_plainly():
        return _answer("errors/http.html", 400)
    return current_app.extensions["portal_untrusted_host_page"], 400


def http_error(error: HTTPException) -> Any:
    status = error.code or 500
    # Keep the exception's headers (Allow on a 405, Retry-After on a 503); the page brings its own type.
    headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
    return _answer("errors/http.html", status, headers, error=error)


def internal_error(error: InternalServerError) -> Any:
    original = error.original_exception
    log.error("Unexpected error on %s: %s", request.path, original.__class__.__name__ if original else error)
    return _answer("errors/http.html", 500, error=error)


def _answer(page: str, status: int, headers: list[tuple[str, str]] | None = None, **context: Any) -> Any:
    """The error page, or on the gate's endpoints only the status: nginx reads nothing else."""
    if answers_plainly():
        return Response(f"{HTTP_STATUS_CODES.get(status, 'Error')}\n", status, headers, mimetype="text/plain")
    return render_template(page, status=status, **context), status, headers or []
