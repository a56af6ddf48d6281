"""The portal as the company's Mediaflow gate: who may enter, and /auth and /userinfo for other apps.

nginx's auth_request asks GET /auth (GATE_AUTH_PATH) before each request to a protected app. The
before_request hook (auth.load_session) has already loaded the session and refreshed its token set
when due, one refresh at a time, so the view only reads g.user: 202 with X-Auth-Request-* headers,
or 401, which nginx turns into a redirect to /login?next=<the app's URL>. Most of these requests come
from sessions the worker already holds: KeptSessions answers them before Flask, with the same checks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from flask import Blueprint, Flask, current_app, g, jsonify, request
from werkzeug.exceptions import SecurityError
from werkzeug.sansio.http import parse_cookie
from werkzeug.wrappers import Response
from werkzeug.wsgi import get_host

from . import metrics
from .config import HOST_NAME
from .sessions import seen_mark_due, timed_out
from .tokens import TokenService, TokenSet

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)
bp = Blueprint("gate", __name__)

# oauth2-proxy's names where it has one, so apps written for it work unchanged; the customer id is Mediaflow's.
HEADERS = {
    "X-Auth-Request-User": "username",
    "X-Auth-Request-Email": "email",
    "X-Auth-Request-Name": "name",
    "X-Auth-Request-Customer-Id": "customerId",
}
# The fields an app may key on: sent exactly as Mediaflow has them, or not at all (the name is only shown).
IDENTITY_FIELDS = {"username", "email", "customerId"}
TOKEN_HEADER = "X-Auth-Request-Access-Token"  # noqa: S105 - a header name, not a token
# What Flask adds to the view's 202 headers: Werkzeug's Content-Type and Content-Length for an empty
# text/plain body, and sessions.StoreGuard.save_session's Vary. KeptSessions sends the same, written out: a
# Werkzeug Response per answer cost /auth about a tenth of its throughput (1.03 → 0.91 of a bare 202).
# tests/portal/test_gate.py compares the two answers header by header.
KEPT_ANSWER_TAIL = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "0"), ("Vary", "Cookie")]
# Long enough for any name or address; short enough that no account can bloat every request to an app.
MAX_HEADER_LENGTH = 256
MAX_TOKEN_LENGTH = 4096
MAX_NEXT_LENGTH = 2048
ALLOW_LISTS = ("ALLOWED_CUSTOMER_IDS", "ALLOWED_EMAIL_DOMAINS", "ALLOWED_USERS")


class Refused(Exception):
    """This Mediaflow account is not named by any allow-list that is set."""

    def __init__(self, user: Mapping[str, Any], reason: str) -> None:
        # The message is what the log shows: the user id and the reason, nothing else about them.
        super().__init__(f"user {user.get('id')}: {reason}")
        self.user = user
        self.reason = reason


@dataclass(frozen=True)
class Policy:
    """The allow-lists, lowered once at start; empty lists are not set."""

    customer_ids: frozenset[str]
    email_domains: frozenset[str]
    users: frozenset[str]

    @property
    def open(self) -> bool:
        return not (self.customer_ids or self.email_domains or self.users)

    def refusal(self, user: Mapping[str, Any] | None) -> str | None:
        """Why this user may not enter, or None when a list that is set names them (or none is set)."""
        if self.open:
            return None
        user = user or {}
        customer = _text(user.get("customerId")).lower()
        email = _text(user.get("email")).lower()
        username = _text(user.get("username")).lower()
        if customer and customer in self.customer_ids:
            return None
        local, at, domain = email.partition("@")
        well_formed_email = (bool(local and at and domain) and "@" not in domain
                             and email.isprintable() and " " not in email)
        if well_formed_email and domain in self.email_domains:
            return None
        # An entry with "@" names an e-mail address, any other a username: a username that looks like
        # someone's e-mail address must not pass for it.
        if (well_formed_email and email in self.users) or (username and "@" not in username and username in self.users):
            return None
        named = [name for name, values in zip(ALLOW_LISTS, (self.customer_ids, self.email_domains, self.users),
                                              strict=True) if values]
        return f"customerId {customer or 'unknown'} is not named by {', '.join(named)}"


def init_app(app: Flask) -> None:
    """Read the allow-lists once, and serve /auth at GATE_AUTH_PATH."""
    config = app.config
    policy = Policy(*(frozenset(str(item).strip().lower() for item in config.get(name) or ())
                      for name in ALLOW_LISTS))
    app.extensions["mediaflow_gate"] = policy
    if policy.open:
        app.logger.warning("Allow-lists: none of %s is set, so every Mediaflow user of this client id may enter",
                           ", ".join(ALLOW_LISTS))
    app.register_blueprint(bp)
    # Its path is a setting, so it is added to this app, not to the blueprint that every app shares.
    app.add_url_rule(config["GATE_AUTH_PATH"], "gate.auth", auth, methods=["GET"])


def answers_plainly() -> bool:
    """True on the gate's endpoints: nginx and apps read their status, so failures carry no page."""
    # By path, not endpoint: a 405 on /auth has matched no endpoint, and nginx still reads only its status.
    return request.path in (current_app.config["GATE_AUTH_PATH"], "/userinfo")


