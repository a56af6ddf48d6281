"""No token, code, state, password or secret ever reaches a log line."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from gunicorn.glogging import SafeAtoms

from portal import audit
from portal.logs import RedactingFilter, gunicorn_logging, redact
from tests.support import (
    PORTAL_PORTS,
    Emulator,
    Portal,
    dockerfile_cmd,
    env_with,
    portal_settings,
    query_of,
    sign_in,
    stage_image,
    start_portal,
    stop,
)


@pytest.mark.parametrize(
    ("text", "hidden"),
    [("GET /callback?code=abc123&state=xyz789 HTTP/1.1", ["abc123", "xyz789"]),
     ("body grant_type=refresh_token&refresh_token=rt-1&client_secret=cs-2", ["rt-1", "cs-2"]),
     ('{"access_token": "at-3", "refresh_token": "rt-4", "expires_in": 60}', ["at-3", "rt-4"]),
     ("{'password': 'pw-5', 'username': 'demo'}", ["pw-5"]),
     ("Authorization: Bearer at-6.x_y", ["at-6.x_y"]),
     ("Using code_verifier: 'cv-7'", ["cv-7"]),
     ("Authorization: Basic Y2xpZW50OnNlY3JldA==", ["Y2xpZW50OnNlY3JldA=="])],
)
def test_redact_hides_secret_values_by_the_name_they_follow(text: str, hidden: list[str]) -> None:
    cleaned = redact(text)
    assert "[redacted]" in cleaned
    for value in hidden:
        assert value not in cleaned


def test_a_line_break_in_a_request_value_cannot_forge_a_log_line(make_app: Any,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    client = make_app().test_client()
    state = query_of(client.get("/login").headers["Location"])["state"]
    client.get(f"/callback?state={state}&error=access_denied%0a2026-01-01 INFO portal.auth: Login succeeded for user 1")
    lines = [line for line in capsys.readouterr().out.splitlines() if "portal.auth" in line]
    assert len(lines) == 1
    assert "Login failed" in lines[0] and "\\n2026-01-01" in lines[0]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_an_audit_events_fields_are_redacted_and_cannot_forge_a_line(make_app: Any, log_format: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app(LOG_FORMAT=log_format)
    # Ids come from Mediaflow's /me: whatever they hold, no secret-looking value or line break gets through.
    user = {"id": "Bearer at-11.x_y", "customerId": "1 access_token=at-12\n2026-01-01 INFO portal.audit: logout"}
    with app.test_request_context("/callback"):
        audit.login("refused", user, refusal="code=co-13&state=st-14")
        audit.session_ended("mediaflow", "refresh_refused", user)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "portal.audit" in line]
    assert len(lines) == 2
    for secret in ("at-11.x_y", "at-12", "co-13", "st-14"):
        assert secret not in out
    if log_format == "json":
        fields = json.loads(lines[0])
        assert fields["event"] == "login" and fields["user_id"] == "Bearer [redacted]"
        assert fields["refusal"] == "code=[redacted]&state=[redacted]"


@pytest.fixture
def portal(emulator: Emulator, tmp_path: Path) -> Iterator[Portal]:
    port = PORTAL_PORTS[1]
    settings = portal_settings(emulator, "short", port, SESSION_FILE_DIR=str(tmp_path / "store"),
                               MEDIAFLOW_READ_TIMEOUT="0.5", GUNICORN_WORKERS="2",
                               SESSION_FILESYSTEM_ALLOW_WORKERS="true")
    running = start_portal(tmp_path, port, settings)
    yield running
    stop(running.process)


def stored_tokens(folder: Path) -> set[str]:
    values = set()
    for path in (folder / "tokens").glob("*.json"):
        data = json.loads(path.read_text())
        values.update(v for v in (data["access_token"], data["refresh_token"]) if v)
    return values


@pytest.mark.gunicorn
def test_logs_of_a_login_a_refresh_and_every_error_hold_no_secret(portal: Portal, emulator: Emulator,
                                                                  tmp_path: Path) -> None:
    secrets: set[str] = {emulator.secret("short"), "gunicorn-test-secret-key-0123456789abcdef"}
    browser = requests.Session()

    def start() -> dict[str, str]:
        login = browser.get(f"{portal.url}/login", allow_redirects=False, timeout=10)
        params = query_of(sign_in(login.headers["Location"]).headers["Location"])
        secrets.update(params.values())
        return params

    def callback(query: str) -> int:
        return browser.get(f"{portal.url}/callback?{query}", allow_redirects=False, timeout=10).status_code

    # A full login, then a refresh.
    params = start()
    assert callback(f"code={params['code']}&state={params['state']}") == 302
    secrets |= stored_tokens(tmp_path / "store")
    time.sleep(2.2)
    assert browser.get(f"{portal.url}/session", timeout=10).status_code == 200
    secrets |= stored_tokens(tmp_path / "store")
    assert len(secrets) >= 6

    # Every error case of the callback.
    params = start()
    assert callback(f"code={params['code']}&state=wrong-{params['state']}") == 400
    assert callback(f"state={params['state']}") == 400
    assert callback("error=access_denied&error_description=secret-description") == 400
    for fault in ({"kind": "garbage"}, {"kind": "delay", "delay": 1.0}, {"kind": "oauth_error"}):
        params = start()
        emulator.fault(endpoint="token", **fault)
        assert callback(f"code={params['code']}&state={params['state']}") in (400, 502, 503)
    # A failed refresh, then a refused one.
    params = start()
    assert callback(f"code={params['code']}&state={params['state']}") == 302
    secrets |= stored_tokens(tmp_path / "store")
    time.sleep(4.2)
    emulator.fault(endpoint="token", kind="garbage")
    assert browser.get(f"{portal.url}/session", timeout=10).status_code == 503
    emulator.fault(endpoint="token", kind="oauth_error", error="invalid_grant")
    assert browser.get(f"{portal.url}/session", timeout=10).status_code == 401
    assert browser.get(f"{portal.url}/nowhere", timeout=10).status_code == 404
    # A path that would recolour the terminal of whoever reads the log, ring its bell and hide the rest.
    assert requests.get(f"{portal.url}/x%1B[31mred%07%00", timeout=10).status_code == 404

    time.sleep(0.5)
    logs = portal.logs()
    assert '"GET /x\\x1b[31mred\\x07\\x00"' in logs
    assert not {"\x00", "\x07", "\x1b"} & set(logs)
    assert "Login succeeded" in logs and "Token refreshed" in logs and "Token refresh failed" in logs
    # The audit trail's lines are in the same log, so the check below covers them too.
    assert "portal.audit: login outcome=ok user_id=1" in logs
    assert "portal.audit: login outcome=state_error" in logs
    assert "portal.audit: session_ended reason=mediaflow cause=refresh_refused user_id=1" in logs
    assert '"GET /callback"' in logs, "the access log shows the callback without its query"
    leaked = sorted(s for s in secrets if s in logs)
    assert not leaked, f"{len(leaked)} secret value(s) reached the log"


@pytest.mark.gunicorn
def test_with_log_format_json_every_line_gunicorn_and_the_portal_write_is_json_without_a_secret(
        emulator: Emulator, tmp_path: Path) -> None:
    port = PORTAL_PORTS[1]
    settings = portal_settings(emulator, "short", port, SESSION_FILE_DIR=str(tmp_path / "store"), LOG_FORMAT="json",
                               GUNICORN_WORKERS="2", SESSION_FILESYSTEM_ALLOW_WORKERS="true")
    portal = start_portal(tmp_path, port, settings)
    secrets: set[str] = {emulator.secret("short"), settings["SECRET_KEY"]}
    try:
        browser = requests.Session()
        login = browser.get(f"{portal.url}/login", allow_redirects=False, timeout=10)
        params = query_of(sign_in(login.headers["Location"]).headers["Location"])
        secrets.update(params.values())
        assert browser.get(f"{portal.url}/callback?code={params['code']}&state={params['state']}",
                           allow_redirects=False, timeout=10).status_code == 302
        secrets.add(browser.cookies["mediaflow_portal"])
        secrets |= stored_tokens(tmp_path / "store")
        time.sleep(2.2)  # the 4-s token is due: a refresh
        refreshed = browser.get(f"{portal.url}/session", timeout=10)
        assert refreshed.status_code == 200
        secrets |= stored_tokens(tmp_path / "store")
        assert browser.get(f"{portal.url}/callback?code=forged-code&state=forged-state", timeout=10).status_code == 400
        assert requests.get(f"{portal.url}/nowhere?access_token=at-in-a-query", timeout=10).status_code == 404
        assert requests.get(f"{portal.url}/metrics", timeout=10).status_code == 200
        secrets |= {"forged-code", "forged-state", "at-in-a-query"}
    finally:
        stop(portal.process)  # gunicorn's shutdown lines too

    lines = portal.logs().splitlines()
    not_json = []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            not_json.append(line)
    assert not_json == [], f"{len(not_json)} of {len(lines)} lines are not JSON, the first: {not_json[0]!r}"
    loggers = {record["logger"] for record in records}
    assert {"gunicorn.error", "gunicorn.access", "portal.auth", "portal.audit"} <= loggers, loggers
    messages = [record["message"] for record in records]
    assert any(message.startswith("Starting gunicorn") for message in messages)
    assert any(message.startswith("Shutting down") for message in messages)
    assert any('"GET /callback" 302' in message for message in messages), "the access log, without the query"
    assert all({"time", "level", "logger", "request_id", "message"} <= set(record) for record in records)
    # gunicorn's access line for a request carries the same id as the portal's lines for it, in the same field.
    request_id = refreshed.headers["X-Request-ID"]
    assert {"gunicorn.access", "portal.tokens"} <= {record["logger"] for record in records
                                                if record["request_id"] == request_id}, request_id
    leaked = sorted(secret for secret in secrets if secret in portal.logs())
    assert not leaked, f"{len(leaked)} secret value(s) reached the log"


@pytest.mark.parametrize("secret", ["s3cr3t", "a-longer-client-secret-0123"], ids=["short", "long"])
def test_a_known_secret_is_redacted_alike_in_the_apps_log_and_gunicorns(secret: str) -> None:
    """The app's filter (logs.init_app) and gunicorn's (gunicorn.conf.py's logconfig_dict) treat a value alike."""
    apps = RedactingFilter((secret, "a-secret-key-" + "x" * 40))
    gunicorns = RedactingFilter(**{name: value for name, value in
                                   gunicorn_logging(False, (secret, "a-secret-key-" + "x" * 40))["filters"]["redact"]
                                   .items() if name != "()"})
    lines = []
    for redacting in (apps, gunicorns):
        record = logging.LogRecord("portal", logging.INFO, __file__, 1, "GET /x-%s-x from one of us", (secret,), None)
        redacting.filter(record)
        lines.append(record.getMessage())
    assert lines[0] == lines[1]
    # A short value would cut words apart in every line: only the named patterns catch it (client_secret=…).
    assert (secret in lines[0]) is (len(secret) < 8)


# A request line as gunicorn's access log gets it (%(r)s), and as the line must read: no control character raw.
CONTROL_LINES = [
    ("escape-sequences", "GET /x\x1b[31mRED\x1b[0m HTTP/1.1", "GET /x\\x1b[31mRED\\x1b[0m HTTP/1.1"),
    ("nul-bell-backspace-del", "GET /a\x00\x07\x08\x7f HTTP/1.1", "GET /a\\x00\\x07\\x08\\x7f HTTP/1.1"),
    ("line-breaks-and-tab", "GET /a\r\n2026-01-01 INFO\t HTTP/1.1", "GET /a\\r\\n2026-01-01 INFO\\t HTTP/1.1"),
    ("c1-control", "GET /a\x85\x9b2J HTTP/1.1", "GET /a\\x85\\x9b2J HTTP/1.1"),
    ("printable-left-alone", "GET /caf\xe9?q=a%20b HTTP/1.1", "GET /caf\xe9?q=a%20b HTTP/1.1"),
    # Python's \s takes \x1c-\x1f for whitespace: a value after one is still found by its name.
    ("a-secret-after-a-control", "GET /cb?code=\x1fcode-1234 HTTP/1.1", "GET /cb?code=[redacted] HTTP/1.1"),
]


@pytest.mark.parametrize(("request_line", "logged"), [row[1:] for row in CONTROL_LINES],
                         ids=[row[0] for row in CONTROL_LINES])
def test_control_characters_from_a_request_are_written_out_in_the_log(request_line: str, logged: str) -> None:
    """ESC, BEL or backspace would drive the terminal of whoever reads the log; a line break would forge a line."""
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, '%(h)s "%(r)s" 404',
                               (SafeAtoms({"h": "127.0.0.1", "r": request_line}),), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == f'127.0.0.1 "{logged}" 404'


def test_werkzeugs_own_colours_are_dropped_and_any_other_escape_written_out() -> None:
    """`flask run`'s server colours its lines; it writes a request's own control characters out itself."""
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '%s - "%s" 404 -',
                               ("127.0.0.1", "\x1b[33mGET /nope\\x1b[2J HTTP/1.1\x1b[0m"), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == '127.0.0.1 - "GET /nope\\x1b[2J HTTP/1.1" 404 -'
    other = logging.LogRecord("portal.auth", logging.INFO, __file__, 1, "%s", ("\x1b[33mgold\x1b[0m",), None)
    assert RedactingFilter().filter(other)
    assert other.getMessage() == "\\x1b[33mgold\\x1b[0m"


# gunicorn's access record: its atoms (a SafeAtoms) as the arguments; the response's X-Request-ID among them.
ACCESS_RECORDS = [
    ("the-portals-id", SafeAtoms({"h": "127.0.0.1", "{x-request-id}o": "6f1c0a2b"}), "6f1c0a2b"),
    ("no-id-sent", SafeAtoms({"h": "127.0.0.1"}), "-"),
    ("an-id-with-a-quote", SafeAtoms({"h": "127.0.0.1", "{x-request-id}o": 'a"b'}), "-"),
    ("an-id-with-a-final-newline", SafeAtoms({"h": "127.0.0.1", "{x-request-id}o": "abc\n"}), "-"),
    ("another-logger-class-a-plain-dict", {"h": "127.0.0.1"}, "-"),
]


@pytest.mark.parametrize(("args", "request_id"), [row[1:] for row in ACCESS_RECORDS],
                         ids=[row[0] for row in ACCESS_RECORDS])
def test_gunicorns_access_line_carries_the_id_the_portal_sent_and_never_fails(args: Any, request_id: str) -> None:
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, '%(h)s "GET /session" 200', (args,), None)
    assert RedactingFilter().filter(record)
    assert record.request_id == request_id  # type: ignore[attr-defined]
    assert record.getMessage() == '127.0.0.1 "GET /session" 200'


