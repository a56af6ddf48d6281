"""Behind a TLS-terminating proxy: forwarded headers are believed only from TRUSTED_PROXY_COUNT proxies."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize(
    ("trusted", "sent", "kept"),
    [(1, "req-7", True),
     (0, "req-7", False),
     (1, "bad id\twith spaces" + "x" * 200, False),
     (0, "bad id\twith spaces" + "x" * 200, False)],
    ids=["trusted-proxy", "no-trusted-proxy", "malformed-from-trusted-proxy", "malformed-no-trusted-proxy"],
)
def test_request_id_is_taken_only_from_a_trusted_proxy_else_made(make_app: Callable[..., Flask],
                                                                 capsys: pytest.CaptureFixture[str], trusted: int,
                                                                 sent: str, kept: bool) -> None:
    client = make_app(TRUSTED_PROXY_COUNT=trusted, LOG_FORMAT="json").test_client()
    capsys.readouterr()
    answered = client.get("/callback?state=unknown", headers={"X-Request-ID": sent}).headers["X-Request-ID"]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    logged = [line["request_id"] for line in lines if "Login failed" in line["message"]]
    assert logged == [answered], "the response and the log line carry the same id"
    if kept:
        assert answered == sent
    else:
        assert answered != sent and len(answered) == 16 and answered.isalnum()


def test_a_trusted_proxy_forwarding_an_untrusted_host_gets_a_400(make_app: Callable[..., Flask]) -> None:
    # ProxyFix puts X-Forwarded-Host in place of Host, so TRUSTED_HOSTS checks the name the proxy passed on.
    client = make_app(TRUSTED_PROXY_COUNT=1).test_client()
    login = client.get("/login", headers=FORWARDED)
    assert login.status_code == 400 and "Location" not in login.headers


def test_json_logs_are_one_object_per_line(make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str]) -> None:
    client = make_app(LOG_FORMAT="json").test_client()
    client.get("/callback?state=unknown")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert any(line["request_id"] != "-" and "Login failed" in line["message"] for line in lines)
