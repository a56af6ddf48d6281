"""CSRF checks; headers from RFC 9700 and OWASP: a strict CSP, no sniffing, no Referer off-site, no caching."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from flask import Flask, request, session
from flask.sessions import NullSession
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf
from werkzeug.exceptions import SecurityError

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# Plain lines rather than Flask-Talisman: the portal needs a few fixed headers, and Talisman's other
# jobs (forcing HTTPS, HSTS) belong to the TLS-terminating proxy in front of it.
# Defaults for every response, error pages included: a view that sets one of these keeps its own.
CSP = {
    "default-src": "'self'", "frame-ancestors": "'none'", "form-action": "'self'", "base-uri": "'none'",
    "object-src": "'none'",
    # Joined by init_app with the origins of Mediaflow's previews (MEDIAFLOW_PREVIEW_ORIGINS).
    "img-src": "'self'",
}
HEADERS = {
    "Content-Security-Policy": "; ".join(f"{name} {value}" for name, value in CSP.items()),
    "X-Content-Type-Options": "nosniff",
    # Never a Referer (the callback's code) to other sites; same-origin POSTs keep theirs for Flask-WTF's https check.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    # Pages depend on the session: no browser or proxy may keep them (Back after logout shows nothing).
    # Static files set their own. No "Pragma": RFC 9111 (5.4) deprecates it and it means nothing in responses.
    "Cache-Control": "no-store",
}


class DefaultHeaders:
    """WSGI middleware: each of the default headers that the response does not already have, error pages included.

    Below Flask rather than in an after_request hook: Werkzeug checks every header a response is given
    and checks them all again when it hands them to the server; these are constants, checked here once.
    """

    def __init__(self, app: WSGIApplication, headers: Mapping[str, str], gate_path: str) -> None:
        self.app = app
        self.defaults = [(name.lower(), (name, value)) for name, value in headers.items()]
        # nginx keeps only the status and X-Auth-Request-* headers of /auth, on every request to an app: no page.
        self.gate_path = gate_path

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == self.gate_path:
            return self.app(environ, start_response)

        def start(status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
                  ) -> Callable[[bytes], object]:
            present = {name.lower() for name, _value in headers}
            headers.extend(header for name, header in self.defaults if name not in present)
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


# A signed CSRF token is reused for this long (WTF_CSRF_TIME_LIMIT is an hour), for this many sessions per worker.
CSRF_RESIGN_AFTER = 300
MAX_SIGNED_TOKENS = 10_000


def init_app(app: Flask) -> None:
    """Refuse untrusted hosts first, then check CSRF tokens on unsafe requests; give responses the default headers."""
    # Flask-WTF's own hook looks up the view's exemptions before it looks at the method, on every GET too;
    # the portal exempts nothing, so it asks for the check on unsafe methods only.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf = CSRFProtect()

    # Registered before csrf.init_app adds Flask-WTF's own hook: one hook for both checks, the Host first.
    @app.before_request
    def check_request() -> None:
        # Flask raises a Host outside TRUSTED_HOSTS only when it dispatches: no other hook may run first.
        if isinstance(request.routing_exception, SecurityError):
            raise request.routing_exception
        # Flask-WTF's list of methods that must carry a token: POST, PUT, PATCH and DELETE unless configured.
        unsafe = request.method in app.config["WTF_CSRF_METHODS"]
        # No endpoint: the URL or method matched no view, and the 404 or 405 says more than a CSRF error.
        # A session the store failed to load holds no token: auth.load_session's 503 says more, too.
        if unsafe and request.endpoint and not isinstance(session, NullSession):
            try:
                csrf.protect()
            except ValueError:
                # Flask-WTF's https check parses the Referer, and a malformed port raises.
                raise CSRFError("The referrer header is malformed.") from None

    csrf.init_app(app)

    # Flask-WTF signs the session's token again for every page (a timestamp and an HMAC), about a third of
    # rendering the home page. Each worker keeps the signed form a few minutes: it stays the same token
    # for the same session, valid WTF_CSRF_TIME_LIMIT from when it was signed.
    signed: dict[str, tuple[str, float]] = {}
    signed_lock = threading.Lock()

    def csrf_token() -> str:
        raw = session.get("csrf_token")
        kept = signed.get(raw) if isinstance(raw, str) else None
        if kept is not None and time.monotonic() - kept[1] < CSRF_RESIGN_AFTER:
            return kept[0]
        token = str(generate_csrf())
        with signed_lock:
            if len(signed) >= MAX_SIGNED_TOKENS:
                del signed[next(iter(signed))]
            signed[session["csrf_token"]] = (token, time.monotonic())
        return token

    # Flask-WTF offers its csrf_token() to templates through a context processor: a later one replaces it.
    app.context_processor(lambda: {"csrf_token": csrf_token})

    images = " ".join([CSP["img-src"], *app.config["MEDIAFLOW_PREVIEW_ORIGINS"]])
    headers = HEADERS | {"Content-Security-Policy": "; ".join(
        f"{name} {images if name == 'img-src' else value}" for name, value in CSP.items())}

    app.wsgi_app = DefaultHeaders(app.wsgi_app, headers, app.config["GATE_AUTH_PATH"])  # type: ignore[method-assign]
