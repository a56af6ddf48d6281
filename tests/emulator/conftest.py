"""Helpers for the emulator's own tests: a code obtained through the login form."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support import Emulator, authorize_url, query_of, sign_in

CALLBACK = "http://localhost/callback"


@pytest.fixture
def get_code(emulator: Emulator) -> Callable[..., str]:
    def obtain(client_id: str = "portal-test", **extra: str) -> str:
        answer = sign_in(authorize_url(emulator, client_id, CALLBACK, state="s", **extra))
        assert answer.status_code == 302, answer.text
        return query_of(answer.headers["Location"])["code"]

    return obtain


@pytest.fixture
def exchange(emulator: Emulator, get_code: Callable[..., str]) -> Callable[..., dict[str, object]]:
    def tokens(client_id: str = "portal-test") -> dict[str, object]:
        response = emulator.token(grant_type="authorization_code", code=get_code(client_id), redirect_uri=CALLBACK,
                                  client_id=client_id, client_secret=emulator.secret(client_id))
        assert response.status_code == 200, response.text
        return dict(response.json())

    return tokens
