"""GET/POST /authorize: the login page, its refusals and its redirects (RFC 6749 §4.1.2)."""

from __future__ import annotations

import pytest
import requests

from tests.emulator.conftest import CALLBACK
from tests.support import Emulator, authorize_url, query_of, sign_in


def test_login_page_is_labelled_as_the_emulator_and_lists_demo_accounts(emulator: Emulator) -> None:
    page = requests.get(authorize_url(emulator, "portal-test", CALLBACK, state="x"), timeout=5)
    assert page.status_code == 200
    assert "Local Mediaflow emulator" in page.text
    assert "<td>demo</td>" in page.text and "<td>editor</td>" in page.text


@pytest.mark.parametrize("state", ["plain", "with spaces & symbols=/?#", "ünïcödé-✓", "x" * 200])
def test_sign_in_redirects_with_a_code_and_the_state_echoed_exactly(emulator: Emulator, state: str) -> None:
    answer = sign_in(authorize_url(emulator, "portal-test", CALLBACK, state=state))
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(CALLBACK + "?")
    params = query_of(location)
    assert params["state"] == state
    assert len(params["code"]) >= 32


def test_deny_redirects_with_access_denied_and_the_state(emulator: Emulator) -> None:
    answer = sign_in(authorize_url(emulator, "portal-test", CALLBACK, state="abc"), action="deny")
    assert answer.status_code == 302
    params = query_of(answer.headers["Location"])
    assert (params["error"], params["state"]) == ("access_denied", "abc")
    assert "code" not in params


@pytest.mark.parametrize(("username", "password"), [("demo", "wrong"), ("nobody", "demo"), ("", "")])
def test_wrong_credentials_show_the_form_again_with_an_error_only(emulator: Emulator, username: str,
                                                                   password: str) -> None:
    answer = sign_in(authorize_url(emulator, "portal-test", CALLBACK, state="s"), username, password)
    assert answer.status_code == 401
    assert "Location" not in answer.headers
    assert "Wrong username or password." in answer.text
    assert '<form method="post"' in answer.text


@pytest.mark.parametrize("response_type", ["token", "id_token", "code token", "CODE"])
def test_other_response_types_redirect_back_with_unsupported_response_type(emulator: Emulator,
                                                                          response_type: str) -> None:
    url = authorize_url(emulator, "portal-test", CALLBACK, state="st", response_type=response_type)
    answer = requests.get(url, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    params = query_of(answer.headers["Location"])
    assert params["error"] == "unsupported_response_type"
    assert params["state"] == "st"


@pytest.mark.parametrize(
    "query",
    [
        {"response_type": "code", "redirect_uri": CALLBACK},
        {"response_type": "code", "client_id": "unknown", "redirect_uri": CALLBACK},
        {"response_type": "code", "client_id": "portal-test", "redirect_uri": "https://evil.example/callback"},
        {"response_type": "code", "client_id": "portal-test", "redirect_uri": CALLBACK + "/extra"},
        {"response_type": "code", "client_id": "portal-test", "redirect_uri": CALLBACK.upper()},
        {"response_type": "token", "client_id": "portal-test", "redirect_uri": "https://evil.example/callback"},
        {"response_type": "token", "client_id": "unknown", "redirect_uri": CALLBACK},
    ],
    ids=["no-client", "unknown-client", "foreign-uri", "longer-uri", "case-changed-uri",
         "bad-type-foreign-uri", "bad-type-unknown-client"],
)
def test_unknown_client_or_redirect_uri_shows_an_error_page_and_never_redirects(emulator: Emulator,
                                                                                query: dict[str, str]) -> None:
    for method in ("GET", "POST"):
        answer = requests.request(method, f"{emulator.url}/authorize", params=query, allow_redirects=False,
                                  data={"username": "demo", "password": "demo"}, timeout=5)
        assert answer.status_code == 400
        assert "Location" not in answer.headers
        assert "cannot be used" in answer.text


def test_emulator_never_sets_a_cookie_the_portal_could_lose(emulator: Emulator) -> None:
    # Cookies ignore ports: a "session" or "mediaflow_portal" cookie from 127.0.0.1:5001 would replace the portal's.
    url = authorize_url(emulator, "portal-test", CALLBACK, state="s")
    for response in (requests.get(url, timeout=5), sign_in(url), sign_in(url, password="wrong")):
        cookie = response.headers.get("Set-Cookie", "")
        assert not cookie.startswith(("session=", "mediaflow_portal=")), cookie
