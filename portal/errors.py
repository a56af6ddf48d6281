"""One error model: each expected failure has a status and a page; anything else is a 500 page, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, render_template, request
from flask.globals import request_ctx
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError, SecurityError

from .mediaflow import MediaflowUnavailable
from .stores import LockTimeout, StoreUnavailable
from .tokens import RefreshFailed

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
}


def init_app(app: Flask) -> None:
    for exception in PAGES:
        app.register_error_handler(exception, expected_failure)
    app.register_error_handler(SecurityError, untrusted_host)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(InternalServerError, internal_error)


def expected_failure(error: Exception) -> Any:
    status, page, level, label = next(PAGES[kind] for kind in type(error).__mro__ if kind in PAGES)
    status = status or getattr(error, "status", 503)
    log.log(level, "%s on %s: %s", label, request.path, error)
    return render_template(page, status=status), status


def untrusted_host(error: SecurityError) -> Any:
    # Flask builds no URLs for a Host outside TRUSTED_HOSTS: the page's links are paths, so bind to loopback.
    request_ctx.url_adapter = current_app.url_map.bind("localhost", script_name=request.script_root or None)
    log.warning("Untrusted Host header on %s", request.path)
    page = BadRequest("The portal does not answer to this host name.")
    return render_template("errors/http.html", status=400, error=page), 400


def http_error(error: HTTPException) -> Any:
    status = error.code or 500
    # Keep the exception's headers (Allow on a 405, Retry-After on a 503); the page brings its own type.
    headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
    return render_template("errors/http.html", status=status, error=error), status, headers


def internal_error(error: InternalServerError) -> Any:
    original = error.original_exception
    log.error("Unexpected error on %s: %s", request.path, original.__class__.__name__ if original else error)
    return render_template("errors/http.html", status=500, error=error), 500
