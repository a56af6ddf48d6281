"""Fault injection: each kind, per endpoint, for the next N calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.emulator.conftest import CALLBACK
from tests.support import Emulator, authorize_url


def password_token(emulator: Emulator, timeout: float = 5) -> requests.Response:
    return requests.post(f"{emulator.url}/1/oauth2/token", timeout=timeout, data={
        "grant_type": "password", "username": "demo", "password": "demo", "client_id": "portal-test",
        "client_secret": emulator.secret("portal-test")})


@pytest.mark.parametrize(
    ("fault", "status", "is_json"),
    [({"kind": "status", "status": 500}, 500, True),
     ({"kind": "status", "status": 503}, 503, True),
     ({"kind": "garbage"}, 200, False),
     ({"kind": "garbage", "status": 502}, 502, False),
     ({"kind": "oauth_error", "error": "invalid_grant"}, 400, True)],
    ids=["500", "503", "garbage-200", "garbage-502", "invalid_grant"],
)
def test_token_faults_answer_as_configured_then_stop(emulator: Emulator, fault: dict[str, Any], status: int,
                                                     is_json: bool) -> None:
    emulator.fault(endpoint="token", count=2, **fault)
    for _ in range(2):
        response = password_token(emulator)
        assert response.status_code == status
        assert response.headers["Content-Type"].startswith("application/json") is is_json
        assert "access_token" not in response.text
    assert password_token(emulator).status_code == 200
    assert emulator.stats()["token"]["password"] == {"ok": 1, "failed": 2}


def test_dropped_connection_closes_without_an_answer(emulator: Emulator) -> None:
    emulator.fault(endpoint="token", kind="drop")
    with pytest.raises(requests.ConnectionError):
        password_token(emulator)
    assert password_token(emulator).status_code == 200


def test_delay_slows_the_call_but_it_still_succeeds(emulator: Emulator) -> None:
    emulator.fault(endpoint="token", kind="delay", delay=0.6)
    started = time.monotonic()
    assert password_token(emulator).status_code == 200
    assert time.monotonic() - started >= 0.6
    emulator.fault(endpoint="token", kind="delay", delay=1.0)
    with pytest.raises(requests.Timeout):
        password_token(emulator, timeout=0.3)


def test_api_faults_only_touch_the_api(emulator: Emulator, exchange: Callable[..., dict[str, Any]]) -> None:
    token = exchange()
    emulator.fault(endpoint="api", kind="status", status=503)
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    failed = requests.get(f"{emulator.url}/1/me", headers=headers, timeout=5)
    assert failed.status_code == 503 and failed.json() == {"status": 503, "error": "Injected fault."}
    assert requests.get(f"{emulator.url}/1/me", headers=headers, timeout=5).status_code == 200


@pytest.mark.parametrize(("fault", "retry_after"), [({}, "1"), ({"retry_after": 7}, "7"), ({"retry_after": 0}, "0")])
def test_rate_limit_answers_429_with_retry_after(emulator: Emulator, exchange: Callable[..., dict[str, Any]],
                                                 fault: dict[str, Any], retry_after: str) -> None:
    headers = {"Authorization": f"Bearer {exchange()['access_token']}"}
    emulator.fault(endpoint="api", kind="rate_limit", **fault)
    limited = requests.get(f"{emulator.url}/1/foldertree", headers=headers, timeout=5)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == retry_after
    assert limited.json() == {"status": 429, "error": "Too many requests."}
    assert requests.get(f"{emulator.url}/1/foldertree", headers=headers, timeout=5).status_code == 200
    assert emulator.stats()["api"] == {"/1/foldertree": 2}  # the refused call counts too


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/1/foldertree", None), ("GET", "/1/folder/-3/files", None), ("GET", "/1/file/-101", None),
    ("GET", "/1/file/101/checkpermissions", None), ("GET", "/1/file/101/license", None),
    ("POST", "/1/search/file", {"searchTerm": "logo", "lang": "en-GB"}), ("GET", "/1/formats", None),
    ("GET", "/1/file/101/downloads/0", None)])
def test_api_faults_touch_every_library_endpoint(emulator: Emulator, exchange: Callable[..., dict[str, Any]],
                                                 method: str, path: str, body: Any) -> None:
    headers = {"Authorization": f"Bearer {exchange()['access_token']}"}
    emulator.fault(endpoint="api", kind="status", status=503)
    failed = requests.request(method, f"{emulator.url}{path}", json=body, headers=headers, timeout=5)
    assert failed.status_code == 503 and failed.json() == {"status": 503, "error": "Injected fault."}
    assert requests.request(method, f"{emulator.url}{path}", json=body, headers=headers, timeout=5).ok


def test_api_faults_leave_previews_and_downloads_alone(emulator: Emulator,
                                                       exchange: Callable[..., dict[str, Any]]) -> None:
    headers = {"Authorization": f"Bearer {exchange()['access_token']}"}
    [link] = requests.get(f"{emulator.url}/1/file/101/downloads/0", headers=headers, timeout=5).json()
    emulator.fault(endpoint="api", kind="status", status=503, count=2)
    assert requests.get(link["downloadURL"], timeout=5).status_code == 200
    assert requests.get(f"{emulator.url}/_emulator/preview/101/thumb.svg", timeout=5).status_code == 200
    assert len(requests.get(f"{emulator.url}/_emulator/faults", timeout=5).json()["faults"]) == 1


def test_authorize_faults(emulator: Emulator) -> None:
    emulator.fault(endpoint="authorize", kind="status", status=500)
    assert requests.get(authorize_url(emulator, "portal-test", CALLBACK), timeout=5).status_code == 500
    assert requests.get(authorize_url(emulator, "portal-test", CALLBACK), timeout=5).status_code == 200


def test_faults_can_be_listed_and_cleared(emulator: Emulator) -> None:
    emulator.fault(endpoint="token", kind="status", count=5)
    listed = requests.get(f"{emulator.url}/_emulator/faults", timeout=5).json()["faults"]
    assert listed[0]["remaining"] == 5
    assert requests.delete(f"{emulator.url}/_emulator/faults", timeout=5).json() == {"faults": []}
    assert password_token(emulator).status_code == 200


@pytest.mark.parametrize(
    "fault",
    [None, [], {"endpoint": "nowhere", "kind": "status"}, {"endpoint": "token", "kind": "explode"},
     {"endpoint": "token", "kind": "status", "count": 0}, {"endpoint": "token", "kind": "delay", "delay": -1},
     {"endpoint": "token", "kind": "status", "status": 99}, {"endpoint": "token", "kind": "status", "count": True},
     {"endpoint": "api", "kind": "rate_limit", "retry_after": -1},
     {"endpoint": "api", "kind": "rate_limit", "retry_after": 61},
     {"endpoint": "api", "kind": "rate_limit", "retry_after": 1.5},
     {"endpoint": "api", "kind": "rate_limit", "retry_after": "1"},
     {"endpoint": "api", "kind": "rate_limit", "retry_after": True},
     {"endpoint": "api", "kind": "rate_limit", "status": 503}],
)
def test_unusable_fault_requests_are_400_with_a_message(emulator: Emulator, fault: Any) -> None:
    response = requests.post(f"{emulator.url}/_emulator/faults", json=fault, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"]


def test_a_delayed_call_is_in_flight_until_it_ends(emulator: Emulator) -> None:
    emulator.fault(endpoint="token", kind="delay", delay=1.0)
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(emulator.token, grant_type="refresh_token", refresh_token="x")
        deadline = time.monotonic() + 5
        while emulator.stats()["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert emulator.stats()["in_flight"] == 1  # the caller may have given up; the emulator has not
        call.result()
    assert emulator.stats()["in_flight"] == 0
