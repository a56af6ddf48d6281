"""Behind a TLS-terminating proxy: forwarded headers are believed only from TRUSTED_PROXY_COUNT proxies."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from tests.support import query_of

FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "portal.example", "X-Forwarded-For": "203.0.113.9"}


@pytest.mark.parametrize(
    ("trusted", "redirect_uri"),
    [(1, "https://portal.example/callback"), (0, "http://localhost/callback")],
    ids=["behind-trusted-proxy", "no-trusted-proxy"],
)
def test_callback_url_follows_forwarded_headers_only_from_trusted_proxies(make_app: Callable[..., Flask],
                                                                         trusted: int, redirect_uri: str) -> None:
    client = make_app(TRUSTED_PROXY_COUNT=trusted, TRUSTED_HOSTS=["portal.example"]).test_client()
    login = client.get("/login", headers=FORWARDED)
    assert query_of(login.headers["Location"])["redirect_uri"] == redirect_uri


def test_a_trusted_proxy_forwarding_an_untrusted_host_gets_a_400(make_app: Callable[..., Flask]) -> None:
    # ProxyFix puts X-Forwarded-Host in place of Host, so TRUSTED_HOSTS checks the name the proxy passed on.
    client = make_app(TRUSTED_PROXY_COUNT=1).test_client()
    login = client.get("/login", headers=FORWARDED)
    assert login.status_code == 400 and "Location" not in login.headers


def test_request_id_is_propagated_or_made(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces" + "x" * 200}).headers
    assert made["X-Request-ID"] != "" and " " not in made["X-Request-ID"] and len(made["X-Request-ID"]) == 16


def test_json_logs_are_one_object_per_line(make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str]) -> None:
    import json

    client = make_app(LOG_FORMAT="json").test_client()
    client.get("/callback?state=unknown", headers={"X-Request-ID": "req-7"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert any(line["request_id"] == "req-7" and "Login failed" in line["message"] for line in lines)
