"""/metrics: who may read it, what moves after each act, what it never holds, and the README's alert rules."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from portal.metrics import (
    API_ENDPOINTS,
    END_REASONS,
    LOGIN_OUTCOMES,
    REFRESH_OUTCOMES,
    SENTINEL_OUTCOMES,
    UNMATCHED,
)
from tests.conftest import FakeClock
from tests.support import ROOT, Emulator, csrf_token, free_port, portal_login, sign_in

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: FlaskClient) -> Samples:
    """Every sample of /metrics by name and labels."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.status_code
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# Who may read /metrics: (TCP peer, X-Forwarded-For, other headers, settings) → answered?
ADDRESSES = [
    ("127.0.0.1", None, {}, {}, True),
    ("::1", None, {}, {}, True),
    # A socket bound to [::] reports IPv4 peers in IPv6 form.
    ("::ffff:127.0.0.1", None, {}, {}, True),
    ("10.0.0.5", None, {}, {}, False),
    ("10.0.0.5", None, {}, {"METRICS_ALLOW_FROM": ["10.0.0.0/8"]}, True),
    ("10.0.0.5", None, {}, {"METRICS_ALLOW_FROM": ["10.0.0.4/32", "192.168.0.0/16"]}, False),
    # nginx on the same host passes on someone from outside: its loopback address is not enough.
    ("127.0.0.1", "203.0.113.9", {}, {}, False),
    ("127.0.0.1", "203.0.113.9", {}, {"TRUSTED_PROXY_COUNT": 1}, False),
    # A mesh sidecar on loopback in front of the operator's Prometheus: both on the list.
    ("127.0.0.1", "10.0.0.7", {}, {"METRICS_ALLOW_FROM": ["127.0.0.1/32", "10.0.0.0/8"], "TRUSTED_PROXY_COUNT": 1},
     True),
    # Someone outside names loopback in the header: the header can refuse, never admit.
    ("203.0.113.9", "127.0.0.1", {}, {}, False),
    ("203.0.113.9", "127.0.0.1", {}, {"TRUSTED_PROXY_COUNT": 1}, False),
    ("127.0.0.1", "127.0.0.1, 203.0.113.9", {}, {}, False),
    ("127.0.0.1", "not-an-address", {}, {}, False),
    ("127.0.0.1", None, {"Forwarded": "for=127.0.0.1"}, {}, False),
    ("", None, {}, {}, False),
    # With METRICS_PORT gunicorn's master serves them on that port: the public port has none, for anyone.
    ("127.0.0.1", None, {}, {"METRICS_PORT": 9100}, False),
    ("10.0.0.5", None, {}, {"METRICS_PORT": 9100, "METRICS_ALLOW_FROM": ["10.0.0.0/8"]}, False),
]


@pytest.mark.parametrize(("peer", "forwarded_for", "headers", "settings", "answered"), ADDRESSES)
def test_metrics_answer_only_addresses_on_the_list_and_others_get_the_unknown_path_404(
        make_app: Callable[..., Flask], peer: str, forwarded_for: str | None, headers: dict[str, str],
        settings: dict[str, Any], answered: bool) -> None:
    client = make_app(**settings).test_client()
    headers = {**headers, **({"X-Forwarded-For": forwarded_for} if forwarded_for else {})}
    environ = {"REMOTE_ADDR": peer}
    answer = client.get("/metrics", headers=headers, environ_base=environ)
    if answered:
        assert answer.status_code == 200
        assert answer.mimetype == "text/plain"
        assert "# TYPE mediaflow_portal_logins_total counter" in answer.text
        return
    unknown = client.get("/nowhere", headers=headers, environ_base=environ)
    assert (answer.status_code, answer.text) == (unknown.status_code, unknown.text) == (404, unknown.text)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_metrics_answer_get_only(make_app: Callable[..., Flask], method: str) -> None:
    client = make_app().test_client()
    assert client.open("/metrics", method=method).status_code == client.open("/nowhere", method=method).status_code


def log_out(client: FlaskClient) -> None:
    token = csrf_token(client.get("/").text)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302


