"""Prometheus metrics, one family (mediaflow_portal_…), served at /metrics to METRICS_ALLOW_FROM only.

Under gunicorn, gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a folder it empties at start:
prometheus_client then keeps each worker's numbers in files there, /metrics adds them up, and the
files of a worker that died still count. Without it (flask run, tests) each app counts on its own.
With METRICS_PORT, gunicorn's master serves them on that port (serve_from_master), and the public
/metrics is the unknown path's 404 for everyone.
Labels hold fixed words, route templates and status codes: never a path, an id, a user or a token.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from flask import Flask, current_app, request
from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app, multiprocess, start_http_server

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PATH = "/metrics"
# The route label of a request that matched no route (404, 405, an untrusted host): never its path.
UNMATCHED = "(unmatched)"
# Where the before_request hook leaves the route template for the middleware.
ROUTE_KEY = "portal.route"

LOGIN_OUTCOMES = ("ok", "denied", "state_error", "provider_error", "refused", "unavailable", "error")
REFRESH_OUTCOMES = ("ok", "waited", "failed_kept", "ended_session")
END_REASONS = ("logout", "timeout", "mediaflow", "refused")
# How a question to one Sentinel ended (portal/redis_target.py): it named a usable master; it answered that it knows
# none (down, a failover under way, an unknown name); it refused the portal (password, TLS, an error); no answer.
SENTINEL_OUTCOMES = ("master", "no_master", "refused", "silent")
# Mediaflow's endpoints by a fixed name (ids as {id}, see api._name); any other is "other".
API_ENDPOINTS = {
    "/me": "me",
    "/foldertree": "foldertree",
    "/folder/{id}/files": "folder_files",
    "/file/{id}": "file",
    "/file/{id}/checkpermissions": "file_permissions",
    "/file/{id}/license": "file_license",
    "/file/{id}/downloads/{id}": "file_download",
    "/formats": "formats",
    "/search/file": "search",
}


class Metrics:
    """The portal's counters and histograms, on one registry; one per app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(f"mediaflow_portal_{name}", documentation, labels, registry=registry)

        def histogram(name: str, documentation: str, labels: Sequence[str] = ()) -> Histogram:
            return Histogram(f"mediaflow_portal_{name}", documentation, labels, registry=registry)

        self.requests = counter("requests", "HTTP requests answered, by route template and status",
                                ("route", "status"))
        self.request_duration = histogram("request_duration_seconds", "Time to answer a request, by route template",
                                          ("route",))
        self.logins = counter("logins", "Answers of /callback, by outcome", ("outcome",))
        self.refreshes = counter("token_refreshes", "Token refreshes that were due, by outcome", ("outcome",))
        self.refresh_lock_wait = histogram("refresh_lock_wait_seconds",
                                           "Time a request waited for its session's refresh lock")
        self.mediaflow_requests = counter("mediaflow_requests", "Calls to Mediaflow, by endpoint and HTTP status "
                                          "(timeout, unreachable: no answer; too_large: an answer over 8 MB)",
                                          ("endpoint", "status"))
        self.mediaflow_duration = histogram("mediaflow_request_duration_seconds",
                                            "Time Mediaflow took to answer, by endpoint", ("endpoint",))
        self.store_errors = counter("session_store_errors", "Requests the session store failed (503), and failed "
                                    "/readyz checks")
        self.sessions_started = counter("sessions_started", "Sessions started by a login")
        self.sessions_ended = counter("sessions_ended", "Sessions ended, by reason", ("reason",))
        self.sentinel_questions = counter("sentinel_questions", "Questions to a Redis Sentinel for the master, by "
                                          "outcome", ("outcome",))
        # Every fixed label once, at 0: a rate() over a series that has not moved yet is 0, not missing.
        for outcome in LOGIN_OUTCOMES:
            self.logins.labels(outcome)
        for outcome in REFRESH_OUTCOMES:
            self.refreshes.labels(outcome)
        for reason in END_REASONS:
            self.sessions_ended.labels(reason)
        for outcome in SENTINEL_OUTCOMES:
            self.sentinel_questions.labels(outcome)

    def login(self, outcome: str) -> None:
        self.logins.labels(outcome).inc()

    def refresh(self, outcome: str) -> None:
        self.refreshes.labels(outcome).inc()

    def session_ended(self, reason: str) -> None:
        self.sessions_ended.labels(reason).inc()

    def sentinel_question(self, outcome: str) -> None:
        self.sentinel_questions.labels(outcome).inc()

    def mediaflow_call(self, endpoint: str, status: int | str, seconds: float) -> None:
        self.mediaflow_requests.labels(endpoint, str(status)).inc()
        self.mediaflow_duration.labels(endpoint).observe(seconds)


