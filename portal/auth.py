"""/login, /callback, /logout, the session hook that refreshes tokens, and login_required."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, session, url_for
from flask.sessions import NullSession
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from . import api, audit, gate, mediaflow, metrics, tokens
from .sessions import LOGIN_LIFETIME, regenerate_id, seen_mark_due, timed_out
from .tokens import SessionEnded, StoreUnavailable

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)

MAX_NEXT_LENGTH = 2048
# The portal's own record of the logins this browser started: state -> {"next": path, "at": time}.
PENDING_LOGINS = "pending_logins"
# A few tabs may log in at once; older logins are dropped, so no cookie can grow its record.
MAX_PENDING_LOGINS = 3
# How much of Mediaflow's error text a login failure shows.
MAX_ERROR_LENGTH, MAX_DESCRIPTION_LENGTH = 64, 200

F = TypeVar("F", bound=Callable[..., Any])


def safe_next_url(value: str | None) -> str | None:
    """Return value if it is a path on this site, else None (no open redirects)."""
    if not value or len(value) > MAX_NEXT_LENGTH:
        return None
    # Check the decoded form too: "/%0d%0a…" or "/%2F%2Fevil" must not pass as harmless text.
    for form in (value, unquote(value)):
        if not form.startswith("/") or form.startswith("//") or "\\" in form:
            return None
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in form):
            return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def redirect_uri() -> str:
    """MEDIAFLOW_REDIRECT_URI when set, else this app's callback URL."""
    configured: str | None = current_app.config.get("MEDIAFLOW_REDIRECT_URI")
    return configured or url_for("auth.callback", _external=True)


@bp.get("/login")
def login() -> Response:
    """Send the browser to Mediaflow's login page with a fresh state."""
    state = secrets.token_urlsafe(32)
    pending = _pending_logins()
    next_url = request.args.get("next")
    pending[state] = {"next": safe_next_url(next_url) or gate.safe_absolute_next(next_url),
                      "at": tokens.service().clock()}
    for old in sorted(pending, key=lambda s: pending[s]["at"])[:-MAX_PENDING_LOGINS]:
        _forget_login(old, pending)
    session[PENDING_LOGINS] = pending
    # Authlib keeps its own record of the state (and the PKCE verifier) and checks it at the callback.
    return mediaflow.client().authorize_redirect(redirect_uri(), state=state)  # type: ignore[no-any-return]


@bp.get("/callback")
def callback() -> Any:
    """Check the state, trade the code for tokens and start a fresh session."""
    try:
        return _callback()
    except HTTPException:
        raise  # a malformed callback, counted where it was refused
    except gate.Refused as refused:
        _login_outcome("refused", refused.user, refusal=refused.reason)
        raise
    except mediaflow.MediaflowError:
        _login_outcome("unavailable")
        raise
    except Exception:
        _login_outcome("error")
        raise


def _callback() -> Any:
    for name in ("code", "state", "error"):
        if len(request.args.getlist(name)) > 1:
            _login_outcome("provider_error")
            abort(400, description=f"The answer from Mediaflow had more than one '{name}'.")
    state = request.args.get("state", "")
    pending = _pending_logins()
    started = pending.pop(state, None)
    if started is None:
        # Also for an error: text from a callback this browser never started is nobody's to show.
        log.info("Login failed: unknown, expired or reused state")
        _login_outcome("state_error")
        return render_template("errors/state.html"), 400
    session[PENDING_LOGINS] = pending
    if request.args.get("error"):
        _forget_login(state, pending)  # Authlib spends its own record of the state only in a code exchange
        error = request.args["error"][:MAX_ERROR_LENGTH]
        log.info("Login failed: Mediaflow answered %r", error)
        description = request.args.get("error_description", "")[:MAX_DESCRIPTION_LENGTH]
        denied = error == "access_denied"
        _login_outcome("denied" if denied else "provider_error")
        return render_template("errors/denied.html" if denied else "errors/provider.html", error=error,
                               description=description), 400
    if not request.args.get("code"):
        _forget_login(state, pending)
        log.info("Login failed: the callback has no code")
        _login_outcome("provider_error")
        return render_template("errors/provider.html", error="missing code", description=None), 400
    # Two callbacks of one login at once (tabs, workers, replicas) both found the state: one trades the code.
    if not tokens.service().store.claim(f"state:{state}", LOGIN_LIFETIME):
        log.info("Login failed: this login's state was already used")
        _login_outcome("state_error")
        return render_template("errors/state.html"), 400
    try:
        token = mediaflow.exchange_code()
    except mediaflow.StateMismatch:
        _login_outcome("state_error")
        return render_template("errors/state.html"), 400
    except mediaflow.MediaflowRefused as error:
        log.info("Login failed: Mediaflow refused the code (%s)", error.error[:MAX_ERROR_LENGTH])
        _login_outcome("provider_error")
        description = error.description[:MAX_DESCRIPTION_LENGTH]
        return render_template("errors/provider.html", error=error.error, description=description), 400
    user = _start_session(token)
    _login_outcome("ok", user)
    # Checked again: the record lives in the store, and the store is not trusted to hold only what was written.
    next_url = started.get("next")
    return redirect(safe_next_url(next_url) or gate.safe_absolute_next(next_url) or url_for("pages.index"))


def _login_outcome(outcome: str, user: Mapping[str, Any] | None = None, refusal: str | None = None) -> None:
    """Count a login's outcome and write its audit event."""
    metrics.current().login(outcome)
    audit.login(outcome, user, refusal)


