"""The gate: who may enter (allow-lists at the callback and on every request), /auth, /userinfo, next URLs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
import pytest
import requests
from flask import Flask, request

from portal import session_cache
from portal.gate import MAX_HEADER_LENGTH, header_value
from portal.sessions import SEEN_RESOLUTION
from tests.conftest import FakeClock
from tests.portal.test_metrics import scrape, value
from tests.support import Emulator, portal_login

# The emulator's test users (tests/support.py): demo and editor of customer 1, outsider of customer 2.
ALLOW_LISTS = [
    # settings, who enters, who is refused
    ({}, ["demo", "outsider"], []),
    ({"ALLOWED_CUSTOMER_IDS": ["1"]}, ["demo", "editor"], ["outsider"]),
    ({"ALLOWED_CUSTOMER_IDS": ["2", "7"]}, ["outsider"], ["demo"]),
    ({"ALLOWED_EMAIL_DOMAINS": ["example.com"]}, ["demo", "editor"], ["outsider"]),
    ({"ALLOWED_EMAIL_DOMAINS": ["Other.Example"]}, ["outsider"], ["demo"]),
    ({"ALLOWED_USERS": ["editor"]}, ["editor"], ["demo", "outsider"]),
    ({"ALLOWED_USERS": ["OLGA@other.example"]}, ["outsider"], ["demo"]),
    # Any list that names the user lets them in.
    ({"ALLOWED_CUSTOMER_IDS": ["1"], "ALLOWED_USERS": ["outsider"]}, ["demo", "outsider"], []),
    # A domain is the whole part after the @, not a suffix of it.
    ({"ALLOWED_EMAIL_DOMAINS": ["example"]}, [], ["demo"]),
]


def stored_token_sets(app: Flask) -> int:
    if app.config["SESSION_BACKEND"] == "redis":
        return len(app.config["SESSION_REDIS"].keys("mediaflow:tokens:*"))
    folder = Path(app.config["SESSION_FILE_DIR"]) / "tokens"
    return len(list(folder.glob("*.json"))) if folder.exists() else 0


@pytest.mark.parametrize(("settings", "admitted", "refused"), ALLOW_LISTS,
                         ids=["none-set", "customer", "other-customer", "domain", "domain-case", "user",
                              "user-by-email", "any-list", "domain-exact"])
def test_a_person_enters_only_when_a_list_that_is_set_names_them(make_app: Callable[..., Flask], backend: str,
                                                                 settings: dict[str, Any], admitted: list[str],
                                                                 refused: list[str]) -> None:
    app = make_app(backend=backend, **settings)
    for username in admitted:
        client = app.test_client()
        assert portal_login(client, username=username).status_code == 302
        assert client.get("/userinfo").json["username"] == username
    before = stored_token_sets(app)
    for username in refused:
        client = app.test_client()
        page = portal_login(client, username=username)
        assert page.status_code == 403
        assert "This portal is for another organisation" in page.text
        assert "Sign in as someone else" in page.text and 'href="/login"' in page.text
        assert client.get("/userinfo").status_code == 401
        assert client.get("/auth").status_code == 401
    assert stored_token_sets(app) == before


def test_a_refusal_names_the_account_and_is_logged_without_a_token(make_app: Callable[..., Flask],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app(ALLOWED_CUSTOMER_IDS=["1"])
    capsys.readouterr()
    page = portal_login(app.test_client(), username="outsider")
    assert page.status_code == 403
    assert "Olga Outsider" in page.text and "olga@other.example" in page.text
    out = capsys.readouterr().out
    refusals = [line.partition("portal.errors: ")[2] for line in out.splitlines() if "Login refused" in line]
    assert refusals == ["Login refused on /callback: user 3: customerId 2 is not named by ALLOWED_CUSTOMER_IDS"]
    assert "Login succeeded" not in out and "olga@" not in out


def test_with_an_allow_list_a_login_without_me_is_refused_not_let_in(make_app: Callable[..., Flask],
                                                                     emulator: Emulator) -> None:
    app = make_app(ALLOWED_CUSTOMER_IDS=["1"])
    client = app.test_client()
    emulator.fault(endpoint="api", kind="status", status=503)
    assert portal_login(client).status_code == 503
    assert client.get("/userinfo").status_code == 401
    assert stored_token_sets(app) == 0


@pytest.mark.parametrize(("later", "still_in"), [({"ALLOWED_CUSTOMER_IDS": ["1"]}, True),
                                                 ({"ALLOWED_CUSTOMER_IDS": ["2"]}, False),
                                                 ({"ALLOWED_USERS": ["editor"]}, False),
                                                 ({}, True)],
                         ids=["same", "other-customer", "other-user", "lists-removed"])
def test_a_session_started_under_older_lists_ends_when_they_no_longer_pass(
        make_app: Callable[..., Flask], backend: str, later: dict[str, Any], still_in: bool,
        emulator: Emulator) -> None:
    before = make_app(backend=backend, ALLOWED_CUSTOMER_IDS=["1"])
    # A restart with new settings: another app on the same store (built first: make_app empties Redis).
    after = make_app(backend=backend, **later)
    old = before.test_client()
    assert portal_login(old).status_code == 302
    new = after.test_client()
    name = before.config["SESSION_COOKIE_NAME"]
    new.set_cookie(name, old.get_cookie(name).value)  # type: ignore[union-attr]
    calls = emulator.stats()["api"].get("/1/me", 0)
    if still_in:
        # With Redis, the later ones are answered from the worker's copies (gate.KeptSessions): the lists still hold.
        assert [new.get("/auth").status_code for _ in range(3)] == [202] * 3
        return
    ended = new.get("/userinfo")
    assert ended.status_code == 401 and ended.json == {"error": "unauthorized"}
    assert [new.get("/auth").status_code for _ in range(3)] == [401] * 3
    assert stored_token_sets(after) == 0
    assert emulator.stats()["api"].get("/1/me", 0) == calls  # checked from the session, without asking Mediaflow


def test_a_page_of_a_session_the_lists_no_longer_pass_says_why(make_app: Callable[..., Flask]) -> None:
    before = make_app(ALLOWED_CUSTOMER_IDS=["1"])
    after = make_app(ALLOWED_CUSTOMER_IDS=["2"])
    old = before.test_client()
    portal_login(old)
    new = after.test_client()
    new.set_cookie("mediaflow_portal", old.get_cookie("mediaflow_portal").value)  # type: ignore[union-attr]
    page = new.get("/account")
    assert page.status_code == 401 and "now for another organisation" in page.text
    assert new.get("/account").status_code == 302  # ended: now simply logged out


def test_auth_answers_202_with_the_users_headers_and_401_without_a_session(client: Any) -> None:
    denied = client.get("/auth")
    assert denied.status_code == 401 and denied.text == "Unauthorized\n" and "Location" not in denied.headers
    portal_login(client)
    allowed = client.get("/auth")
    assert allowed.status_code == 202 and allowed.text == ""
    assert {k: v for k, v in allowed.headers if k.startswith("X-Auth-Request-")} == {
        "X-Auth-Request-User": "demo", "X-Auth-Request-Email": "demo@example.com",
        "X-Auth-Request-Name": "Demo User", "X-Auth-Request-Customer-Id": "1"}
    assert allowed.headers["Cache-Control"] == "no-store"
    assert client.get("/userinfo").json == {"id": 1, "username": "demo", "email": "demo@example.com",
                                            "name": "Demo User", "customerId": 1}


def test_auth_does_not_write_the_session(make_app: Callable[..., Flask], backend: str) -> None:
    client = make_app(backend=backend).test_client()
    portal_login(client)
    client.get("/")  # the idle-timeout mark was just written
    for _ in range(3):
        response = client.get("/auth")
        assert response.status_code == 202 and "Set-Cookie" not in response.headers


@pytest.mark.parametrize("passed", [True, False], ids=["GATE_PASS_ACCESS_TOKEN=true", "default"])
def test_the_access_token_goes_to_apps_only_when_asked_for(make_app: Callable[..., Flask], emulator: Emulator,
                                                           passed: bool) -> None:
    client = make_app(GATE_PASS_ACCESS_TOKEN=passed).test_client()
    portal_login(client)
    token = client.get("/auth").headers.get("X-Auth-Request-Access-Token")
    assert (token is not None) is passed
    if passed:
        me = requests.get(f"{emulator.url}/1/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert me.status_code == 200


def test_auth_refreshes_a_due_token_once_and_stays_202(make_app: Callable[..., Flask], emulator: Emulator,
                                                       clock: FakeClock) -> None:
    client = make_app("rotating-once", clock=clock).test_client()
    portal_login(client)
    clock.advance(3)  # within the leeway of a 4-second token
    assert [client.get("/auth").status_code for _ in range(3)] == [202, 202, 202]
    assert emulator.refreshes() == 1


@pytest.fixture
def steady_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies trusted for a minute after Redis last answered: which path answers must not hang on the machine's pace."""
    monkeypatch.setattr(session_cache, "TRUSTED_FOR", 60.0)