def policy() -> Policy:
    return current_app.extensions["mediaflow_gate"]  # type: ignore[no-any-return]


def facts(me: Mapping[str, Any]) -> dict[str, Any]:
    """What the session keeps of /me: enough to show the user and re-check the allow-lists without a call."""
    return {"id": me.get("id"), "name": _display_name(me), "username": _text(me.get("username")),
            "email": _text(me.get("email")), "customerId": me.get("customerId")}


def _display_name(me: Mapping[str, Any]) -> str:
    for field in ("name", "username", "email"):
        value = me.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return "Mediaflow user"


def admit(user: Mapping[str, Any]) -> None:
    """Raise Refused unless the allow-lists let this user in."""
    reason = policy().refusal(user)
    if reason:
        raise Refused(user, reason)


def restricted() -> bool:
    """True when an allow-list is set, so a login needs /me to go on."""
    return not policy().open


def auth() -> Response:
    """Answer nginx's auth_request: 202 with the user's headers for a live session, else 401."""
    if g.user is None:
        return unauthorized()
    headers, problem = answer_headers(g.user, g.tokens, current_app.config["GATE_PASS_ACCESS_TOKEN"])
    if problem:
        log.warning("Gate: %s", problem)
    if headers is None:
        return unauthorized()
    return Response(b"", 202, headers, mimetype="text/plain")


def answer_headers(user: Mapping[str, Any], tokens: TokenSet, pass_token: bool
                   ) -> tuple[list[tuple[str, str]] | None, str | None]:
    """The 202's headers for this user (None: answer 401), and what is wrong with them, if anything."""
    if not (_text(user.get("id")) or _text(user.get("username"))):
        # A login whose /me failed has no identity to hand an app: no 202 for it.
        return None, None
    # One list handed to the response: no header is looked up, and nothing else is added (security.py skips /auth).
    headers = [("Cache-Control", "no-store")]
    for header, field in HEADERS.items():
        value = header_value(user.get(field), MAX_HEADER_LENGTH)
        if field in IDENTITY_FIELDS and value != _text(user.get(field)).encode("utf-8").decode("latin-1"):
            # Cleaned up, "demo\u200b" would read as "demo": an app must never take one user for another.
            return None, f"the user's {field} cannot be sent as a header as it is; answering 401"
        if value:
            headers.append((header, value))
    if pass_token:
        token = header_value(tokens.access_token, MAX_TOKEN_LENGTH)
        if token != tokens.access_token:
            # Never a part of a token: an app would get a broken one and fail in a confusing way.
            return headers, "the access token cannot be sent as a header (too long or unusual characters)"
        headers.append((TOKEN_HEADER, token))
    return headers, None


