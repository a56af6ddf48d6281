"""The audit trail: one event per login, logout and ended session, with the request id, in JSON or text."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FakeClock
from tests.support import Emulator, csrf_token, portal_login, sign_in

REFUSAL = "customerId 2 is not named by ALLOWED_CUSTOMER_IDS"
DEMO = {"user_id": 1, "customer_id": 1, "client_ip": "127.0.0.1"}
LOGIN_OK = {"event": "login", "outcome": "ok", **DEMO}


class Acts:
    """What a test does to one portal: each method is one act of the table below."""

    def __init__(self, app: Flask, clock: FakeClock, emulator: Emulator, make_app: Callable[..., Flask]) -> None:
        self.app, self.clock, self.emulator, self.make_app = app, clock, emulator, make_app
        self.client: FlaskClient = app.test_client()

    def log_in(self, username: str = "demo") -> int:
        return int(portal_login(self.client, username=username).status_code)

    def login(self) -> None:
        assert self.log_in() == 302

    def denied(self) -> None:
        answer = sign_in(self.client.get("/login").headers["Location"], action="deny")
        callback = answer.headers["Location"]
        assert self.client.get(callback[callback.index("/callback"):]).status_code == 400

    def forged_state(self) -> None:
        assert self.client.get("/callback?code=x&state=forged").status_code == 400

    def mediaflow_down(self) -> None:
        self.emulator.fault(endpoint="token", kind="status", status=503)
        assert self.log_in() in (502, 503)

    def refused(self) -> None:
        assert self.log_in("outsider") == 403

    def logout(self) -> None:
        self.login()
        token = csrf_token(self.client.get("/").text)
        assert self.client.post("/logout", data={"csrf_token": token}).status_code == 302

    def idle(self) -> None:
        self.login()
        self.clock.advance(self.app.config["SESSION_IDLE_TIMEOUT"] + 1)
        assert self.client.get("/session").status_code == 401

    def lifetime(self) -> None:
        self.login()
        self.clock.advance(self.app.config["SESSION_MAX_LIFETIME"] + 1)
        assert self.client.get("/session").status_code == 401

    def refresh_refused(self) -> None:
        self.login()
        self.clock.advance(3600 - 30)
        self.emulator.fault(endpoint="token", kind="oauth_error", error="invalid_grant")
        assert self.client.get("/session").status_code == 401

    def expired_without_refresh_token(self) -> None:
        self.login()
        self.clock.advance(5)  # the "no-refresh" client's tokens live 4 s
        assert self.client.get("/session").status_code == 401

    def narrower_lists(self) -> None:
        self.login()
        # A restart with narrower lists: another app on the same store.
        after = self.make_app(clock=self.clock, ALLOWED_CUSTOMER_IDS=["2"], LOG_FORMAT="json")
        name = self.app.config["SESSION_COOKIE_NAME"]
        client = after.test_client()
        client.set_cookie(name, self.client.get_cookie(name).value)  # type: ignore[union-attr]
        assert client.get("/session").status_code == 401

    def through_a_proxy(self) -> None:
        self.client.environ_base["HTTP_X_FORWARDED_FOR"] = "203.0.113.7"
        self.login()


# act, the portal's settings, the audit events it writes (each listed field, in order)
EVENTS: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [
    ("login", {}, [LOGIN_OK]),
    ("denied", {}, [{"event": "login", "outcome": "denied", "user_id": None, "customer_id": None}]),
    ("forged_state", {}, [{"event": "login", "outcome": "state_error", "user_id": None}]),
    ("mediaflow_down", {}, [{"event": "login", "outcome": "unavailable", "user_id": None}]),
    ("refused", {"ALLOWED_CUSTOMER_IDS": ["1"]},
     [{"event": "login", "outcome": "refused", "user_id": 3, "customer_id": 2, "refusal": REFUSAL}]),
    ("logout", {}, [LOGIN_OK, {"event": "logout", **DEMO}]),
    ("idle", {}, [LOGIN_OK, {"event": "session_ended", "reason": "timeout", "cause": "idle", **DEMO}]),
    ("lifetime", {"SESSION_MAX_LIFETIME": 600, "SESSION_IDLE_TIMEOUT": 900},
     [LOGIN_OK, {"event": "session_ended", "reason": "timeout", "cause": "lifetime", **DEMO}]),
    ("refresh_refused", {"SESSION_IDLE_TIMEOUT": 7200},
     [LOGIN_OK, {"event": "session_ended", "reason": "mediaflow", "cause": "refresh_refused", **DEMO}]),
    ("expired_without_refresh_token", {"client_id": "no-refresh"},
     [LOGIN_OK, {"event": "session_ended", "reason": "mediaflow", "cause": "no_refresh_token", **DEMO}]),
    ("narrower_lists", {"ALLOWED_CUSTOMER_IDS": ["1"]},
     [LOGIN_OK, {"event": "session_ended", "reason": "refused", "cause": "allow_lists",
                 "refusal": "customerId 1 is not named by ALLOWED_CUSTOMER_IDS", **DEMO}]),
    # The client's address as the trusted proxy forwards it; without one the header is not believed.
    ("through_a_proxy", {"TRUSTED_PROXY_COUNT": 1}, [{**LOGIN_OK, "client_ip": "203.0.113.7"}]),
    ("through_a_proxy", {}, [LOGIN_OK]),
]


@pytest.mark.parametrize(("act", "settings", "expected"), EVENTS,
                         ids=[f"{act}-{i}" for i, (act, _settings, _events) in enumerate(EVENTS)])
def test_each_act_writes_its_audit_event_as_one_json_line(
        make_app: Callable[..., Flask], clock: FakeClock, emulator: Emulator, capsys: pytest.CaptureFixture[str],
        act: str, settings: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    app = make_app(clock=clock, LOG_FORMAT="json", **settings)
    capsys.readouterr()
    getattr(Acts(app, clock, emulator, make_app), act)()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    events = [line for line in lines if line["logger"] == "portal.audit"]
    assert [{name: event.get(name) for name in wanted} for event, wanted in zip(events, expected, strict=False)
            ] == expected
    assert len(events) == len(expected)
    for event in events:
        assert event["level"] == "info" and event["request_id"] != "-"
        assert event["message"].startswith(event["event"] + " ")
        assert not {"email", "name", "username"} & set(event)


def test_in_text_format_an_event_is_one_readable_line(make_app: Callable[..., Flask],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app(ALLOWED_CUSTOMER_IDS=["1"])
    capsys.readouterr()
    portal_login(app.test_client())
    portal_login(app.test_client(), username="outsider")
    lines = [line.partition(" portal.audit: ")[2] for line in capsys.readouterr().out.splitlines()
             if " portal.audit: " in line]
    assert lines == ["login outcome=ok user_id=1 customer_id=1 client_ip=127.0.0.1",
                     f'login outcome=refused user_id=3 customer_id=2 client_ip=127.0.0.1 refusal="{REFUSAL}"']


def _log_in_and_end(acts: Acts, ending: str) -> None:
    acts.login()
    if ending == "idle":
        acts.clock.advance(acts.app.config["SESSION_IDLE_TIMEOUT"] + 1)
    else:
        acts.clock.advance(3600 - 30)
        acts.emulator.fault(endpoint="token", kind="oauth_error", error="invalid_grant")


def sessions_ended(app: Flask, reason: str) -> float:
    """mediaflow_portal_sessions_ended_total{reason} as /metrics serves it."""
    for family in text_string_to_metric_families(app.test_client().get("/metrics").text):
        for sample in family.samples:
            if sample.name == "mediaflow_portal_sessions_ended_total" and sample.labels == {"reason": reason}:
                return float(sample.value)
    raise AssertionError(f"no sessions_ended sample for {reason}")


def all_at_once(app: Flask, cookie: str, send: Callable[[FlaskClient], int], count: int = 6) -> list[int]:
    """count requests of one browser (the same session cookie), released together; their statuses."""
    clients = [app.test_client() for _ in range(count)]
    for client in clients:
        client.set_cookie(app.config["SESSION_COOKIE_NAME"], cookie)
    start = threading.Barrier(count)

    def one(client: FlaskClient) -> int:
        start.wait()
        return int(send(client))

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, clients))


# how the session ends, the portal's idle timeout, the event's reason and cause
ENDINGS = [("idle", 900, "timeout", "idle"), ("refresh_refused", 7200, "mediaflow", "refresh_refused")]


@pytest.mark.parametrize(("ending", "idle_timeout", "reason", "cause"), ENDINGS)
def test_a_page_whose_requests_all_find_the_session_ended_writes_one_event_and_counts_one(
        make_app: Callable[..., Flask], clock: FakeClock, emulator: Emulator, capsys: pytest.CaptureFixture[str],
        backend: str, ending: str, idle_timeout: int, reason: str, cause: str) -> None:
    app = make_app(backend=backend, clock=clock, LOG_FORMAT="json", SESSION_IDLE_TIMEOUT=idle_timeout)
    acts = Acts(app, clock, emulator, make_app)
    _log_in_and_end(acts, ending)
    name = app.config["SESSION_COOKIE_NAME"]
    cookie = acts.client.get_cookie(name).value  # type: ignore[union-attr]
    before = sessions_ended(app, reason)
    capsys.readouterr()
    # A page load: its requests arrive at once, each with the same cookie, each finds the session over.
    statuses = all_at_once(app, cookie, lambda client: client.get("/session").status_code)
    # A request that loads the session after another saved it ended finds nobody logged in.
    assert set(statuses) <= {302, 401} and 401 in statuses
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    events = [line for line in lines if line["logger"] == "portal.audit"]
    assert [(event["event"], event["reason"], event["cause"]) for event in events] == [
        ("session_ended", reason, cause)]
    assert sessions_ended(app, reason) - before == 1


def test_logouts_of_one_session_at_once_write_one_event_and_count_one(
        make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str], backend: str) -> None:
    app = make_app(backend=backend, LOG_FORMAT="json")
    first = app.test_client()
    portal_login(first)
    token = csrf_token(first.get("/").text)
    name = app.config["SESSION_COOKIE_NAME"]
    cookie = first.get_cookie(name).value  # type: ignore[union-attr]
    capsys.readouterr()
    statuses = all_at_once(app, cookie, lambda client: client.post("/logout", data={"csrf_token": token}).status_code)
    # The others find the session gone (400: its CSRF token went with it) or its token set forgotten (401).
    assert set(statuses) <= {302, 400, 401} and 302 in statuses
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["event"] for line in lines if line["logger"] == "portal.audit"] == ["logout"]
    assert [sessions_ended(app, reason) for reason in ("logout", "mediaflow")] == [1, 0]