@bp.post("/logout")
def logout() -> Response:
    """End the session: delete its server-side record and the token set, and clear the cookie."""
    key = session.get("tokens_key")
    if key:
        first = tokens.service().end(key)
        log.info("Logout of user %s", (session.get("user") or {}).get("id"))
        if first:
            metrics.current().session_ended("logout")
            audit.logout(session.get("user"))
    session.clear()
    flash("You are logged out of the portal.")
    regenerate_id(session)
    return redirect(url_for("pages.index"))


@bp.app_errorhandler(SessionEnded)
def session_ended(error: SessionEnded) -> Any:
    """Mediaflow refused the session's tokens in the middle of a page (portal/api.py): end it politely."""
    return _session_ended("mediaflow", error.cause, first=error.first)


def login_required(view: F) -> F:
    """Send people who are not logged in to /login, and back here afterwards."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.user is None:
            return redirect(url_for("auth.login", next=safe_next_url(request.full_path.rstrip("?"))))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def load_session() -> Any:
    """Before each request: load the user and a fresh token set, refreshing it when due.

    gate.KeptSessions makes the same checks for the /auth it answers before Flask: change both.
    """
    g.user = None
    g.tokens = None
    if request.endpoint in ("static", "health.healthz", "health.readyz"):
        return None
    # One plain copy: every look-up through the session proxy costs a context look-up, on every request.
    saved = dict(session.items())
    key = saved.get("tokens_key")
    if not key:
        if isinstance(session, NullSession):
            # The store failed to load this session (sessions.StoreGuard): a 503, not the logged-out page.
            raise StoreUnavailable("the session store cannot be reached")
        return None
    service = tokens.service()
    config = current_app.config
    now = service.clock()
    timeout = timed_out(saved, now, config)
    if timeout:
        return _session_ended("timeout", timeout)
    try:
        g.tokens = service.fresh(key)
    except SessionEnded as ended:
        return _session_ended("mediaflow", ended.cause, first=ended.first)
    user = g.user = saved.get("user")
    refusal = gate.policy().refusal(user)
    if refusal:
        # Started under allow-lists that named this user; the current ones do not.
        return _session_ended("refused", "allow_lists", refusal)
    if seen_mark_due(saved, now, config):
        session["seen_at"] = now
    return None


def _pending_logins() -> dict[str, dict[str, Any]]:
    """The logins this browser started less than LOGIN_LIFETIME ago, by state; expired ones are forgotten."""
    pending = session.get(PENDING_LOGINS) or {}
    now = tokens.service().clock()
    live = {state: started for state, started in pending.items()
            if isinstance(started, dict) and isinstance(started.get("at"), int | float)
            and isinstance(started.get("next"), str | None) and 0 <= now - started["at"] < LOGIN_LIFETIME}
    for state in pending.keys() - live.keys():
        _forget_login(state, live)
    return live


def _forget_login(state: str, pending: dict[str, dict[str, Any]]) -> None:
    pending.pop(state, None)
    # Authlib documents no way to drop a saved state; this is the call its own callback makes.
    mediaflow.client().framework.clear_state_data(session, state)


def _start_session(token: dict[str, Any]) -> dict[str, Any]:
    """Store the token set under a new key, then give the session a new id (no session fixation); the user."""
    service = tokens.service()
    old_key = session.pop("tokens_key", None)
    if old_key:
        service.forget(old_key)
    for name in ("user", "login_at", "seen_at"):
        session.pop(name, None)
    received = service.clock()  # the token's lifetime runs from when it arrived, not from after /me
    user: dict[str, Any] = {"id": None, "name": "Mediaflow user"}
    try:
        user = gate.facts(api.me(token["access_token"]))
    except mediaflow.MediaflowError as error:
        if gate.restricted():
            raise mediaflow.MediaflowUnavailable("could not read /me to check who may enter") from None
        log.warning("Login: could not read /me (%s); continuing without a name", error)
    # Before anything is stored: a refused account gets no session and no token set.
    gate.admit(user)
    key = service.start(token, received)
    now = service.clock()
    if not session.get(PENDING_LOGINS):
        session.pop(PENDING_LOGINS, None)
    session.update(tokens_key=key, user=user, login_at=now, seen_at=now)
    # Only now, with the session filled: Flask-Session's regenerate does nothing for an empty session.
    regenerate_id(session)
    log.info("Login succeeded for user %s", user["id"])
    metrics.current().sessions_started.inc()
    return user


def _session_ended(reason: str, cause: str, refusal: str | None = None, first: bool | None = None) -> Any:
    """Forget the Mediaflow session politely and offer to log in again, back to this page.

    first: whether this request ended it, when the token service already did (a refused refresh).
    """
    user = session.get("user")
    key = session.pop("tokens_key", None)
    if key:
        if first is None:
            first = tokens.service().end(key)
        if first:
            metrics.current().session_ended(reason)
            audit.session_ended(reason, cause, user, refusal)
    for name in ("user", "login_at", "seen_at"):
        session.pop(name, None)
    # Also mid-page (portal/api.py): the page that says so must not show the user as logged in.
    g.user = g.tokens = None
    log.info("Session ended (%s)", reason)
    if gate.answers_plainly():
        return gate.unauthorized()
    next_url = safe_next_url(request.full_path.rstrip("?")) if request.method == "GET" else None
    return render_template("errors/session_ended.html", reason=reason, next_url=next_url), 401
