"""Every error page: its status, its words, and that it extends base.html and never shows a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from tests.support import Emulator, free_port, portal_login, query_of, sign_in


def started_callback(client: Any) -> tuple[str, str]:
    """Start a login and sign in on the emulator; return the callback's code and state."""
    answer = sign_in(client.get("/login").headers["Location"])
    params = query_of(answer.headers["Location"])
    return params["code"], params["state"]


def assert_page(response: Any, status: int, *phrases: str) -> None:
    assert response.status_code == status
    text = response.text
    assert "<title>" in text and "Mediaflow Portal" in text and "<footer" in text
    assert "Traceback" not in text
    for phrase in phrases:
        assert phrase in text, phrase


@pytest.mark.parametrize(
    ("query", "phrase"),
    [("code=abc&state=never-issued", "This login could not be checked"),
     ("code=abc", "This login could not be checked"),
     ("", "This login could not be checked"),
     ("state=" + "x" * 5000 + "&code=c", "This login could not be checked")],
    ids=["unknown-state", "missing-state", "nothing", "huge-state"],
)
def test_callback_without_a_matching_state_is_400_with_start_again(client: Any, query: str, phrase: str) -> None:
    assert_page(client.get(f"/callback?{query}"), 400, phrase, "Start again")


def test_callback_without_a_code_is_400(client: Any) -> None:
    _, state = started_callback(client)
    assert_page(client.get(f"/callback?state={state}"), 400, "Mediaflow could not log you in", "Start again")


def test_replayed_callback_is_400_and_keeps_the_session(client: Any) -> None:
    code, state = started_callback(client)
    assert client.get(f"/callback?code={code}&state={state}").status_code == 302
    assert_page(client.get(f"/callback?code={code}&state={state}"), 400, "This login could not be checked")
    assert client.get("/session").status_code == 200


def test_denied_login_says_so(client: Any) -> None:
    login = client.get("/login")
    answer = sign_in(login.headers["Location"], action="deny")
    path = answer.headers["Location"].split("localhost", 1)[1]
    assert_page(client.get(path), 400, "You did not allow the login", "Start again")


def test_provider_error_description_is_escaped_and_cut_short(client: Any) -> None:
    state = query_of(client.get("/login").headers["Location"])["state"]
    description = "<script>alert(1)</script>" + "x" * 1000
    response = client.get(f"/callback?state={state}&error=server_error&error_description={description}")
    assert_page(response, 400, "server_error", "&lt;script&gt;alert(1)&lt;/script&gt;" + "x" * 175)
    assert "<script>" not in response.text and "x" * 176 not in response.text


@pytest.mark.parametrize("state", ["", "state=never-issued&"], ids=["no-state", "unknown-state"])
def test_provider_error_text_without_a_state_this_browser_started_is_not_shown(client: Any, state: str) -> None:
    client.get("/login")
    response = client.get(f"/callback?{state}error=server_error&error_description=Call+0800+to+fix+your+login")
    assert_page(response, 400, "This login could not be checked", "Start again")
    assert "0800" not in response.text and "server_error" not in response.text


def test_unknown_page_is_a_404_page(client: Any) -> None:
    assert_page(client.get("/no/such/page"), 404, "Page not found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("GET", "/logout", {"POST", "OPTIONS"}),
     ("DELETE", "/logout", {"POST", "OPTIONS"}),
     ("POST", "/callback", {"GET", "HEAD", "OPTIONS"}),
     ("PUT", "/", {"GET", "HEAD", "OPTIONS"})],
    ids=["get-logout", "delete-logout", "post-callback", "put-index"],
)
def test_wrong_method_is_a_405_page_that_says_which_methods_are_allowed(client: Any, method: str, path: str,
                                                                        allowed: set[str]) -> None:
    response = client.open(path, method=method)
    assert_page(response, 405, "Method Not Allowed")
    # RFC 9110 15.5.6: a 405 MUST carry Allow, once.
    assert len(response.headers.getlist("Allow")) == 1
    assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed
    assert response.mimetype == "text/html"


def test_unexpected_exception_is_a_500_page_without_details(app: Flask) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def broken() -> str:
        raise RuntimeError("internal detail that must not show")

    app.add_url_rule("/broken", view_func=broken)
    response = app.test_client().get("/broken")
    assert_page(response, 500, "Something went wrong")
    assert "internal detail" not in response.text


@pytest.mark.parametrize(
    ("fault", "status", "phrase"),
    [({"kind": "garbage"}, 502, "could not understand"),
     ({"kind": "status", "status": 500}, 502, "could not understand"),
     ({"kind": "status", "status": 503}, 502, "could not understand"),
     ({"kind": "delay", "delay": 2.0}, 503, "could not be reached in time"),
     ({"kind": "drop"}, 503, "could not be reached in time")],
    ids=["garbage", "500", "503", "timeout", "dropped"],
)
def test_mediaflow_failing_during_the_callback_shows_502_or_503_then_start_again_works(
    make_app: Callable[..., Flask], emulator: Emulator, fault: dict[str, Any], status: int, phrase: str
) -> None:
    client = make_app(MEDIAFLOW_READ_TIMEOUT=0.5).test_client()
    code, state = started_callback(client)
    emulator.fault(endpoint="token", **fault)
    response = client.get(f"/callback?code={code}&state={state}")
    assert_page(response, status, "Mediaflow is not answering right now", phrase, "Start again")
    assert portal_login(client).headers["Location"] == "/"


def test_mediaflow_unreachable_at_login_is_503(make_app: Callable[..., Flask]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    client = make_app(MEDIAFLOW_TOKEN_URL=f"{closed}/token").test_client()
    code, state = started_callback(client)
    assert_page(client.get(f"/callback?code={code}&state={state}"), 503, "could not be reached")
