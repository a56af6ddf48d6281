"""The gate against accounts an attacker can make at Mediaflow: look-alike names, odd e-mails, crafted next URLs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask

from app import create_app
from tests.conftest import CLIENTS, SECRET_KEY
from tests.support import Emulator, query_of, sign_in, start_emulator, stop

USERS = [
    {"username": "demo", "password": "demo", "name": "Demo User", "email": "demo@example.com"},
    {"username": "editor", "password": "editor", "name": "Erika Editor", "email": "editor@example.com"},
    # Accounts of another customer, named by an attacker.
    {"username": "editor@example.com", "password": "x1", "name": "Mallory", "email": "mallory@evil.example",
     "customer_id": 2},
    {"username": "demo\u200b", "password": "x2", "name": "Demo User", "email": "a@evil.example@example.com",
     "customer_id": 2},
]


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    running = start_emulator(tmp_path_factory.mktemp("crafted"), CLIENTS, users=USERS)
    yield running
    stop(running.process)


@pytest.fixture
def build(crafted: Emulator, tmp_path: Path) -> Callable[..., Flask]:
    def app_with(**settings: Any) -> Flask:
        return create_app({
            "TESTING": True, "SECRET_KEY": SECRET_KEY, "MEDIAFLOW_CLIENT_ID": "portal-test",
            "MEDIAFLOW_CLIENT_SECRET": crafted.secret("portal-test"),
            "MEDIAFLOW_AUTHORIZE_URL": f"{crafted.url}/authorize",
            "MEDIAFLOW_TOKEN_URL": f"{crafted.url}/1/oauth2/token",
            "MEDIAFLOW_API_BASE": f"{crafted.url}/1", "SESSION_COOKIE_SECURE": False,
            "SESSION_FILE_DIR": str(tmp_path / "sessions"), **settings})
    return app_with


def log_in(client: Any, username: str, password: str, next_url: str = "") -> Any:
    login = client.get("/login" + (f"?next={quote(next_url, safe='')}" if next_url else ""))
    answer = sign_in(login.headers["Location"], username=username, password=password)
    params = query_of(answer.headers["Location"])
    return client.get(f"/callback?code={params['code']}&state={params['state']}")


@pytest.mark.parametrize("next_url", ["https://evil.com\uff3c.apps.example.com/x", "https://evil.com\uff0e.apps.example.com/",
                                      "https://evil.com\ufe68.apps.example.com/"],
                         ids=["fullwidth-backslash", "fullwidth-dot", "small-backslash"])
def test_a_look_alike_character_in_next_never_leads_off_site(build: Callable[..., Flask], next_url: str) -> None:
    client = build(GATE_ALLOWED_REDIRECT_HOSTS=[".apps.example.com"]).test_client()
    landed = log_in(client, "demo", "demo", next_url)
    assert landed.status_code == 302 and landed.headers["Location"] == "/"


@pytest.mark.parametrize(
    ("lists", "username", "password"),
    [({"ALLOWED_USERS": ["editor@example.com"]}, "editor@example.com", "x1"),  # a username that looks like the e-mail
     ({"ALLOWED_EMAIL_DOMAINS": ["example.com"]}, "demo\u200b", "x2")],  # "a@evil.example@example.com"
    ids=["username-posing-as-email", "two-at-signs"],
)
def test_an_account_that_only_looks_allowed_is_refused(build: Callable[..., Flask], lists: dict[str, list[str]],
                                                       username: str, password: str) -> None:
    client = build(**lists).test_client()
    assert log_in(client, username, password).status_code == 403
    assert client.get("/auth").status_code == 401


def test_a_look_alike_username_is_never_sent_as_another_users_name(build: Callable[..., Flask]) -> None:
    client = build().test_client()
    assert log_in(client, "demo\u200b", "x2").status_code == 302  # no list set: anyone may enter the portal
    assert client.get("/auth").status_code == 401  # but no app is told this is "demo"


def test_a_session_without_an_identity_gets_no_202(build: Callable[..., Flask], crafted: Emulator) -> None:
    client = build().test_client()
    crafted.fault(endpoint="api", kind="status", status=503)  # /me fails at the callback: the session has no name
    try:
        assert log_in(client, "demo", "demo").status_code == 302
    finally:
        crafted.reset()
    assert client.get("/session").status_code == 200
    assert client.get("/auth").status_code == 401


@pytest.mark.parametrize("hosts", [["."], [".com"], ["evil.com."]], ids=["dot", "top-level", "trailing-dot"])
def test_a_catch_all_redirect_host_is_refused_at_start(build: Callable[..., Flask], hosts: list[str]) -> None:
    with pytest.raises(SystemExit):
        build(GATE_ALLOWED_REDIRECT_HOSTS=hosts)
