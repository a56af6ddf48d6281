"""Hypothesis fuzzes /callback and /login?next=: never a 500, never an off-site redirect."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import query_of, sign_in

NAMES = st.sampled_from(["code", "state", "error", "error_description", "next", "x"])
TEXT = st.text(max_size=400)


@pytest.fixture
def fuzz_client(make_app: Callable[..., Flask]) -> Any:
    return make_app().test_client()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.lists(st.tuples(NAMES, TEXT), max_size=8), raw=st.binary(max_size=200))
def test_callback_never_fails_with_a_500(fuzz_client: Any, params: list[tuple[str, str]], raw: bytes) -> None:
    query = urlencode(params, errors="surrogatepass") + "&" + "".join(f"%{b:02x}" for b in raw)
    response = fuzz_client.get(f"/callback?{query}")
    assert response.status_code in (400, 405), response.status_code
    assert "Traceback" not in response.text


def landing_host(location: str) -> str:
    """The host a browser goes to for this Location from the callback, after the WHATWG URL parser's clean-up
    of http(s) URLs: C0 controls and spaces trimmed, tabs and newlines removed, backslashes read as slashes."""
    cleaned = re.sub(r"[\t\n\r]", "", location).strip("".join(map(chr, range(0x21)))).replace("\\", "/")
    return urlsplit(urljoin("http://localhost/callback", cleaned)).netloc


def landing_after_login(client: Any, next_url: str) -> str:
    """Log in with /login?next=next_url, as a person would; return the callback's Location."""
    login = client.get("/login?" + urlencode({"next": next_url}, errors="surrogatepass"))
    assert login.status_code == 302
    code, state = query_of(sign_in(login.headers["Location"]).headers["Location"]).values()
    landed = client.get(f"/callback?code={code}&state={state}")
    assert landed.status_code == 302
    return str(landed.headers["Location"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(next_url=st.one_of(TEXT, st.from_regex(r"\A[/\\]{0,3}[a-z:.%0-9@\\/]{0,40}\Z")))
def test_login_next_never_fails_and_never_leaves_the_site(fuzz_client: Any, next_url: str) -> None:
    location = landing_after_login(fuzz_client, next_url)
    assert landing_host(location) == "localhost", location


def test_a_fuzzed_login_still_completes(fuzz_client: Any) -> None:
    login = fuzz_client.get("/login?next=%2F%2F%5Cevil")
    code, state = query_of(sign_in(login.headers["Location"]).headers["Location"]).values()
    assert fuzz_client.get(f"/callback?code={code}&state={state}").headers["Location"] == "/"


APP_HOSTS = ["app.example.com", ".apps.example.com"]


@pytest.fixture
def gate_client(make_app: Callable[..., Flask]) -> Any:
    return make_app(GATE_ALLOWED_REDIRECT_HOSTS=APP_HOSTS).test_client()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(next_url=st.one_of(TEXT, st.from_regex(
    r"\A(https?:|HTTPS:|javascript:)?[/\\]{0,3}([a-z%0-9@\\]{0,8}[.@])?(app\.example\.com|x\.apps\.example\.com|"
    r"evil\.example)[a-z:.%0-9@\\/?#]{0,30}\Z")))
def test_login_next_with_gate_hosts_leads_only_to_those_hosts(gate_client: Any, next_url: str) -> None:
    location = landing_after_login(gate_client, next_url)
    host = urlsplit("//" + landing_host(location)).hostname or ""
    assert host in ("localhost", "app.example.com") or host.endswith(".apps.example.com"), location
