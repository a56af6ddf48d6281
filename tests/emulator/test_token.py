"""POST /1/oauth2/token: the three grants, client settings, rotation and every error (RFC 6749 §5)."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.emulator.conftest import CALLBACK
from tests.support import Emulator, authorize_url, client_settings, query_of, sign_in, start_emulator, stop

Exchange = Callable[..., dict[str, Any]]


def me(emulator: Emulator, access_token: str) -> requests.Response:
    return requests.get(f"{emulator.url}/1/me", headers={"Authorization": f"Bearer {access_token}"}, timeout=5)


def refresh(emulator: Emulator, client_id: str, refresh_token: str) -> requests.Response:
    return emulator.token(grant_type="refresh_token", refresh_token=refresh_token, client_id=client_id,
                          client_secret=emulator.secret(client_id))


def test_code_exchange_returns_exactly_the_documented_shape(exchange: Exchange) -> None:
    token = exchange()
    assert set(token) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600


def test_state_sent_to_the_token_endpoint_is_echoed(emulator: Emulator, get_code: Callable[..., str]) -> None:
    response = emulator.token(grant_type="authorization_code", code=get_code(), redirect_uri=CALLBACK,
                              client_id="portal-test", client_secret=emulator.secret("portal-test"), state="echo-me")
    assert response.json()["state"] == "echo-me"


def test_http_basic_client_authentication_is_accepted(emulator: Emulator, get_code: Callable[..., str]) -> None:
    response = requests.post(f"{emulator.url}/1/oauth2/token", timeout=5,
                             auth=("portal-test", emulator.secret("portal-test")),
                             data={"grant_type": "authorization_code", "code": get_code(), "redirect_uri": CALLBACK})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("client_id", "expected"),
    [("portal-test", {"expires_in": 3600, "refresh": True}),
     ("short", {"expires_in": 4, "refresh": True}),
     ("no-refresh", {"expires_in": 4, "refresh": False})],
)
def test_each_client_gets_its_own_lifetime_and_refresh_token_setting(exchange: Exchange, client_id: str,
                                                                     expected: dict[str, Any]) -> None:
    token = exchange(client_id)
    assert token["expires_in"] == expected["expires_in"]
    assert ("refresh_token" in token) is expected["refresh"]


@pytest.mark.parametrize(("client_id", "first", "refreshed"), [("short", 4, 4), ("rotating-once", 4, 3600)])
def test_refreshed_tokens_live_refreshed_expires_in_when_set(exchange: Exchange, emulator: Emulator, client_id: str,
                                                             first: int, refreshed: int) -> None:
    token = exchange(client_id)
    again = emulator.token(grant_type="refresh_token", refresh_token=str(token["refresh_token"]),
                           client_id=client_id, client_secret=emulator.secret(client_id)).json()
    assert (token["expires_in"], again["expires_in"]) == (first, refreshed)


@pytest.mark.parametrize("with_state", [False, True])
def test_password_grant_issues_tokens_for_allowed_clients(emulator: Emulator, with_state: bool) -> None:
    form = {"grant_type": "password", "username": "editor", "password": "editor", "client_id": "portal-test",
            "client_secret": emulator.secret("portal-test")}
    if with_state:
        form["state"] = "st-1"
    token = emulator.token(**form).json()
    assert token["token_type"] == "Bearer" and token["refresh_token"]
    assert token.get("state") == ("st-1" if with_state else None)
    assert me(emulator, token["access_token"]).json()[0]["username"] == "editor"


def test_refresh_without_rotation_omits_the_refresh_token_and_keeps_the_old_one_valid(emulator: Emulator,
                                                                                       exchange: Exchange) -> None:
    first = exchange("short")
    for _ in range(2):
        response = refresh(emulator, "short", first["refresh_token"])
        assert response.status_code == 200
        assert "refresh_token" not in response.json()
        assert me(emulator, response.json()["access_token"]).status_code == 200


def test_refresh_can_answer_with_an_empty_refresh_token(emulator: Emulator, exchange: Exchange) -> None:
    first = exchange("empty-refresh")
    response = refresh(emulator, "empty-refresh", first["refresh_token"])
    assert response.json()["refresh_token"] == ""
    assert refresh(emulator, "empty-refresh", first["refresh_token"]).status_code == 200


def test_rotation_issues_a_new_refresh_token_and_reuse_revokes_the_family(emulator: Emulator,
                                                                          exchange: Exchange) -> None:
    first = exchange("rotating")
    second = refresh(emulator, "rotating", first["refresh_token"]).json()
    assert second["refresh_token"] and second["refresh_token"] != first["refresh_token"]
    assert me(emulator, second["access_token"]).status_code == 200

    reuse = refresh(emulator, "rotating", first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    # RFC 9700 §4.14.2: the whole family is gone, including the newest tokens.
    assert refresh(emulator, "rotating", second["refresh_token"]).json()["error"] == "invalid_grant"
    assert me(emulator, second["access_token"]).status_code == 401
    assert emulator.stats()["reuse_detected"] == 1


def test_replayed_code_is_refused_and_revokes_the_tokens_it_issued(emulator: Emulator,
                                                                   get_code: Callable[..., str]) -> None:
    code = get_code()
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, "client_id": "portal-test",
            "client_secret": emulator.secret("portal-test")}
    token = emulator.token(**form).json()
    replay = emulator.token(**form)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert me(emulator, token["access_token"]).status_code == 401


def _code_form(emulator: Emulator, issued_code: str, **changes: str) -> dict[str, str]:
    form = {"grant_type": "authorization_code", "code": issued_code, "redirect_uri": CALLBACK,
            "client_id": "portal-test", "client_secret": emulator.secret("portal-test")}
    if "client_id" in changes and changes["client_id"] in emulator.clients:
        form["client_secret"] = emulator.secret(changes["client_id"])
    form.update(changes)
    if form.get("client_id") not in emulator.clients and "client_secret" in form:
        form["client_secret"] = "some-secret"
    return {k: v for k, v in form.items() if v != "<omit>"}


CODE_ERRORS = [
    ("wrong-secret", {"client_secret": "wrong"}, 401, "invalid_client"),
    ("unknown-client", {"client_id": "nobody"}, 401, "invalid_client"),
    ("no-client-auth", {"client_id": "<omit>", "client_secret": "<omit>"}, 401, "invalid_client"),
    ("missing-secret", {"client_secret": "<omit>"}, 401, "invalid_client"),
    ("different-redirect-uri", {"redirect_uri": "http://127.0.0.1/other"}, 400, "invalid_grant"),
    ("missing-redirect-uri", {"redirect_uri": "<omit>"}, 400, "invalid_grant"),
    ("unknown-code", {"code": "not-a-code"}, 400, "invalid_grant"),
    ("missing-code", {"code": "<omit>"}, 400, "invalid_request"),
    ("missing-grant-type", {"grant_type": "<omit>"}, 400, "unsupported_grant_type"),
    ("unknown-grant-type", {"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
]


@pytest.mark.parametrize(("changes", "status", "error"), [c[1:] for c in CODE_ERRORS], ids=[c[0] for c in CODE_ERRORS])
def test_code_exchange_errors(emulator: Emulator, get_code: Callable[..., str], changes: dict[str, str],
                              status: int, error: str) -> None:
    response = emulator.token(**_code_form(emulator, get_code(), **changes))
    assert response.status_code == status
    assert response.json()["error"] == error
    assert "access_token" not in response.json()


def test_another_clients_code_is_invalid_grant(emulator: Emulator, get_code: Callable[..., str]) -> None:
    response = emulator.token(**_code_form(emulator, get_code("portal-test"), client_id="short"))
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


def test_a_code_is_spent_even_when_its_first_use_fails(emulator: Emulator, get_code: Callable[..., str]) -> None:
    code = get_code()
    assert emulator.token(**_code_form(emulator, code, redirect_uri="http://127.0.0.1/x")).status_code == 400
    assert emulator.token(**_code_form(emulator, code)).json()["error"] == "invalid_grant"


def test_expired_code_is_invalid_grant(tmp_path: Path) -> None:
    quick = start_emulator(tmp_path, [client_settings("c", redirect_uris=[CALLBACK])], code_lifetime=1)
    try:
        answer = sign_in(authorize_url(quick, "c", CALLBACK, state="s"))
        code = query_of(answer.headers["Location"])["code"]
        time.sleep(1.2)
        response = quick.token(grant_type="authorization_code", code=code, redirect_uri=CALLBACK, client_id="c",
                               client_secret=quick.secret("c"))
        assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
    finally:
        stop(quick.process)


OTHER_ERRORS = [
    ("wrong-password", {"grant_type": "password", "username": "demo", "password": "nope"}, "portal-test",
     400, "invalid_grant"),
    ("unknown-user", {"grant_type": "password", "username": "ghost", "password": "demo"}, "portal-test",
     400, "invalid_grant"),
    ("password-not-allowed", {"grant_type": "password", "username": "demo", "password": "demo"}, "code-only",
     400, "unauthorized_client"),
    ("password-missing-username", {"grant_type": "password", "password": "demo"}, "portal-test",
     400, "invalid_request"),
    ("refresh-unknown", {"grant_type": "refresh_token", "refresh_token": "nope"}, "short", 400, "invalid_grant"),
    ("refresh-missing", {"grant_type": "refresh_token"}, "short", 400, "invalid_request"),
    ("refresh-not-allowed", {"grant_type": "refresh_token", "refresh_token": "x"}, "no-refresh",
     400, "unauthorized_client"),
]


@pytest.mark.parametrize(("form", "client_id", "status", "error"), [c[1:] for c in OTHER_ERRORS],
                         ids=[c[0] for c in OTHER_ERRORS])
def test_password_and_refresh_errors(emulator: Emulator, form: dict[str, str], client_id: str, status: int,
                                     error: str) -> None:
    response = emulator.token(**form, client_id=client_id, client_secret=emulator.secret(client_id))
    assert (response.status_code, response.json()["error"]) == (status, error)


def test_refresh_token_of_another_client_is_invalid_grant(emulator: Emulator, exchange: Exchange) -> None:
    token = exchange("short")
    assert refresh(emulator, "rotating", token["refresh_token"]).json()["error"] == "invalid_grant"


def test_pkce_s256_is_checked(emulator: Emulator, get_code: Callable[..., str]) -> None:
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    code = get_code(code_challenge=challenge, code_challenge_method="S256")
    wrong = emulator.token(**_code_form(emulator, code, code_verifier="w" * 64))
    assert wrong.json()["error"] == "invalid_grant"
    code = get_code(code_challenge=challenge, code_challenge_method="S256")
    assert emulator.token(**_code_form(emulator, code, code_verifier=verifier)).status_code == 200
    code = get_code(code_challenge=challenge, code_challenge_method="S256")
    assert emulator.token(**_code_form(emulator, code)).json()["error"] == "invalid_request"


def test_stats_count_token_requests_per_grant_and_outcome(emulator: Emulator, exchange: Exchange) -> None:
    token = exchange("short")
    refresh(emulator, "short", token["refresh_token"])
    refresh(emulator, "short", "wrong")
    assert emulator.stats()["token"] == {
        "authorization_code": {"ok": 1, "failed": 0},
        "refresh_token": {"ok": 1, "failed": 1},
    }