def counting_hooks(app: Flask) -> list[str]:
    """Each request that reaches Flask's hooks, by path: one answered around Flask (gate.KeptSessions) is not in it."""
    reached: list[str] = []
    # Flask calls URL value preprocessors before every before_request hook, so one that answers early is counted too.
    app.url_value_preprocessor(lambda endpoint, values: reached.append(request.path))
    return reached


@pytest.mark.usefixtures("steady_copies")
@pytest.mark.parametrize("passed", [False, True], ids=["default", "GATE_PASS_ACCESS_TOKEN=true"])
def test_a_kept_session_is_answered_as_flask_answers_it(make_app: Callable[..., Flask], passed: bool) -> None:
    # Built first: make_app empties Redis. The second app keeps no copies, so Flask answers all of its requests.
    kept_app = make_app(backend="redis", GATE_PASS_ACCESS_TOKEN=passed)
    plain_app = make_app(backend="redis", SESSION_REDIS_CACHE=False, GATE_PASS_ACCESS_TOKEN=passed)
    reached = counting_hooks(kept_app)
    kept, plain = kept_app.test_client(), plain_app.test_client()
    portal_login(kept)
    plain.set_cookie("mediaflow_portal", kept.get_cookie("mediaflow_portal").value)  # type: ignore[union-attr]
    reached.clear()
    kept.get("/auth")  # Flask's: this worker's copies of the record and the token set are made now
    answers = [kept.get("/auth"), plain.get("/auth")]
    assert reached == ["/auth"]
    by_flask = answers[1]
    assert by_flask.status_code == 202 and ("X-Auth-Request-Access-Token" in by_flask.headers) is passed

    def shown(response: Any) -> tuple[str, list[tuple[str, str]], bytes]:
        return response.status, [h for h in response.headers if h[0] != "X-Request-ID"], response.data

    assert shown(answers[0]) == shown(by_flask)
    # Counted under the gate's route, as Flask's answers are.
    assert value(scrape(kept), "mediaflow_portal_requests_total", route="/auth", status="202") == 2


