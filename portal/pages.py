"""The portal's pages: the landing page, the home page with the token status, the account page."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, render_template

from . import api, gate, tokens
from .auth import login_required
from .mediaflow import MediaflowError

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> Any:
    """Show the landing page, or the user's profile and token status."""
    if g.user is None:
        return render_template("pages/landing.html")
    # The name was read from /me at login: the home page makes no call to Mediaflow.
    return render_template("pages/home.html", status=token_status())


@bp.get("/account")
@login_required
def account() -> Any:
    """Show the Mediaflow account details, fresh from GET /me."""
    profile, problem = _profile()
    return render_template("pages/account.html", profile=profile, problem=problem)


@bp.get("/session")
@login_required
def session_status() -> Any:
    """Return the token status as JSON, without the token values and without calling Mediaflow."""
    return jsonify(user=g.user, tokens=token_status())


def token_status() -> dict[str, Any]:
    now = tokens.service().clock()
    held = g.tokens
    return {
        "expires_in": max(0, int(held.expires_in(now))),
        "refresh_token_held": bool(held.refresh_token),
        "last_refreshed": held.refreshed_at,
        "last_refreshed_ago": None if held.refreshed_at is None else int(now - held.refreshed_at),
    }


def _profile() -> tuple[dict[str, Any] | None, str | None]:
    """The user from Mediaflow, or a message; an API failure never logs anyone out."""
    try:
        me = api.first(api.get("me"))
    except MediaflowError:
        return None, "Mediaflow did not answer just now, so your profile cannot be shown. You are still logged in."
    return {**me, "name": gate.facts(me)["name"]}, None
