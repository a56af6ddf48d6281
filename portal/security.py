"""CSRF checks; headers from RFC 9700 and OWASP: a strict CSP, no sniffing, no Referer off-site, no caching."""

from __future__ import annotations

from flask import Flask, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Response

# Plain lines rather than Flask-Talisman: the portal needs a few fixed headers, and Talisman's other
# jobs (forcing HTTPS, HSTS) belong to the TLS-terminating proxy in front of it.
# Defaults for every response, error pages included: a view that sets one of these keeps its own.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
                               "object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    # Never a Referer (the callback's code) to other sites; same-origin POSTs keep theirs for Flask-WTF's https check.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    # Pages depend on the session: no browser or proxy may keep them (Back after logout shows nothing).
    # Static files set their own. No "Pragma": RFC 9111 (5.4) deprecates it and it means nothing in responses.
    "Cache-Control": "no-store",
}


def init_app(app: Flask) -> None:
    """Check the CSRF token of every unsafe request; give every response the default headers."""
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

    @app.after_request
    def default_headers(response: Response) -> Response:
        if request.endpoint == "gate.auth":
            # nginx keeps only its status and X-Auth-Request-* headers, on every request to an app: no page here.
            return response
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response
