"""The physical limit: a bare Flask app with one route, served like the portal."""

from __future__ import annotations

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/session")
    def session() -> ResponseReturnValue:
        """Answer like the portal's /session, without a session."""
        return jsonify(user={"id": 1, "name": "Demo User"}, tokens={"expires_in": 3600})

    @app.get("/auth")
    def auth() -> ResponseReturnValue:
        """Answer like the portal's /auth for a live session, without a session."""
        return "", 202, {"X-Auth-Request-User": "demo", "X-Auth-Request-Email": "demo@example.com",
                         "X-Auth-Request-Name": "Demo User", "X-Auth-Request-Customer-Id": "1"}

    return app
