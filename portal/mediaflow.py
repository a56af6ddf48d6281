"""Mediaflow's OAuth 2.0 server through Authlib's Flask client: the token endpoint's three grants, with timeouts.

The REST API (GET /me and the media library) is portal/api.py."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, current_app

from . import metrics

log = logging.getLogger(__name__)

# Error codes after which the grant can never work again (RFC 6749 §5.2).
FINAL_ERRORS = {"invalid_grant", "invalid_client"}


class MediaflowError(Exception):
    """Base for every failure talking to Mediaflow; messages never hold a token or secret."""


class MediaflowUnavailable(MediaflowError):
    """Mediaflow did not answer in time, or answered with a server error or garbage."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class MediaflowRefused(MediaflowError):
    """Mediaflow answered with an OAuth error (RFC 6749 §5.2) or an API error body."""

    error: str
    description: str = ""
    status: int = 400

    def __str__(self) -> str:
        return f"Mediaflow refused the request: {self.error}"

    @property
    def is_final(self) -> bool:
        return self.error in FINAL_ERRORS


class StateMismatch(MediaflowError):
    """The callback's state is missing, unknown, expired or already used."""


def init_app(app: Flask, cache: Any = None) -> None:
    """Register Mediaflow with Authlib's Flask client for this app.

    cache: where Authlib keeps a login's state data instead of the session (OAuth(app, cache=…)).
    """
    oauth = OAuth(app, cache=cache)
    client_kwargs: dict[str, Any] = {
        "token_endpoint_auth_method": "client_secret_post",
        "default_timeout": (app.config["MEDIAFLOW_CONNECT_TIMEOUT"], app.config["MEDIAFLOW_READ_TIMEOUT"]),
    }
    if app.config.get("MEDIAFLOW_SCOPE"):
        client_kwargs["scope"] = app.config["MEDIAFLOW_SCOPE"]
    if app.config["MEDIAFLOW_PKCE"]:
        client_kwargs["code_challenge_method"] = "S256"
    oauth.register(
        "mediaflow",
        client_id=app.config["MEDIAFLOW_CLIENT_ID"],
        client_secret=app.config["MEDIAFLOW_CLIENT_SECRET"],
        authorize_url=app.config["MEDIAFLOW_AUTHORIZE_URL"],
        access_token_url=app.config["MEDIAFLOW_TOKEN_URL"],
        client_kwargs=client_kwargs,
        compliance_fix=_measure_token_calls,
    )


def _measure_token_calls(session: Any) -> None:
    """Count every answer of the token endpoint, with its time, through Authlib's documented compliance hook."""

    def measured(response: requests.Response) -> requests.Response:
        metrics.current().mediaflow_call("token", response.status_code, response.elapsed.total_seconds())
        return response

    session.register_compliance_hook("access_token_response", measured)


def client() -> Any:
    return current_app.extensions["authlib.integrations.flask_client"].mediaflow


def exchange_code() -> dict[str, Any]:
    """Check the callback's state and trade its code for tokens (grant_type=authorization_code)."""
    return _token_call(client().authorize_access_token)


def refresh(refresh_token: str) -> dict[str, Any]:
    """Trade a refresh token for a new token set (grant_type=refresh_token)."""
    return _token_call(client().fetch_access_token, grant_type="refresh_token", refresh_token=refresh_token)


def password_grant(username: str, password: str, state: str | None = None) -> dict[str, Any]:
    """Trade a user's credentials for tokens (grant_type=password); for trusted scripts only."""
    # Authlib's fetch_token keeps `state` for itself, so it travels in the body as Mediaflow expects.
    extra = {"body": urlencode({"state": state})} if state else {}
    token = _token_call(client().fetch_access_token, grant_type="password", username=username,
                        password=password, **extra)
    if state and token.get("state") != state:
        raise MediaflowUnavailable("Mediaflow's answer did not echo the state that was sent", status=502)
    return token


def _token_call(call: Any, **kwargs: Any) -> dict[str, Any]:
    """Run one token request and turn every failure into a MediaflowError without secrets."""
    started = time.perf_counter()
    try:
        token = call(**kwargs)
    except MismatchingStateError:
        raise StateMismatch("The login state is missing, expired or already used") from None
    except OAuthError as error:
        raise MediaflowRefused(str(error.error or "error"), str(error.description or "")) from None
    except requests.Timeout:
        # No answer, so no compliance hook ran: counted here.
        metrics.current().mediaflow_call("token", "timeout", time.perf_counter() - started)
        raise MediaflowUnavailable("Mediaflow's token endpoint did not answer in time") from None
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else 0
        raise MediaflowUnavailable(f"Mediaflow's token endpoint answered HTTP {status}", 502) from None
    except requests.RequestException:
        metrics.current().mediaflow_call("token", "unreachable", time.perf_counter() - started)
        raise MediaflowUnavailable("Mediaflow's token endpoint cannot be reached") from None
    except ValueError:
        raise MediaflowUnavailable("Mediaflow's token endpoint answered without JSON", 502) from None
    return checked_token(dict(token))


def checked_token(token: dict[str, Any]) -> dict[str, Any]:
    """Accept only the documented response shape; anything else is garbage (502)."""
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise MediaflowUnavailable("Mediaflow's token response has no access_token", 502)
    if str(token.get("token_type", "Bearer")).lower() != "bearer":
        raise MediaflowUnavailable("Mediaflow's token response is not a Bearer token", 502)
    try:
        expires_in = int(token.get("expires_in", 3600))
    except (TypeError, ValueError):
        raise MediaflowUnavailable("Mediaflow's token response has an unusable expires_in", 502) from None
    if expires_in <= 0:
        raise MediaflowUnavailable("Mediaflow's token response has an unusable expires_in", 502)
    token["expires_in"] = expires_in
    refresh_token = token.get("refresh_token")
    token["refresh_token"] = refresh_token if isinstance(refresh_token, str) and refresh_token else None
    return token