def test_counters_move_with_each_act(make_app: Callable[..., Flask], clock: FakeClock, emulator: Emulator) -> None:
    app = make_app(clock=clock, ALLOWED_CUSTOMER_IDS=["1"], SESSION_IDLE_TIMEOUT=10_000)
    client = app.test_client()
    token_timed = (("mediaflow_portal_mediaflow_request_duration_seconds_count", {"endpoint": "token"}), 1)
    token_ok = [(("mediaflow_portal_mediaflow_requests_total", {"endpoint": "token", "status": "200"}), 1),
                token_timed]

    def log_in() -> None:
        assert portal_login(client).status_code == 302

    def refresh() -> None:
        clock.advance(3600 - 30)  # within the 60 s leeway of the hour-long token
        assert client.get("/session").status_code == 200

    def refresh_fails() -> None:
        clock.advance(3600 - 30)
        emulator.fault(endpoint="token", kind="garbage")
        assert client.get("/session").status_code == 200  # the token still works: kept

    def refresh_refused() -> None:
        clock.advance(60)  # expired, past the backoff
        emulator.fault(endpoint="token", kind="oauth_error", error="invalid_grant")
        assert client.get("/session").status_code == 401

    def logout() -> None:
        log_out(client)

    def refused() -> None:
        assert portal_login(app.test_client(), username="outsider").status_code == 403

    def mediaflow_fails() -> None:
        emulator.fault(endpoint="api", kind="status", status=503)
        assert client.get("/account").status_code == 200  # the page says Mediaflow did not answer

    def forged_state() -> None:
        assert client.get("/callback?code=x&state=forged").status_code == 400

    def denied() -> None:
        login = client.get("/login")
        answer = sign_in(login.headers["Location"], action="deny")
        callback = answer.headers["Location"]
        assert client.get(callback[callback.index("/callback"):]).status_code == 400

    # act → the samples it moves, and by how much; every other sample named in this table stays put.
    acts: list[tuple[Callable[[], None], list[tuple[tuple[str, dict[str, str]], float]]]] = [
        (log_in, [(("mediaflow_portal_logins_total", {"outcome": "ok"}), 1),
                  (("mediaflow_portal_sessions_started_total", {}), 1), *token_ok,
                  (("mediaflow_portal_mediaflow_requests_total", {"endpoint": "me", "status": "200"}), 1)]),
        (refresh, [(("mediaflow_portal_token_refreshes_total", {"outcome": "ok"}), 1), *token_ok,
                   (("mediaflow_portal_refresh_lock_wait_seconds_count", {}), 1)]),
        (logout, [(("mediaflow_portal_sessions_ended_total", {"reason": "logout"}), 1)]),
        (refused, [(("mediaflow_portal_logins_total", {"outcome": "refused"}), 1), *token_ok,
                   (("mediaflow_portal_mediaflow_requests_total", {"endpoint": "me", "status": "200"}), 1)]),
        (forged_state, [(("mediaflow_portal_logins_total", {"outcome": "state_error"}), 1)]),
        (denied, [(("mediaflow_portal_logins_total", {"outcome": "denied"}), 1)]),
        (log_in, [(("mediaflow_portal_logins_total", {"outcome": "ok"}), 1),
                  (("mediaflow_portal_sessions_started_total", {}), 1), *token_ok,
                  (("mediaflow_portal_mediaflow_requests_total", {"endpoint": "me", "status": "200"}), 1)]),
        (mediaflow_fails, [(("mediaflow_portal_mediaflow_requests_total", {"endpoint": "me", "status": "503"}), 1)]),
        (refresh_fails, [(("mediaflow_portal_token_refreshes_total", {"outcome": "failed_kept"}), 1),
                         (("mediaflow_portal_refresh_lock_wait_seconds_count", {}), 1), *token_ok]),
        (refresh_refused, [(("mediaflow_portal_token_refreshes_total", {"outcome": "ended_session"}), 1),
                           (("mediaflow_portal_sessions_ended_total", {"reason": "mediaflow"}), 1),
                           (("mediaflow_portal_refresh_lock_wait_seconds_count", {}), 1),
                           (("mediaflow_portal_mediaflow_requests_total", {"endpoint": "token", "status": "400"}),
                            1), token_timed]),
    ]
    watched = {(name, tuple(sorted(labels.items()))) for _act, moves in acts for (name, labels), _ in moves}
    before = scrape(client)
    for act, moves in acts:
        act()
        after = scrape(client)
        expected = {(name, tuple(sorted(labels.items()))): delta for (name, labels), delta in moves}
        moved = {key: after.get(key, 0) - before.get(key, 0) for key in watched}
        assert moved == {key: expected.get(key, 0) for key in watched}, act.__name__
        before = after


