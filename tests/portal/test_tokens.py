"""Refresh in before_request: when it is due, what is kept, and when the Mediaflow session ends."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry

from portal.mediaflow import MediaflowRefused, MediaflowUnavailable
from portal.metrics import REFRESH_OUTCOMES, Metrics
from portal.stores import FileTokenStore, RedisTokenStore
from portal.tokens import (
    LockTimeout,
    RefreshFailed,
    SessionEnded,
    StoreUnavailable,
    TokenService,
    TokenSet,
    TokenStore,
)
from tests.conftest import FakeClock, RedisServer
from tests.support import Emulator, portal_login


@pytest.mark.parametrize(
    ("lifetime", "left", "leeway", "due"),
    [(3600, 3000, 60, False), (3600, 59, 60, True), (3600, 61, 60, False),
     (4, 2.5, 60, False), (4, 1.9, 60, True),   # never more than half the lifetime
     (120, 59, 60, True), (120, 61, 60, False), (3600, -5, 60, True), (3600, 10, 0, False)],
)
def test_refresh_is_due_within_the_leeway_capped_at_half_the_lifetime(lifetime: int, left: float, leeway: float,
                                                                      due: bool) -> None:
    tokens = TokenSet("a", "r", expires_at=1000 + left, lifetime=lifetime)
    assert tokens.is_due(leeway, now=1000) is due


@pytest.mark.parametrize(("answer", "kept"), [({}, "old"), ({"refresh_token": None}, "old"),
                                               ({"refresh_token": ""}, "old"), ({"refresh_token": "new"}, "new")])
def test_a_refresh_keeps_the_old_refresh_token_unless_a_new_one_is_given(answer: dict[str, Any], kept: str) -> None:
    tokens = TokenSet("a", "old", expires_at=10, lifetime=10)
    fresh = tokens.refreshed({"access_token": "b", "expires_in": 60, **answer}, now=5)
    assert (fresh.refresh_token, fresh.access_token, fresh.expires_at, fresh.refreshed_at) == (kept, "b", 65, 5)


def session_status(client: Any) -> dict[str, Any]:
    response = client.get("/session")
    assert response.status_code == 200, response.text
    return dict(response.json["tokens"])


@pytest.mark.parametrize("client_id", ["short", "empty-refresh", "rotating"])
def test_expiring_token_is_refreshed_before_the_request_and_the_refresh_token_kept(
    make_app: Callable[..., Flask], emulator: Emulator, backend: str, client_id: str, clock: FakeClock
) -> None:
    client = make_app(client_id, backend=backend, clock=clock).test_client()
    portal_login(client)
    assert session_status(client)["last_refreshed"] is None
    for round_ in (1, 2):
        clock.advance(2.1)  # lifetime 4 s: due with less than 2 s left
        status = session_status(client)
        assert status["last_refreshed"] is not None
        assert status["expires_in"] >= 3
        assert status["refresh_token_held"] is True
        assert emulator.refreshes() == round_
    assert "Welcome, Demo User" in client.get("/").text
    refresh = emulator.stats()["recent_token_requests"][-1]
    assert refresh["fields"] == ["client_id", "client_secret", "grant_type", "refresh_token"]
    assert emulator.stats()["reuse_detected"] == 0


def test_no_refresh_token_ends_the_session_politely_once_expired(make_app: Callable[..., Flask], backend: str,
                                                                 emulator: Emulator, clock: FakeClock) -> None:
    client = make_app("no-refresh", backend=backend, clock=clock).test_client()
    portal_login(client)
    clock.advance(2.1)
    assert session_status(client)["refresh_token_held"] is False  # still valid: served as is
    clock.advance(2.1)
    page = client.get("/account")
    assert page.status_code == 401
    assert "Your Mediaflow session has ended" in page.text
    assert 'href="/login?next=/account"' in page.text
    assert emulator.refreshes() == 0
    assert client.get("/session").status_code == 302


def test_refused_refresh_ends_the_session_and_offers_to_come_back(make_app: Callable[..., Flask], backend: str,
                                                                  emulator: Emulator, clock: FakeClock) -> None:
    client = make_app("short", backend=backend, clock=clock).test_client()
    portal_login(client, next_url="/account")
    clock.advance(2.1)
    emulator.fault(endpoint="token", kind="oauth_error", error="invalid_grant")
    page = client.get("/account")
    assert page.status_code == 401
    assert "log in again" in page.text.lower()
    login = client.get("/login?next=/account")
    assert login.status_code == 302
    assert client.get("/").text.count("Log in with Mediaflow") == 1


def test_a_corrupt_stored_token_set_ends_the_session_politely(make_app: Callable[..., Flask], backend: str,
                                                               clock: FakeClock) -> None:
    app = make_app("short", backend=backend, clock=clock)
    client = app.test_client()
    portal_login(client)
    with client.session_transaction() as session:
        key = session["tokens_key"]
    if app.config["SESSION_BACKEND"] == "redis":
        app.config["SESSION_REDIS"].set(f"mediaflow:tokens:{key}", b"\x00not json")
    else:
        name = hashlib.sha256(key.encode()).hexdigest() + ".json"  # the store names files by the key's hash
        path = Path(app.config["SESSION_FILE_DIR"]) / "tokens" / name
        assert path.exists()
        path.write_bytes(b"{truncated \xff\xfe")
    clock.advance(2.1)  # due: the worker's copy is not trusted, the store is read
    page = client.get("/account")
    assert page.status_code == 401 and "Your Mediaflow session has ended" in page.text
    assert client.get("/session").status_code == 302


def test_home_calls_no_api_and_an_api_failure_on_account_degrades_to_a_message(client: Any,
                                                                              emulator: Emulator) -> None:
    portal_login(client)
    calls = emulator.stats()["api"]
    assert "Welcome, Demo User" in client.get("/").text  # the name was read at login
    assert emulator.stats()["api"] == calls
    emulator.fault(endpoint="api", kind="status", status=500)
    page = client.get("/account")
    assert page.status_code == 200
    assert "You are still logged in" in page.text
    assert "Welcome, Demo User" in client.get("/").text


class Mediaflow:
    """The refresh call a TokenService makes, answering from a script; counts its calls."""

    def __init__(self, *answers: dict[str, Any] | Exception, wait: float = 0.0) -> None:
        self.answers = list(answers)
        self.wait = wait
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, refresh_token: str) -> dict[str, Any]:
        with self.lock:
            self.calls += 1
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        time.sleep(self.wait)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture(params=["filesystem", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TokenStore:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.client.flushdb()
        return RedisTokenStore(server.client)
    return FileTokenStore(tmp_path / "tokens")


def service_with(store: TokenStore, mediaflow: Mediaflow, clock: FakeClock) -> tuple[TokenService, str]:
    """A token service on a real store, whose one session holds a token set of 100 s."""
    service = TokenService(store, leeway=60, lock_timeout=2, ttl=600, refresh=mediaflow, clock=clock)
    key = service.start({"access_token": "first", "refresh_token": "r", "expires_in": 100})
    return service, key


FRESH = {"access_token": "fresh", "expires_in": 100}
DOWN = MediaflowUnavailable("Mediaflow's token endpoint did not answer in time")


def test_a_token_that_is_not_due_is_served_without_a_store_read_or_a_refresh(store: TokenStore,
                                                                             clock: FakeClock) -> None:
    service, key = service_with(store, Mediaflow(FRESH), clock)
    assert service.fresh(key).access_token == "first"
    store.delete(key)  # the worker's copy is enough while the token is not due
    assert service.fresh(key).access_token == "first"
    clock.advance(51)  # due (less than half of 100 s left): the store is read again
    with pytest.raises(SessionEnded):
        service.fresh(key)


def test_failed_refreshes_back_off_then_fail_after_expiry_and_recover(store: TokenStore, clock: FakeClock) -> None:
    mediaflow = Mediaflow(DOWN, DOWN, DOWN, FRESH)
    service, key = service_with(store, mediaflow, clock)
    locks = 0
    take_lock = store.lock

    def counted_lock(key: str, timeout: float) -> Any:
        nonlocal locks
        locks += 1
        return take_lock(key, timeout)

    store.lock = counted_lock  # type: ignore[method-assign]
    clock.advance(51)
    schedule = []
    for _ in range(3):
        assert service.fresh(key).access_token == "first"  # still valid: served while refresh fails
        schedule.append(store.get(key).retry_at - clock())  # type: ignore[union-attr]
        for _ in range(5):
            clock.advance(0.5)
            assert service.fresh(key).access_token == "first"  # backing off: no call, and no lock
        clock.advance(schedule[-1] - 2.5)
    assert schedule == [5, 10, 20] and mediaflow.calls == 3 and locks == 3
    clock.advance(100)  # expired: the next failure is the caller's to show ("try again")
    mediaflow.answers = [DOWN, FRESH]
    with pytest.raises(RefreshFailed):
        service.fresh(key)
    assert service.fresh(key).access_token == "fresh"  # expired tokens retry at once: Mediaflow is back


def test_final_refusal_ends_the_session(store: TokenStore, clock: FakeClock) -> None:
    service, key = service_with(store, Mediaflow(MediaflowRefused("invalid_grant")), clock)
    clock.advance(51)
    with pytest.raises(SessionEnded):
        service.fresh(key)


def test_requests_that_waited_for_a_refused_refresh_do_not_try_the_same_token_again(store: TokenStore,
                                                                                      clock: FakeClock) -> None:
    # Refused once, then (were it asked again with the same refresh token) a token.
    mediaflow = Mediaflow(MediaflowRefused("invalid_grant"), FRESH, wait=0.2)
    service, key = service_with(store, mediaflow, clock)
    clock.advance(51)

    def attempt(_: int) -> tuple[str, bool]:
        try:
            return service.fresh(key).access_token, False
        except SessionEnded as ended:
            # As auth does: a request the token service did not end the session for ends it itself.
            return ended.cause, service.end(key) if ended.first is None else ended.first

    with ThreadPoolExecutor(8) as pool:
        ends = list(pool.map(attempt, range(8)))
    assert mediaflow.calls == 1
    assert {cause for cause, _ in ends} <= {"refresh_refused", "token_set_missing"}
    # One of them ended the session: the one that saw why (the audit trail's cause).
    assert [cause for cause, first in ends if first] == ["refresh_refused"]


def test_a_request_that_finds_a_refused_set_missing_never_wins_the_end(store: TokenStore, clock: FakeClock,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic: another request ends the session the moment the refused set is deleted."""
    service, key = service_with(store, Mediaflow(MediaflowRefused("invalid_grant")), clock)
    others: list[bool] = []
    delete = store.delete

    def delete_then_another_request_ends(name: str) -> None:
        delete(name)
        monkeypatch.setattr(store, "delete", delete)
        others.append(service.end(name))  # it finds the set missing, and tries to end the session

    monkeypatch.setattr(store, "delete", delete_then_another_request_ends)
    clock.advance(51)
    with pytest.raises(SessionEnded) as ended:
        service.fresh(key)
    assert (ended.value.cause, ended.value.first) == ("refresh_refused", True)
    assert others == [False]


