"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from . import metrics, tokens
from .tokens import StoreUnavailable

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    """Answer 200 while the process serves requests; touches nothing."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Any:
    """Answer 200 only when the session store answers."""
    try:
        tokens.service().store.ping()
    except StoreUnavailable as error:
        metrics.current().store_errors.inc()
        return jsonify(status="unavailable", reason=str(error)), 503
    return jsonify(status="ready")
