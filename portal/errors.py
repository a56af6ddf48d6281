"""One error handler: every failure becomes a page that extends base.html, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, render_template, request
from flask.globals import request_ctx
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError, SecurityError

from .mediaflow import MediaflowUnavailable
from .tokens import StoreUnavailable

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    app.register_error_handler(CSRFError, csrf_failed)
    app.register_error_handler(SecurityError, untrusted_host)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(MediaflowUnavailable, mediaflow_unavailable)
    app.register_error_handler(StoreUnavailable, store_unavailable)
    app.register_error_handler(InternalServerError, internal_error)


def csrf_failed(error: CSRFError) -> Any:
    return render_template("errors/csrf.html"), 400


def untrusted_host(error: SecurityError) -> Any:
    # Flask builds no URLs for a Host outside TRUSTED_HOSTS: the page's links are paths, so bind to loopback.
    request_ctx.url_adapter = current_app.url_map.bind("localhost", script_name=request.script_root or None)
    log.warning("Untrusted Host header on %s", request.path)
    page = BadRequest("The portal does not answer to this host name.")
    return render_template("errors/http.html", status=400, error=page), 400


def http_error(error: HTTPException) -> Any:
    status = error.code or 500
    return render_template("errors/http.html", status=status, error=error), status


def mediaflow_unavailable(error: MediaflowUnavailable) -> Any:
    log.warning("Mediaflow unavailable on %s: %s", request.path, error)
    return render_template("errors/mediaflow.html", status=error.status), error.status


def store_unavailable(error: StoreUnavailable) -> Any:
    log.error("Session store unavailable on %s: %s", request.path, error)
    return render_template("errors/store.html"), 503


def internal_error(error: InternalServerError) -> Any:
    original = error.original_exception
    log.error("Unexpected error on %s: %s", request.path, original.__class__.__name__ if original else error)
    return render_template("errors/http.html", status=500, error=error), 500
