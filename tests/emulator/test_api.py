"""GET /1/me: arrays for success, Mediaflow's error body for failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.support import Emulator


def test_me_returns_the_user_as_a_one_element_array(emulator: Emulator,
                                                    exchange: Callable[..., dict[str, Any]]) -> None:
    token = exchange()
    response = requests.get(f"{emulator.url}/1/me", headers={"Authorization": f"Bearer {token['access_token']}"},
                            timeout=5)
    assert response.status_code == 200
    assert response.json() == [{"id": 1, "username": "demo", "name": "Demo User", "email": "demo@example.com",
                                "customerId": 1}]
    assert emulator.stats()["api"] == {"/1/me": 1}


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer unknown-token", "Basic ZGVtbzpkZW1v", "bearer  "])
def test_me_without_a_valid_token_is_401_with_mediaflows_error_body(emulator: Emulator, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = requests.get(f"{emulator.url}/1/me", headers=headers, timeout=5)
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == 401 and body["error"]


def test_me_with_an_expired_token_is_401(emulator: Emulator, exchange: Callable[..., dict[str, Any]]) -> None:
    token = exchange("short")
    time.sleep(4.1)
    response = requests.get(f"{emulator.url}/1/me", headers={"Authorization": f"Bearer {token['access_token']}"},
                            timeout=5)
    assert response.status_code == 401
    assert response.json()["status"] == 401


def test_unknown_api_path_answers_with_mediaflows_error_body(emulator: Emulator) -> None:
    response = requests.get(f"{emulator.url}/1/nothing-here", timeout=5)
    assert response.status_code == 404
    assert response.json()["status"] == 404