def _rewrite_record(app: Flask, client: Any, user: dict[str, Any] | None = None, **values: Any) -> None:
    """Store the session's record again with these values and facts of the user, as someone who can write to
    Redis could (Redis tells the worker, which drops its copy)."""
    key = f"mediaflow:session:{client.get_cookie('mediaflow_portal').value}"
    redis = app.config["SESSION_REDIS"]
    record = msgspec.msgpack.decode(redis.get(key))
    record.update(values, user=record["user"] | (user or {}))
    redis.set(key, msgspec.msgpack.encode(record), keepttl=True)


def _busy_until_the_lifetime_is_over(app: Flask, client: Any, clock: FakeClock) -> None:
    clock.advance(SEEN_RESOLUTION + 1)
    # The first writes the idle mark (the session is in use), the second reads the record again: kept from here.
    assert [client.get("/auth").status_code for _ in range(2)] == [202, 202]
    clock.advance(app.config["SESSION_MAX_LIFETIME"] - SEEN_RESOLUTION)  # the mark is not due again yet


# Between two kept answers and three more /auth: what happens, settings, how many of the three Flask answers, statuses.
NOT_KEPT = [
    ("nothing", {}, lambda app, client, clock: None, 0, [202] * 3),
    # The first writes the mark, which drops the worker's copy; the second reads the record again; the third is kept.
    ("idle-mark-due", {}, lambda app, client, clock: clock.advance(SEEN_RESOLUTION + 1), 2, [202] * 3),
    ("lifetime-over-while-busy", {"SESSION_MAX_LIFETIME": 2 * SEEN_RESOLUTION}, _busy_until_the_lifetime_is_over, 3,
     [401] * 3),
    ("idle-too-long", {}, lambda app, client, clock: clock.advance(app.config["SESSION_IDLE_TIMEOUT"] + 1), 3,
     [401] * 3),
    ("record-deleted", {}, lambda app, client, clock: app.config["SESSION_REDIS"].delete(
        f"mediaflow:session:{client.get_cookie('mediaflow_portal').value}"), 3, [401] * 3),
    ("no-token-copy", {}, lambda app, client, clock: app.extensions["mediaflow_tokens"].forget(
        app.config["SESSION_REDIS"].keys("mediaflow:tokens:*")[0].decode().rpartition(":")[2]), 3, [401] * 3),
    ("no-identity", {}, lambda app, client, clock: _rewrite_record(app, client, {"id": None, "username": ""}), 3,
     [401] * 3),
    ("unsendable-username", {}, lambda app, client, clock: _rewrite_record(app, client, {"username": "demo\u200b"}), 3,
     [401] * 3),
    # Times that could never time out make the record unreadable: a new, empty session.
    ("endless-times", {}, lambda app, client, clock: _rewrite_record(app, client, login_at=float("nan"),
                                                                     seen_at=float("inf")), 3, [401] * 3),
    ("time-true", {}, lambda app, client, clock: _rewrite_record(app, client, login_at=True), 3, [401] * 3),
]


