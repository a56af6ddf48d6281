"""A well-known alternative: a minimal Flask-Dance client of the same provider, with cookie sessions."""

from __future__ import annotations

import os

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from flask_dance.consumer import OAuth2ConsumerBlueprint


def create_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = os.environ["SECRET_KEY"]
    emulator = os.environ["MEDIAFLOW_EMULATOR_URL"]
    client = {"client_id": os.environ["MEDIAFLOW_CLIENT_ID"], "client_secret": os.environ["MEDIAFLOW_CLIENT_SECRET"]}
    mediaflow = OAuth2ConsumerBlueprint(
        "mediaflow", __name__, **client,
        base_url=f"{emulator}/1/",
        authorization_url=f"{emulator}/authorize",
        token_url=f"{emulator}/1/oauth2/token",
        auto_refresh_url=f"{emulator}/1/oauth2/token",
        auto_refresh_kwargs=client,
        redirect_to="page",
    )
    app.register_blueprint(mediaflow, url_prefix="/login")

    @app.get("/session")
    def page() -> ResponseReturnValue:
        """An authenticated page that does not call Mediaflow."""
        if not mediaflow.session.authorized:
            return jsonify(error="not logged in"), 401
        return jsonify(user={"id": 1}, tokens={"expires_in": mediaflow.token.get("expires_in")})

    @app.get("/me")
    def me() -> ResponseReturnValue:
        """Call Mediaflow: Flask-Dance refreshes an expired token here, per request."""
        response = mediaflow.session.get("me")
        return jsonify(response.json()), response.status_code

    return app
