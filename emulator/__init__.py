"""A local Mediaflow: the authorization page, the token endpoint and the media API on a demo library, in memory."""

from __future__ import annotations

import time
from typing import Any

from authlib.oauth2 import OAuth2Error
from flask import Flask, Response, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from . import api
from .config import GRANT_TYPES, EmulatorConfig, default_config
from .faults import Fault, FaultError, Faults, Stats, drop_connection
from .oauth import MediaflowServer
from .store import Store


def create_app(config: EmulatorConfig | None = None, public_url: str | None = None) -> Flask:
    """Create the emulator for the given clients, users and library (the defaults when none).

    public_url: the emulator's address as browsers reach it, for preview and download URLs, when the
    portal reaches it at another one (compose: http://emulator:5001 for the portal, 127.0.0.1 for browsers).
    """
    config = config or default_config()
    app = Flask(__name__)
    app.config["EMULATOR_PUBLIC_URL"] = public_url
    # Cookies ignore ports: never share a cookie name with the portal on the same host.
    app.config["SESSION_COOKIE_NAME"] = "mediaflow_emulator"
    store = Store(config.code_lifetime)
    server = MediaflowServer(config, store)
    faults = Faults()
    stats = Stats()
    app.extensions["mediaflow_emulator"] = {"config": config, "store": store, "faults": faults, "stats": stats}
    api.init_app(app, config, store, stats)

    @app.before_request
    def inject_fault() -> Any:
        g.started = time.perf_counter()
        area = _area()
        if area:
            stats.started()
        if area == "api":
            stats.api_call(request.path)
        fault = faults.take(area) if area else None
        if fault is None:
            return None
        if fault.kind == "delay":
            time.sleep(fault.delay)
            return None
        if area == "token":
            stats.token_request(_grant_bucket(), ok=False)
        if fault.kind == "drop":
            drop_connection(request.environ)
            return Response("", status=fault.status)
        if fault.kind == "garbage":
            return Response("<html><body>502 Bad Gateway</body></html>", status=fault.status, mimetype="text/html")
        if fault.kind == "oauth_error":
            return jsonify(error=fault.error, error_description="Injected by the emulator."), fault.status
        if fault.kind == "rate_limit":
            return jsonify(status=429, error="Too many requests."), 429, {"Retry-After": str(fault.retry_after)}
        return jsonify(status=fault.status, error="Injected fault."), fault.status

    @app.after_request
    def count_time(response: Response) -> Response:
        area = _area()
        if area and "started" in g:
            stats.busy(area, time.perf_counter() - g.started, path=request.path if area == "api" else None)
        return response

    @app.teardown_request
    def count_finished(error: BaseException | None) -> None:
        if _area() and "started" in g:
            stats.finished()

    @app.route("/authorize", methods=["GET", "POST"])
    def authorize() -> Any:
        """Show the login page, then send the user back with a code or an error."""
        try:
            grant = server.get_consent_grant(end_user=None)
        except OAuth2Error as error:
            if error.redirect_uri:
                return server.handle_error_response(None, error)
            return render_template("emulator/error.html", error=error), 400
        context = {"client": grant.client.client, "users": config.users, "error": None}
        if request.method == "GET":
            return render_template("emulator/login.html", **context)
        if request.form.get("action") == "deny":
            return server.create_authorization_response(grant=grant, grant_user=None)
        user = config.authenticate(request.form.get("username"), request.form.get("password"))
        if user is None:
            context["error"] = "Wrong username or password."
            return render_template("emulator/login.html", **context), 401
        return server.create_authorization_response(grant=grant, grant_user=user)

    @app.post("/1/oauth2/token")
    def token() -> Response:
        """Issue tokens for the three documented grants."""
        response: Response = server.create_token_response()
        stats.token_request(_grant_bucket(), ok=response.status_code == 200, shape=_request_shape())
        return response

    @app.get("/_emulator/stats")
    def read_stats() -> Any:
        """Count token requests per grant, API calls and time per path, downloads and previews."""
        return jsonify(stats.as_json() | {"reuse_detected": store.reuse_detected})

    @app.route("/_emulator/faults", methods=["GET", "POST", "DELETE"])
    def manage_faults() -> Any:
        """List, add or clear injected faults."""
        if request.method == "POST":
            try:
                faults.add(Fault.from_json(request.get_json(silent=True)))
            except FaultError as error:
                return jsonify(error=str(error)), 400
        elif request.method == "DELETE":
            faults.clear()
        return jsonify(faults=faults.pending())

    @app.post("/_emulator/reset")
    def reset() -> Any:
        """Clear faults and counts between tests."""
        faults.clear()
        stats.reset()
        store.reuse_detected = 0
        return jsonify(status="reset")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        if request.path.startswith("/1/"):
            return _api_error(error.code or 500, error.description or "Error.")
        return render_template("emulator/error.html", error=error), error.code

    return app


def _area() -> str | None:
    """The fault area of this request: every /1/ view but the token endpoint is "api"."""
    if request.blueprint == "api":
        return "api"
    return {"authorize": "authorize", "token": "token"}.get(request.endpoint or "")


def _grant_bucket() -> str:
    grant_type = request.form.get("grant_type", "")
    return grant_type if grant_type in GRANT_TYPES else "other"


def _request_shape() -> dict[str, Any]:
    """What a token request carried, by field name only: tests check the body without seeing secrets."""
    scheme = request.headers.get("Authorization", "").partition(" ")[0].lower()
    return {
        "grant_type": _grant_bucket(),
        "fields": sorted(set(request.form)),
        "client_auth": "client_secret_basic" if scheme == "basic" else
        "client_secret_post" if "client_secret" in request.form else "none",
        "redirect_uri": request.form.get("redirect_uri"),
    }


def _api_error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(status=status, error=message), status
