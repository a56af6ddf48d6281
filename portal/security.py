"""Response headers from RFC 9700 and OWASP: a strict CSP, no sniffing, no Referer, no caching."""

from __future__ import annotations

from flask import Flask, Response, request

# Plain lines rather than Flask-Talisman: the portal needs a few fixed headers, and Talisman's other
# jobs (forcing HTTPS, HSTS) belong to the TLS-terminating proxy in front of it.
HEADERS = [
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
     "object-src 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    # The callback URL carries the code: never send it on in a Referer.
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
]
# Pages depend on the session: no browser or proxy may keep them (Back after logout shows nothing).
NOT_STORED = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]


def init_app(app: Flask) -> None:
    @app.after_request
    def secure_headers(response: Response) -> Response:
        # extend, not update: no view sets these, and appending skips a search per header on every response.
        response.headers.extend(HEADERS if request.endpoint == "static" else HEADERS + NOT_STORED)
        return response