def test_an_end_whose_delete_fails_is_still_the_one_end(store: TokenStore, clock: FakeClock,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the end is claimed, a store that fails to delete the set must not leave the session unended forever."""
    service, key = service_with(store, Mediaflow(MediaflowRefused("invalid_grant")), clock)
    delete = store.delete

    def fails_once(name: str) -> None:
        monkeypatch.setattr(store, "delete", delete)
        raise StoreUnavailable("the session store (Redis) did not answer in time")

    monkeypatch.setattr(store, "delete", fails_once)
    clock.advance(51)
    with pytest.raises(SessionEnded) as ended:
        service.fresh(key)
    assert (ended.value.cause, ended.value.first) == ("refresh_refused", True)
    # A later request that still finds the set refreshes in vain, and is not a second end.
    with pytest.raises(SessionEnded) as again:
        service.fresh(key)
    assert again.value.first is False


def test_requests_of_one_session_at_once_refresh_once_and_all_get_the_new_token(store: TokenStore,
                                                                                 clock: FakeClock) -> None:
    mediaflow = Mediaflow(FRESH, wait=0.2)
    service, key = service_with(store, mediaflow, clock)
    clock.advance(51)
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda _: service.fresh(key).access_token, range(16)))
    assert got == ["fresh"] * 16 and mediaflow.calls == 1


@pytest.mark.parametrize(
    ("answer", "rejected", "outcome", "calls"),
    [(FRESH, "first", "fresh", 1),                      # the stored token was rejected: refreshed at once
     (FRESH, "older", "first", 0),                      # another request refreshed already: its token is used
     (MediaflowRefused("invalid_grant"), "first", SessionEnded, 1),
     (DOWN, "first", RefreshFailed, 1)],                # Mediaflow down: a 503 page, the session is kept
    ids=["refreshes", "already-refreshed", "refused", "down"],
)
def test_a_token_mediaflow_rejected_before_expiry_is_renewed_once(
    store: TokenStore, clock: FakeClock, answer: Any, rejected: str, outcome: Any, calls: int
) -> None:
    mediaflow = Mediaflow(answer)
    service, key = service_with(store, mediaflow, clock)
    if isinstance(outcome, str):
        assert service.renew(key, rejected).access_token == outcome
        assert service.fresh(key).access_token == outcome  # the worker's copy follows
    else:
        with pytest.raises(outcome):
            service.renew(key, rejected)
    assert mediaflow.calls == calls


def test_after_a_failed_renew_the_next_rejections_wait_out_the_backoff(store: TokenStore, clock: FakeClock) -> None:
    mediaflow = Mediaflow(DOWN, FRESH)
    service, key = service_with(store, mediaflow, clock)
    with pytest.raises(RefreshFailed):
        service.renew(key, "first")
    clock.advance(1)
    with pytest.raises(RefreshFailed):
        service.renew(key, "first")  # backing off: Mediaflow is not asked again
    assert mediaflow.calls == 1
    clock.advance(5)
    assert service.renew(key, "first").access_token == "fresh"
    assert mediaflow.calls == 2


def test_requests_that_all_saw_a_rejected_token_renew_it_once(store: TokenStore, clock: FakeClock) -> None:
    mediaflow = Mediaflow(FRESH, wait=0.2)
    service, key = service_with(store, mediaflow, clock)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: service.renew(key, "first").access_token, range(8)))
    assert got == ["fresh"] * 8 and mediaflow.calls == 1


def counted(service: TokenService) -> CollectorRegistry:
    """Give the service its own metrics; the registry reads them."""
    registry = CollectorRegistry()
    service.metrics = Metrics(registry)
    return registry


def outcomes(registry: CollectorRegistry) -> dict[str, float]:
    shown = {outcome: registry.get_sample_value("mediaflow_portal_token_refreshes_total", {"outcome": outcome})
             for outcome in REFRESH_OUTCOMES}
    return {outcome: count for outcome, count in shown.items() if count}


@pytest.mark.parametrize(
    ("answer", "rejected", "counts"),
    [(FRESH, None, {"ok": 1}),
     (DOWN, None, {"failed_kept": 1}),
     (MediaflowRefused("invalid_grant"), None, {"ended_session": 1}),
     (MediaflowRefused("invalid_request"), None, {"failed_kept": 1}),  # Mediaflow misbehaving: the session is kept
     (FRESH, "first", {"ok": 1}),                                       # renew() of the rejected token
     (FRESH, "older", {"waited": 1})],                                  # renew() after another request renewed
    ids=["ok", "down", "refused", "odd-error", "renewed", "renewed-elsewhere"],
)
def test_each_due_refresh_is_counted_by_outcome_with_its_wait_for_the_lock(
        store: TokenStore, clock: FakeClock, answer: Any, rejected: str | None, counts: dict[str, int]) -> None:
    service, key = service_with(store, Mediaflow(answer), clock)
    registry = counted(service)
    clock.advance(51)
    try:
        service.renew(key, rejected) if rejected else service.fresh(key)
    except SessionEnded as ended:
        assert ended.cause == "refresh_refused"
    assert outcomes(registry) == counts
    assert registry.get_sample_value("mediaflow_portal_refresh_lock_wait_seconds_count") == 1


def test_requests_that_waited_for_anothers_refresh_count_as_waited(store: TokenStore, clock: FakeClock) -> None:
    service, key = service_with(store, Mediaflow(FRESH, wait=0.2), clock)
    registry = counted(service)
    clock.advance(51)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: service.fresh(key), range(16)))
    counts = outcomes(registry)
    waits = registry.get_sample_value("mediaflow_portal_refresh_lock_wait_seconds_count")
    # One refresh; those that queued for the lock used its token (a late one may have read it without the lock).
    assert counts["ok"] == 1 and counts.get("waited", 0) >= 1 and waits == 1 + counts["waited"]
    assert set(counts) == {"ok", "waited"}
    slow = registry.get_sample_value("mediaflow_portal_refresh_lock_wait_seconds_bucket", {"le": "0.1"})
    assert slow is not None and waits - slow >= 1  # someone waited out the 0.2 s refresh


def test_a_rejected_token_without_a_refresh_token_ends_the_session(store: TokenStore, clock: FakeClock) -> None:
    service = TokenService(store, leeway=60, lock_timeout=2, ttl=600, refresh=Mediaflow(FRESH), clock=clock)
    key = service.start({"access_token": "only", "expires_in": 100})
    with pytest.raises(SessionEnded):
        service.renew(key, "only")


def test_a_refresh_lock_held_too_long_serves_a_valid_token_and_times_out_an_expired_one(store: TokenStore,
                                                                                       clock: FakeClock) -> None:
    service, key = service_with(store, Mediaflow(FRESH), clock)
    service.lock_timeout = 0.2
    clock.advance(51)  # due, still valid
    with store.lock(key, timeout=5):
        assert service.fresh(key).access_token == "first"
        clock.advance(50)  # expired
        with pytest.raises(LockTimeout):
            service.fresh(key)


def test_a_refresh_lock_timeout_shows_the_mediaflow_page_and_keeps_the_session(
    make_app: Callable[..., Flask], backend: str, clock: FakeClock
) -> None:
    app = make_app("short", backend=backend, clock=clock)
    client = app.test_client()
    portal_login(client)
    with client.session_transaction() as session:
        key = session["tokens_key"]
    tokens = app.extensions["mediaflow_tokens"]
    tokens.lock_timeout = 0.2
    with tokens.store.lock(key, timeout=5):  # another request's refresh, stuck on a slow Mediaflow
        clock.advance(2.1)
        assert client.get("/session").status_code == 200  # due but still valid: served
        clock.advance(2.1)
        page = client.get("/account")  # expired: nothing to serve until the refresh is done
    assert page.status_code == 503 and "Mediaflow is not answering right now" in page.text
    assert "session store" not in page.text
    assert client.get("/session").status_code == 200


def test_a_tokens_lifetime_runs_from_when_it_arrived_not_from_after_the_users_name(make_app: Callable[..., Flask],
                                                                                   emulator: Emulator) -> None:
    client = make_app("short").test_client()
    emulator.fault(endpoint="api", kind="delay", delay=1.5)  # GET /me at the callback is slow
    portal_login(client)
    assert session_status(client)["expires_in"] <= 2  # a 4-second token, 1.5 s of which went on /me
