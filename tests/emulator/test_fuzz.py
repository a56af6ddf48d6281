"""Hypothesis throws arbitrary bodies at the token endpoint: none may cause a 500."""

from __future__ import annotations

from urllib.parse import urlencode

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import Emulator

FIELDS = ["grant_type", "code", "redirect_uri", "client_id", "client_secret", "refresh_token", "username",
          "password", "state", "scope", "code_verifier"]
GRANTS = st.sampled_from(["authorization_code", "refresh_token", "password", "", "implicit"])
VALUES = st.one_of(st.text(max_size=300), GRANTS, st.just("portal-test"), st.text(max_size=5000))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(form=st.lists(st.tuples(st.sampled_from([*FIELDS, "other"]), VALUES), max_size=12),
       basic=st.one_of(st.none(), st.text(max_size=100), st.binary(max_size=60)))
def test_any_form_gets_an_oauth_answer_not_a_500(emulator: Emulator, form: list[tuple[str, str]],
                                                 basic: str | bytes | None) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if basic is not None:
        value = basic if isinstance(basic, bytes) else basic.encode("utf-8", "surrogatepass")
        headers["Authorization"] = (b"Basic " + value).decode("latin-1").replace("\n", " ").replace("\r", " ")
    body = urlencode(form, encoding="utf-8", errors="surrogatepass")
    response = requests.post(f"{emulator.url}/1/oauth2/token", data=body, headers=headers, timeout=10)
    assert response.status_code in (200, 400, 401), response.text
    assert "error" in response.json() or "access_token" in response.json()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2000), content_type=st.sampled_from(
    ["application/x-www-form-urlencoded", "application/json", "text/plain", "multipart/form-data; boundary=x"]))
def test_any_raw_body_gets_an_oauth_answer_not_a_500(emulator: Emulator, body: bytes, content_type: str) -> None:
    response = requests.post(f"{emulator.url}/1/oauth2/token", data=body, headers={"Content-Type": content_type},
                             timeout=10)
    assert response.status_code in (400, 401), response.text