class KeptSessions:
    """WSGI middleware around Flask itself: /auth for a session this worker holds live copies of, without Flask.

    nginx asks /auth before every request to a protected app, so its cost is added to each of them.
    Flask's request context, hooks and session interface cost more than the answer: a session whose
    record and token set this worker already holds (the session cache's tracked copy, the token
    service's copy) needs none of them. Only a 202 is answered here, by the checks load_session and
    the view make; anything else goes on to Flask, whose answer is the gate's: no copy, a token due for
    refresh, an idle mark to write, a Host outside TRUSTED_HOSTS, the allow-lists, a header that cannot
    be sent as it is (Flask logs why).
    """

    def __init__(self, app: Flask, wsgi_app: WSGIApplication) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        # Settled by configure(); the session cookie's name is read at each request, as Flask-Session does:
        # sessions.init_app chooses it after this wraps Flask.
        self.path, self.hosts, self.pass_token = (app.config[name] for name in (
            "GATE_AUTH_PATH", "TRUSTED_HOSTS", "GATE_PASS_ACCESS_TOKEN"))

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        headers = None
        if environ.get("PATH_INFO") == self.path and environ.get("REQUEST_METHOD") == "GET":
            try:
                headers = self._kept_answer(environ)
            except Exception as error:
                # Only a shortcut: Flask answers instead, with its error handlers, rather than a bare 500.
                log.warning("Gate: no answer before Flask for this request (%s)", error.__class__.__name__)
        if headers is None:
            return self.wsgi_app(environ, start_response)
        environ[metrics.ROUTE_KEY] = self.path
        start_response("202 ACCEPTED", [*headers, *KEPT_ANSWER_TAIL])
        return [b""]

    def _kept_answer(self, environ: WSGIEnvironment) -> list[tuple[str, str]] | None:
        try:
            get_host(environ, self.hosts)  # the check Flask makes before it routes
        except SecurityError:
            return None
        # Werkzeug's own parser for request.cookies, which Flask-Session reads the session id from.
        sid = parse_cookie(environ.get("HTTP_COOKIE")).get(self.app.config["SESSION_COOKIE_NAME"])
        record = self.app.session_interface.kept_record(sid) if sid else None  # type: ignore[attr-defined]
        if not record or not record.get("tokens_key"):
            return None
        service: TokenService = self.app.extensions["mediaflow_tokens"]
        now = service.clock()
        tokens = service.kept(record["tokens_key"])
        user = record.get("user")
        if (tokens is None or user is None or timed_out(record, now, self.app.config)
                or seen_mark_due(record, now, self.app.config) or self.app.extensions["mediaflow_gate"].refusal(user)):
            return None
        headers, problem = answer_headers(user, tokens, self.pass_token)
        # A problem is left to Flask's view, which answers the same and logs it.
        return None if problem else headers


@bp.get("/userinfo")
def userinfo() -> Response:
    """Return the logged-in user's facts as JSON, or a 401 JSON body."""
    if g.user is None:
        return unauthorized()
    return jsonify({field: g.user.get(field) for field in ("id", "username", "email", "name", "customerId")})


def unauthorized() -> Response:
    """The gate's answer for no live session: a status (and JSON for /userinfo), never a page or a redirect."""
    if request.endpoint == "gate.userinfo":
        response = jsonify(error="unauthorized")
        response.status_code = 401
        return response
    return Response("Unauthorized\n", 401, mimetype="text/plain")


def header_value(value: Any, limit: int) -> str:
    """value as header text: control characters (CR, LF, …) dropped, at most limit characters, UTF-8 on the wire."""
    text = _text(value)
    if not text.isprintable():  # CR, LF and every other control or separator character
        text = "".join(c for c in text if c.isprintable()).strip()
    text = text[:limit]
    # WSGI carries header bytes as Latin-1 text; this sends the UTF-8 bytes of the name unchanged.
    return text.encode("utf-8").decode("latin-1")


def safe_absolute_next(value: str | None) -> str | None:
    """Return value if it is an http(s) URL on a host in GATE_ALLOWED_REDIRECT_HOSTS, else None."""
    hosts = current_app.config.get("GATE_ALLOWED_REDIRECT_HOSTS") or []
    if not hosts or not value or len(value) > MAX_NEXT_LENGTH:
        return None
    for form in (value, unquote(value)):
        if "\\" in form or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in form):
            return None
    lowered = value.lower()
    if not lowered.startswith(("https://", "http://")):
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if "@" in parts.netloc or not host or unquote(parts.netloc) != parts.netloc:
        return None
    # ASCII labels only: a fullwidth backslash or dot (U+FF3C, U+FF0E) passes a text check, then becomes
    # "\" or breaks the header when Werkzeug writes the Location in IDNA.
    if not parts.netloc.isascii() or not HOST_NAME.fullmatch(host):
        return None
    for allowed in (h.lower() for h in hosts):
        if host == allowed or (allowed.startswith(".") and host.endswith(allowed)):
            return value
    return None


def _text(value: Any) -> str:
    """A fact from /me as text: strings and numbers only (a bool or a list is no name)."""
    # Strings first: /auth asks this of each of the user's facts on every request.
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""
