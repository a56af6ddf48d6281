"""Logging: one line per event on stdout, a request id on each, JSON on demand, secrets redacted; gunicorn's too."""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, has_request_context, request

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # used with fullmatch: "$" would let a final "\n" in
# Where RequestIds leaves the id for the log lines of the request.
ENVIRON_KEY = "portal.request_id"

# Values after these names are secrets wherever they show up: query strings, form bodies, JSON, headers.
REDACTED_FIELDS = r"(?:access_token|refresh_token|id_token|code|code_verifier|client_secret|password|state)"
PATTERNS = [
    (re.compile(rf"(?i)(\b{REDACTED_FIELDS}=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(rf"(?i)(\"{REDACTED_FIELDS}\"\s*:\s*\")[^\"]*"), r"\1[redacted]"),
    (re.compile(rf"(?i)('{REDACTED_FIELDS}'\s*:\s*')[^']*"), r"\1[redacted]"),
    # Debug lines such as Authlib's "Using code_verifier: '…'".
    (re.compile(rf"(?i)(\b{REDACTED_FIELDS}:\s*'?)[^'\s,]+"), r"\1[redacted]"),
    (re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
]


# Control characters (Unicode's Cc) from a request: a line break would forge a second line, and ESC, BEL or
# backspace would drive the terminal of whoever reads the log with tail or less -R.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
ESCAPES = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}
# The colours Werkzeug's development server gives its own lines (it escapes control characters of a request itself).
WERKZEUG_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def escape_controls(text: str) -> str:
    """text with each control character written out: \\n, \\r, \\t, else \\x1b and the like."""
    return CONTROL.sub(lambda found: ESCAPES.get(found[0]) or f"\\x{ord(found[0]):02x}", text)


# A known secret shorter than this is not searched for, by the app's log and gunicorn's alike: it would cut ordinary
# words apart in every line, a refusal to start included. PATTERNS still catch it by name (client_secret=…), and a
# SECRET_KEY under 32 bytes is refused.
SHORTEST_KNOWN_SECRET = 8


def redact(text: str, known: tuple[str, ...] = ()) -> str:
    """Remove secret values from a log text: known ones verbatim, others by the name they follow."""
    for value in known:
        if len(value) >= SHORTEST_KNOWN_SECRET:
            text = text.replace(value, "[redacted]")
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrite each record so no token, code, password or client secret leaves the process."""

    def __init__(self, known: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.known = known

    def filter(self, record: logging.LogRecord) -> bool:
        # gunicorn's access lines are logged after the request, with its atoms as the arguments: the id is there.
        # Taken now, as record.args is cleared below.
        atoms = record.args if record.name == "gunicorn.access" and isinstance(record.args, Mapping) else None
        message = record.getMessage()
        if record.name == "werkzeug":
            message = WERKZEUG_COLOURS.sub("", message)
        # Written out before redaction: the patterns end a value at whitespace, which \x1c-\x1f and \x85 are.
        record.msg = redact(escape_controls(message), self.known)
        record.args = None
        if record.exc_info:
            # Keep the exception's type, drop its text and traceback: both can carry request data.
            record.msg += f" ({record.exc_info[0].__name__ if record.exc_info[0] else 'error'})"
            record.exc_info = None
            record.exc_text = None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            # An event's own fields (portal/audit.py) go into JSON lines as they are: redacted as the message is.
            record.fields = {name: redact(value, self.known) if isinstance(value, str) else value
                             for name, value in fields.items()}
        if has_request_context():
            record.request_id = request.environ.get(ENVIRON_KEY, "-")
        else:
            # The portal's own X-Request-ID on the response, as gunicorn's atoms name it ("-" when there is none).
            # get, not []: only gunicorn's own atoms answer "-" for a missing key, and a filter must never raise.
            sent = atoms.get("{x-request-id}o", "-") if atoms is not None else "-"
            record.request_id = sent if isinstance(sent, str) and REQUEST_ID.fullmatch(sent) else "-"
        return True


class RequestIds:
    """WSGI middleware: take a trusted proxy's X-Request-ID (or make one), and send it back on the response."""

    def __init__(self, app: WSGIApplication, trust_incoming: bool) -> None:
        self.app = app
        # Without a proxy in front, anyone could choose the id their requests are logged under.
        self.trust_incoming = trust_incoming

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        incoming = environ.get("HTTP_X_REQUEST_ID", "") if self.trust_incoming else ""
        # An id only correlates log lines; it need not be unpredictable, and random.getrandbits makes no
        # system call (secrets would read the OS random source on every request).
        request_id = incoming if REQUEST_ID.fullmatch(incoming) else f"{random.getrandbits(64):016x}"
        environ[ENVIRON_KEY] = request_id

        def start(status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
                  ) -> Callable[[bytes], object]:
            headers.append(("X-Request-ID", request_id))
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        # An event's fields (portal/audit.py: "event", "outcome", …) after these; none may replace them.
        fields = getattr(record, "fields", None) or {}
        return json.dumps(line | {name: value for name, value in fields.items() if name not in line})


def init_app(app: Flask) -> None:
    """Send the portal's logs to stdout through the redacting filter; tag requests with an id."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(RedactingFilter((app.config["MEDIAFLOW_CLIENT_SECRET"], app.config["SECRET_KEY"])))
    if app.config["LOG_FORMAT"] == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    for name in ("portal", "werkzeug", "flask_session", "authlib", app.name):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    app.logger.handlers = [handler]
    behind_proxy = app.config["TRUSTED_PROXY_COUNT"] > 0
    app.wsgi_app = RequestIds(app.wsgi_app, trust_incoming=behind_proxy)  # type: ignore[method-assign]


def gunicorn_logging(json_lines: bool, known: tuple[str, ...] = ()) -> dict[str, Any]:
    """gunicorn's logconfig_dict (gunicorn.conf.py): its error log on stderr, its access log on stdout, as JSON
    lines with json_lines, through the redacting filter; any other library's lines (the root logger) likewise."""
    if json_lines:
        error_format: dict[str, Any] = {"()": JsonFormatter}
        access_format: dict[str, Any] = {"()": JsonFormatter}
    else:
        # gunicorn's own text formats.
        error_format = {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                        "datefmt": "[%Y-%m-%d %H:%M:%S %z]"}
        access_format = {"format": "%(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        # The same known values as the app's filter (init_app), short ones skipped alike (redact).
        "filters": {"redact": {"()": RedactingFilter, "known": known}},
        "formatters": {"error": error_format, "access": access_format},
        "handlers": {
            "error": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "error",
                      "filters": ["redact"]},
            "access": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "access",
                       "filters": ["redact"]},
        },
        "loggers": {
            # No level: gunicorn's loglevel (--log-level) applies, which it sets before it reads this.
            "gunicorn.error": {"handlers": ["error"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
        "root": {"level": "WARNING", "handlers": ["error"]},
    }
