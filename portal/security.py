"""CSRF checks; headers from RFC 9700 and OWASP: a strict CSP, no sniffing, no Referer off-site, no caching."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from flask import Flask, request
from flask_wtf.csrf import CSRFProtect

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# Plain lines rather than Flask-Talisman: the portal needs a few fixed headers, and Talisman's other
# jobs (forcing HTTPS, HSTS) belong to the TLS-terminating proxy in front of it.
HEADERS = [
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
     "object-src 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    # Never a Referer (the callback's code) to other sites; same-origin POSTs keep theirs for Flask-WTF's https check.
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
]
# Pages depend on the session: no browser or proxy may keep them (Back after logout shows nothing).
# No "Pragma: no-cache" beside it: RFC 9111 (5.4) deprecates Pragma and never gave it a meaning in responses.
NOT_STORED = [("Cache-Control", "no-store")]


class SecureHeaders:
    """WSGI middleware that appends the fixed headers to every response, error pages included.

    Done below Flask rather than in an after_request hook: Flask's Response checks and copies each
    header it holds twice per response, and these are constants that no view sets.
    """

    def __init__(self, app: WSGIApplication, static_path: str) -> None:
        self.app = app
        self.static_path = static_path
        self.page_headers = HEADERS + NOT_STORED

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        extra = HEADERS if environ.get("PATH_INFO", "").startswith(self.static_path) else self.page_headers

        def start(status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
                  ) -> Callable[[bytes], object]:
            headers.extend(extra)
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def init_app(app: Flask) -> None:
    """Check the CSRF token of every unsafe request; add the headers to every response."""
    # Flask-WTF's own hook looks up the view's exemptions before it looks at the method, on every GET too;
    # the portal exempts nothing, so it asks for the check on unsafe methods only.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf = CSRFProtect(app)
    # Flask-WTF's list of methods that must carry a token: POST, PUT, PATCH and DELETE unless configured.
    checked_methods = app.config["WTF_CSRF_METHODS"]

    @app.before_request
    def check_csrf() -> None:
        # No endpoint: the URL or method matched no view, and the 404 or 405 says more than a CSRF error.
        if request.method in checked_methods and request.endpoint:
            csrf.protect()

    app.wsgi_app = SecureHeaders(app.wsgi_app, f"{app.static_url_path}/")  # type: ignore[method-assign]