@pytest.mark.usefixtures("steady_copies")
@pytest.mark.parametrize(("settings", "act", "by_flask", "statuses"), [row[1:] for row in NOT_KEPT],
                         ids=[row[0] for row in NOT_KEPT])
def test_what_a_kept_answer_cannot_settle_goes_to_flask(make_app: Callable[..., Flask], clock: FakeClock,
                                                        settings: dict[str, Any],
                                                        act: Callable[[Flask, Any, FakeClock], None], by_flask: int,
                                                        statuses: list[int]) -> None:
    app = make_app(backend="redis", clock=clock, **{"SESSION_IDLE_TIMEOUT": 7200, **settings})
    reached = counting_hooks(app)
    client = app.test_client()
    portal_login(client)
    assert [client.get("/auth").status_code for _ in range(2)] == [202, 202]
    act(app, client, clock)
    reached.clear()
    assert [client.get("/auth").status_code for _ in range(3)] == statuses
    assert len(reached) == by_flask


# A request to a kept session: settings, how it differs from GET /auth from a trusted host, status, Flask answers it?
KEPT_REQUESTS = [
    ("plain", {}, {}, 202, False),
    ("cookie-not-utf-8", {}, {"cookie_before": "a=\xff; "}, 202, False),
    ("HEAD", {}, {"method": "HEAD"}, 202, True),
    ("untrusted-host", {}, {"headers": {"Host": "evil.example"}}, 400, True),
    ("untrusted-forwarded-host", {"TRUSTED_PROXY_COUNT": 1}, {"headers": {"X-Forwarded-Host": "evil.example"}}, 400,
     True),
    ("another-path", {}, {"path": "/auth/"}, 404, True),
]


@pytest.mark.usefixtures("steady_copies")
@pytest.mark.parametrize(("settings", "request_args", "status", "by_flask"), [row[1:] for row in KEPT_REQUESTS],
                         ids=[row[0] for row in KEPT_REQUESTS])
def test_only_a_get_of_the_gate_path_from_a_trusted_host_is_kept(make_app: Callable[..., Flask],
                                                                  settings: dict[str, Any],
                                                                  request_args: dict[str, Any], status: int,
                                                                  by_flask: bool) -> None:
    app = make_app(backend="redis", **settings)
    reached = counting_hooks(app)
    client = app.test_client()
    portal_login(client)
    client.get("/auth")
    reached.clear()
    cookie = request_args.pop("cookie_before", "") + f"mediaflow_portal={client.get_cookie('mediaflow_portal').value}"
    headers = {"Cookie": cookie, **request_args.pop("headers", {})}
    answer = app.test_client(use_cookies=False).open(**{"path": "/auth", "headers": headers, **request_args})
    assert answer.status_code == status
    assert len(reached) == by_flask


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/auth", 401), ("POST", "/auth", 405),
                                                       ("DELETE", "/userinfo", 405)])
