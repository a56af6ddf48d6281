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

    return app