def test_requests_are_counted_by_route_template_never_by_path(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    for path in ("/files/101", "/files/102", "/library/folders/-3", "/no/such/page", "/healthz"):
        client.get(path)
    samples = scrape(client)
    routes = {dict(labels).get("route") for name, labels in samples if name == "mediaflow_portal_requests_total"}
    templates = {"/files/<mediaflow_id:file_id>", "/library/folders/<mediaflow_id:folder_id>", "/healthz", UNMATCHED}
    assert templates <= routes
    assert not any(route and re.search(r"\d", route) for route in routes)  # no id from a path
    assert value(samples, "mediaflow_portal_requests_total", route=UNMATCHED, status="404") == 1
    assert value(samples, "mediaflow_portal_request_duration_seconds_count", route="/healthz") == 1


def test_metrics_hold_no_user_id_email_token_or_cookie(make_app: Callable[..., Flask], clock: FakeClock,
                                                      tmp_path: Any) -> None:
    app = make_app(clock=clock, SESSION_IDLE_TIMEOUT=10_000)
    client = app.test_client()
    portal_login(client)
    clock.advance(3600 - 30)
    client.get("/session")
    client.get("/files/101")
    text = client.get("/metrics").text
    secrets = [client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value,  # type: ignore[union-attr]
               "demo@example.com", "Demo User", "demo"]
    for path in (tmp_path / "sessions" / "tokens").glob("*.json"):
        secrets += re.findall(r'"(?:access|refresh)_token": "([^"]+)"', path.read_text())
    assert len(secrets) >= 5
    assert not [secret for secret in secrets if secret in text]
    # Every label value is a fixed word, a route template or a status: nothing a user or Mediaflow chose.
    routes = {rule.rule for rule in app.url_map.iter_rules()} | {UNMATCHED, "/metrics"}
    fixed = {*LOGIN_OUTCOMES, *REFRESH_OUTCOMES, *END_REASONS, *SENTINEL_OUTCOMES, *API_ENDPOINTS.values(),
             "token", "other", "timeout", "unreachable"}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label, shown in sample.labels.items():
                allowed = {"route": routes, "status": None, "le": None}.get(label, fixed)
                assert allowed is None or shown in allowed, (sample.name, label, shown)
                assert label != "status" or re.fullmatch(r"\d{3}|timeout|unreachable", shown)


def readme_alert_rules() -> dict[str, Any]:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    rules = [yaml.safe_load(block) for block in blocks if "mediaflow_portal_" in block]
    assert len(rules) == 1, "one YAML block of alert rules in the README"
    return dict(rules[0])


def test_readme_alert_rules_are_prometheus_rules_on_metrics_the_portal_serves(
        make_app: Callable[..., Flask], clock: FakeClock) -> None:
    rules = readme_alert_rules()
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {"MediaflowPortalRefreshFailures", "MediaflowPortalMediaflowSlow", "MediaflowPortalStoreErrors",
            "MediaflowPortalLoginFailures"} <= {alert["alert"] for alert in alerts}
    for alert in alerts:
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}, alert["alert"]
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"]
    # Every series the rules read appears in /metrics after a login, a refresh and a page.
    client = make_app(clock=clock, SESSION_IDLE_TIMEOUT=10_000).test_client()
    portal_login(client)
    clock.advance(3600 - 30)
    client.get("/session")
    served = {name for name, _labels in scrape(client)}
    named = {name for alert in alerts for name in re.findall(r"\bmediaflow_portal_[a-z_]+", alert["expr"])}
    assert len(named) >= 5
    assert named <= served, named - served


def test_store_errors_are_counted_once_per_failed_request(make_app: Callable[..., Flask]) -> None:
    app = make_app(backend="redis", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", SESSION_REDIS_CACHE=False)
    client = app.test_client()
    client.set_cookie(app.config["SESSION_COOKIE_NAME"], "a-session-id-the-store-cannot-look-up")
    assert client.get("/readyz").status_code == 503
    assert client.get("/account").status_code == 503
    assert value(scrape(client), "mediaflow_portal_session_store_errors_total") == 2