def test_the_gates_failures_are_a_status_and_a_word_never_a_page(client: Any, method: str, path: str,
                                                                 status: int) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status and response.mimetype == "text/plain" and len(response.data) < 40


def test_the_gate_path_is_a_setting(make_app: Callable[..., Flask]) -> None:
    client = make_app(GATE_AUTH_PATH="/_gate/check").test_client()
    portal_login(client)
    assert client.get("/_gate/check").status_code == 202
    assert client.get("/auth").status_code == 404


def test_userinfo_without_a_session_is_401_json(client: Any) -> None:
    response = client.get("/userinfo")
    assert response.status_code == 401 and response.json == {"error": "unauthorized"}


HEADER_VALUES = [
    ("Demo User", "Demo User"),
    ("Demo\r\nX-Evil: 1", "DemoX-Evil: 1"),
    ("a\x00b\x7fc\x85d\u2028e", "abcde"),
    ("  spaced  ", "spaced"),
    ("x" * 1000, "x" * MAX_HEADER_LENGTH),
    (42, "42"),
    (None, ""),
    (True, ""),
    (["demo"], ""),
    ("Zoë 山田", "Zoë 山田".encode().decode("latin-1")),
]


@pytest.mark.parametrize(("value", "sent"), HEADER_VALUES)
def test_header_values_are_safe_for_http(value: Any, sent: str) -> None:
    assert header_value(value, MAX_HEADER_LENGTH) == sent


NEXT_URLS = [
    # next, where the callback sends the browser
    ("https://app.example.com/reports?id=7", "https://app.example.com/reports?id=7"),
    ("http://app.example.com:8080/", "http://app.example.com:8080/"),
    ("https://team.apps.example.com/", "https://team.apps.example.com/"),
    ("https://APP.example.com/", "https://app.example.com/"),
    ("https://evil.example/", "/"),
    ("https://app.example.com.evil.example/", "/"),
    ("https://app.example.com@evil.example/", "/"),
    ("https://evil.example\\@app.example.com/", "/"),
    ("https://evil.example%2F@app.example.com/", "/"),
    ("https://app%2eexample.com/", "/"),
    ("https://app.example.com:x/", "/"),
    ("https://apps.example.com/", "/"),
    ("//app.example.com/", "/"),
    ("ftp://app.example.com/", "/"),
    ("javascript://app.example.com/%0aalert(1)", "/"),
    ("https://app.example.com/%0d%0aSet-Cookie:x", "/"),
    ("https://app.example.com/" + "a" * 3000, "/"),
]


@pytest.mark.parametrize(("next_url", "landing"), NEXT_URLS)
def test_next_may_be_an_absolute_url_only_on_gate_hosts(make_app: Callable[..., Flask], next_url: str,
                                                        landing: str) -> None:
    client = make_app(GATE_ALLOWED_REDIRECT_HOSTS=["app.example.com", ".apps.example.com"]).test_client()
    assert portal_login(client, next_url=quote(next_url, safe="")).headers["Location"] == landing


def test_without_gate_hosts_an_absolute_next_is_ignored(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    assert portal_login(client, next_url=quote("https://app.example.com/", safe="")).headers["Location"] == "/"


def test_with_no_allow_list_the_start_up_log_says_everyone_may_enter(make_app: Callable[..., Flask],
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    make_app()
    make_app(ALLOWED_EMAIL_DOMAINS=["example.com"])
    said = [line.partition("app: ")[2] for line in capsys.readouterr().out.splitlines() if "may enter" in line]
    assert said == ["Allow-lists: none of ALLOWED_CUSTOMER_IDS, ALLOWED_EMAIL_DOMAINS, ALLOWED_USERS is set, "
                    "so every Mediaflow user of this client id may enter"]
