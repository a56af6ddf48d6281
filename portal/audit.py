"""The audit trail: one log event per security-relevant act, on the portal.audit logger.

Each event is one line: with LOG_FORMAT=json an object with "event", its fields and the request id,
in text `<event> key=value …`. Fields are ids, fixed words and the client's address as the trusted
proxies forward it (request.remote_addr behind ProxyFix): never a token, code, secret, cookie or e-mail.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from flask import has_request_context, request

log = logging.getLogger(__name__)

# Long enough for any id Mediaflow gives; short enough that no /me answer can flood the log.
MAX_VALUE_LENGTH = 128


def login(outcome: str, user: Mapping[str, Any] | None = None, refusal: str | None = None) -> None:
    """A login came back to /callback: outcome is one of metrics.LOGIN_OUTCOMES; refusal says which allow-list."""
    _event("login", outcome=outcome, **_who(user), **({"refusal": refusal} if refusal else {}))


def logout(user: Mapping[str, Any] | None) -> None:
    """Someone logged out."""
    _event("logout", **_who(user))


def session_ended(reason: str, cause: str, user: Mapping[str, Any] | None, refusal: str | None = None) -> None:
    """The portal ended a session: reason timeout, mediaflow or refused; cause says what exactly."""
    _event("session_ended", reason=reason, cause=cause, **_who(user), **({"refusal": refusal} if refusal else {}))


def _who(user: Mapping[str, Any] | None) -> dict[str, Any]:
    user = user or {}
    return {"user_id": _value(user.get("id")), "customer_id": _value(user.get("customerId")),
            "client_ip": request.remote_addr if has_request_context() else None}


def _value(value: Any) -> str | int | None:
    """An id from /me as a log field: a number or short printable text, else nothing."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, int):
        return value
    return "".join(c for c in value if c.isprintable())[:MAX_VALUE_LENGTH]


def _event(event: str, **fields: Any) -> None:
    fields = {"event": event, **fields}
    text = " ".join(f"{name}={_shown(value)}" for name, value in fields.items() if name != "event")
    log.info("%s %s", event, text, extra={"fields": fields})


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or any(c in text for c in ' "=') else text