@pytest.mark.gunicorn
@pytest.mark.parametrize("bad", [{"GUNICORN_WORKERS": "many"}, {"MEDIAFLOW_CLIENT_SECRET": "a-secret-without-an-id"}],
                         ids=["unreadable-setting", "refused-setting"])
def test_log_format_json_in_the_env_file_makes_a_refusal_at_start_json(tmp_path: Path, bad: dict[str, str]) -> None:
    app_dir = stage_image(tmp_path / "image")
    (app_dir / ".env").write_text("LOG_FORMAT=json\n" + "".join(f"{name}={value}\n" for name, value in bad.items()))
    result = subprocess.run([str(Path(sys.executable).parent / "gunicorn"), *dockerfile_cmd()[1:]], cwd=app_dir,
                            env=env_with(GUNICORN_BIND=f"127.0.0.1:{PORTAL_PORTS[1]}"), capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["level"] for line in lines if "cannot start" in line["message"]] == ["error"]


@pytest.mark.gunicorn
def test_gunicorns_log_level_applies_to_its_own_lines(emulator: Emulator, tmp_path: Path) -> None:
    port = PORTAL_PORTS[1]
    settings = portal_settings(emulator, "portal-test", port, GUNICORN_WORKERS="1",
                               GUNICORN_CMD_ARGS="--log-level warning")
    portal = start_portal(tmp_path, port, settings)
    stop(portal.process)
    logs = portal.logs()
    # gunicorn's info lines are below --log-level warning; the access log is another log, and stays.
    assert "Starting gunicorn" not in logs and "Booting worker" not in logs, logs
    assert '"GET /healthz" 200' in logs