def api_endpoint(template: str) -> str:
    """The label of an API path template (/file/{id}/license → file_license)."""
    return API_ENDPOINTS.get(template, "other")


def multiprocess_dir() -> str | None:
    """The folder of prometheus_client's multiprocess mode (set by gunicorn.conf.py), or None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def init_app(app: Flask) -> Metrics:
    """Count this app's requests, and serve /metrics to the addresses in METRICS_ALLOW_FROM."""
    registry = CollectorRegistry(auto_describe=True)
    metrics = Metrics(registry)
    app.extensions["portal_metrics"] = metrics
    exposed = registry
    if multiprocess_dir():
        # The numbers of every worker, dead ones included, read from their files at each scrape.
        exposed = CollectorRegistry()
        multiprocess.MultiProcessCollector(exposed)  # type: ignore[no-untyped-call]

    @app.before_request
    def note_route() -> None:
        # Registered before every other hook, so it runs even when one of them answers early.
        rule = request.url_rule
        request.environ[ROUTE_KEY] = rule.rule if rule else UNMATCHED

    networks = [ipaddress.ip_network(network) for network in app.config["METRICS_ALLOW_FROM"]]
    # With METRICS_PORT, gunicorn's master serves them on their own port: the public one has no /metrics for anyone,
    # loopback included (a proxy on this host that adds no X-Forwarded-For passes everyone on as loopback).
    own_port = bool(app.config.get("METRICS_PORT"))
    app.wsgi_app = MetricsMiddleware(app.wsgi_app, metrics, make_wsgi_app(exposed),  # type: ignore[method-assign]
                                     lambda environ: not own_port and may_scrape(environ, networks))
    return metrics


def serve_from_master(host: str, port: int) -> None:
    """Serve every worker's metrics, summed, on host:port from this process (gunicorn's master), in a thread.

    prometheus_client's multiprocess mode as documented: a registry of its own holding only the
    MultiProcessCollector, which reads the workers' files at each scrape; start_http_server answers any
    path with them.
    """
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)


def current() -> Metrics:
    """The metrics of the current app."""
    metrics: Metrics = current_app.extensions["portal_metrics"]
    return metrics


class MetricsMiddleware:
    """WSGI middleware, outside everything else: time and count each request; answer /metrics to allowed peers.

    /metrics is answered here, before Flask, so it runs no hook (no session, no trusted-host check: a
    scraper addresses replicas by IP). A peer that may not scrape falls through to the portal, which
    has no such route: the same 404 as any unknown path.
    """

    def __init__(self, app: WSGIApplication, metrics: Metrics, exposition: WSGIApplication,
                 allowed: Callable[[WSGIEnvironment], bool]) -> None:
        self.app = app
        self.metrics = metrics
        self.exposition = exposition
        self.allowed = allowed
        # labels() checks and converts its values on every call: each route and status keeps its own pair.
        self.counted: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        status = "500"

        def start(line: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
                  ) -> Callable[[bytes], object]:
            nonlocal status
            status = line[:3]
            return start_response(line, headers, exc_info)

        try:
            if environ.get("PATH_INFO") == PATH and environ.get("REQUEST_METHOD") == "GET" and self.allowed(environ):
                environ[ROUTE_KEY] = PATH
                return self.exposition(environ, start)
            return self.app(environ, start)
        finally:
            route = environ.get(ROUTE_KEY, UNMATCHED)
            counted = self.counted.get((route, status))
            if counted is None:
                counted = self.counted[route, status] = (self.metrics.requests.labels(route, status),
                                                         self.metrics.request_duration.labels(route))
            requests, duration = counted
            requests.inc()
            duration.observe(time.perf_counter() - started)


def may_scrape(environ: WSGIEnvironment, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """True when every address the request came through is allowed: the TCP peer and each X-Forwarded-For entry.

    A proxy in front (nginx on the same host, a mesh sidecar) is the TCP peer of every request it
    passes on, so the peer alone would let the whole internet in through it; the forwarded entries
    name who is behind it. Entries a client adds itself can only refuse, never admit.
    """
    if "HTTP_FORWARDED" in environ:
        return False  # RFC 7239's header, which the portal does not read: who sent it is unknown
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    hops = [environ.get("REMOTE_ADDR", ""), *(forwarded.split(",") if forwarded else [])]
    return all(_in_networks(hop.strip(), networks) for hop in hops)


def _in_networks(text: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        address = ipaddress.ip_address(text.removeprefix("[").partition("]")[0] if text.startswith("[") else text)
    except ValueError:
        return False  # an empty peer (a unix socket), a port, a name: not an address on the list
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 from a socket bound to [::]
    return any(address in network for network in networks)
