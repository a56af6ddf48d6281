"""Which Redis holds the sessions: the one REDIS_URL names, or the master that Redis Sentinel names.

REDIS_URL always says how to talk to Redis: scheme (rediss:// for TLS), user, password, database and
redis-py's query options. With REDIS_SENTINELS it no longer says where: its host and port are not
used, and every new connection asks a Sentinel for the current master. TLS always verifies Redis's
and the Sentinels' certificates and host names, against REDIS_CA_CERT (or the URL's ssl_ca_certs) for
a private CA, else the system's CAs; config.py refuses a URL that turns the check off. A client
certificate in the URL (ssl_certfile, ssl_keyfile) is shown to both.

Sentinels are asked briefly (SENTINEL_TIMEOUT each), and while none answers, new connections go to
the master they last named (SteadySentinel): a paused or cut-off Sentinel must not stall the portal
while the master serves.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from .config import sentinel_address

log = logging.getLogger(__name__)

# Seconds to connect to one Sentinel, and for its answer (less when MEDIAFLOW_CONNECT_TIMEOUT is less). A
# Sentinel answers from memory: past this it is paused or cut off, and the next one is asked.
SENTINEL_TIMEOUT = 0.5
# After a round that no Sentinel answered, new connections go to the known master without asking for this
# long; then one Sentinel is asked at a time, so a request waits at most one SENTINEL_TIMEOUT for it.
SENTINEL_QUIET = 5.0
# A Sentinel that refuses the portal (password, TLS certificate) is logged as an error at most this often.
REFUSAL_LOG_EVERY = 60.0


class SentinelsSilent(MasterNotFoundError):
    """No Sentinel said anything about the master: each was silent or refused the portal (kept, by address)."""

    def __init__(self, master: str, failures: list[tuple[str, BaseException]]) -> None:
        super().__init__(f"No Sentinel answered for {master!r}")
        self.failures = failures


class SteadySentinel(Sentinel):
    """redis-py's Sentinel client, which keeps to the master the Sentinels last named while none answers.

    Of redis-py's Sentinel, only discover_master is overridden (and close, for the clients made here): it
    is the documented method a Sentinel connection pool calls for the master's address, and redis-py's
    fails every new connection when no Sentinel answers, although the master may serve well (Sentinels
    paused, restarting, cut off by a firewall), and keeps no record of which Sentinel failed how. Here
    each Sentinel is asked in turn, from the one that last named a master, and the first usable master
    named wins, as in redis-py. Only the options the portal uses are taken (no force_master_ip, no
    min_other_sentinels, no connection_kwargs: master_for gets those). Once a master is known, one thread
    asks at a time (the others take the known master); a round in which no Sentinel says anything
    returns the known master and quiets the questions for SENTINEL_QUIET, then one Sentinel is asked
    per round until one answers. Once the Sentinels that answer all say there is no usable master (a
    failover in progress), no new connection goes to the old master: the round forgets it, and the
    threads that come next wait for a round and share its answer.
    """

    def __init__(self, sentinels: list[tuple[str, int]], sentinel_kwargs: dict[str, Any],
                 on_question: Callable[[str], object] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        # The portal's own clients, one per Sentinel: redis-py's list and its order are left to redis-py.
        self._asked = [(_address(address), redis.Redis(*address, **sentinel_kwargs)) for address in sentinels]
        self._on_question = on_question or (lambda outcome: None)
        self._clock = clock
        # Held while asking. Guards what follows, as well as _known's writes.
        self._asking = threading.Lock()
        # The Sentinel asked first: the last one that named a master (or, while silent, the next in turn).
        self._next = 0
        self._known: dict[str, tuple[str, int]] = {}
        self._quiet_until = 0.0
        # Set while no Sentinel answers, so the warning is logged once per silence, not per round.
        self._silent = False
        self._refusal_logged_at = -REFUSAL_LOG_EVERY
        # Rounds asked so far, and how the last one failed: threads that waited for a round share its answer.
        self._rounds = 0
        self._failed: tuple[list[tuple[str, BaseException]], bool] | None = None

    def discover_master(self, service_name: str) -> tuple[str, int]:
        known = self._known.get(service_name)
        if known is None:
            return self._discover_first(service_name)
        if self._clock() < self._quiet_until or not self._asking.acquire(blocking=False):
            return known
        try:
            # While silent, one Sentinel a round, in turn: a request waits at most one timeout for the question.
            return self._ask(service_name, one=self._silent)
        except SentinelsSilent as error:
            self._quiet_until = self._clock() + SENTINEL_QUIET
            if self._silent:
                self._next = (self._next + 1) % len(self._asked)
            else:
                self._silent = True
                log.warning("Redis Sentinel: %s; new connections go to the master they last named, %s, and "
                            "/readyz stays ready while it answers", describe(error), _address(known))
            return known
        finally:
            self._asking.release()

    def _discover_first(self, service_name: str) -> tuple[str, int]:
        """The master, none known yet: one thread asks, and the threads that waited for it share its answer."""
        rounds_before = self._rounds
        with self._asking:
            known = self._known.get(service_name)
            if known is not None:
                return known
            if self._failed is not None and self._rounds > rounds_before:
                raise _failure(service_name, self._failed[0], silent=self._failed[1])
            return self._ask(service_name, one=False)

    def _ask(self, service_name: str, *, one: bool) -> tuple[str, int]:
        """The first usable master a Sentinel names, asking each in turn from _next; with the asking lock held.

        one: stop at the first Sentinel if it says nothing. MasterNotFoundError when those that answered
        name no usable master, SentinelsSilent when none answered.
        """
        count = len(self._asked)
        failures: list[tuple[str, BaseException]] = []
        answered = False
        try:
            for position in [(self._next + step) % count for step in range(count)]:
                address, sentinel = self._asked[position]
                try:
                    masters: dict[str, Any] = sentinel.sentinel_masters()  # type: ignore[assignment]
                except redis.RedisError as error:
                    self._on_question("refused" if _refusal(address, error) else "silent")
                    failures.append((address, error))
                    if one and not answered:
                        break
                    continue
                answered = True
                if self._silent:
                    self._silent = False
                    log.info("A Sentinel answers again")
                state = masters.get(service_name)
                # SENTINEL MASTERS's flags: a master, which this Sentinel sees up (neither s_down nor o_down).
                if state and state["is_master"] and not (state["is_sdown"] or state["is_odown"]):
                    self._on_question("master")
                    self._next = position
                    self._known[service_name] = (str(state["ip"]), int(state["port"]))
                    self._failed = None
                    return self._known[service_name]
                # It answered: down, a failover under way, or no such master. Another Sentinel may know better.
                self._on_question("no_master")
            if answered:
                # Sentinels that answer name no usable master: the old one is not handed out meanwhile, and
                # the threads that arrive go through _discover_first, where they wait for a round and share it.
                self._known.pop(service_name, None)
            self._failed = (failures, not answered)
            raise _failure(service_name, failures, silent=not answered)
        finally:
            self._rounds += 1
            self._log_refusals(failures)

    def _log_refusals(self, failures: list[tuple[str, BaseException]]) -> None:
        """An error line for a Sentinel that refused the portal (a setting to fix), at most every REFUSAL_LOG_EVERY."""
        refusals = [reason for reason in (_refusal(address, error) for address, error in failures) if reason]
        if refusals and self._clock() >= self._refusal_logged_at + REFUSAL_LOG_EVERY:
            self._refusal_logged_at = self._clock()
            log.error("Redis Sentinel: %s", "; ".join(refusals))

    def close(self) -> None:
        for _, sentinel in self._asked:
            sentinel.close()
        super().close()


def _failure(service_name: str, failures: list[tuple[str, BaseException]], *, silent: bool) -> MasterNotFoundError:
    """SentinelsSilent when no Sentinel answered, else redis-py's MasterNotFoundError."""
    if silent:
        return SentinelsSilent(service_name, failures)
    return MasterNotFoundError(f"No master found for {service_name!r}")


class RedisTarget:
    """Makes redis-py clients for the session store, each with a connection pool of its own."""

    def __init__(self, url: str, *, ca_cert: str | None = None, sentinels: list[tuple[str, int]] | None = None,
                 master: str | None = None, sentinel_password: str | None = None, timeout: float = 3.0,
                 on_sentinel_question: Callable[[str], object] | None = None) -> None:
        self.url = url
        self.ca_cert = ca_cert
        self.master = master
        self._sentinel: Sentinel | None = None
        if sentinels:
            tls = self._tls_options() if urlsplit(url).scheme == "rediss" else {}
            # No retries against one Sentinel: asking the next one is the retry.
            brief = min(timeout, SENTINEL_TIMEOUT)
            self._sentinel = SteadySentinel(sentinels, sentinel_kwargs={
                "socket_timeout": brief, "socket_connect_timeout": brief, "password": sentinel_password,
                "retry": Retry(NoBackoff(), 0), **tls}, on_question=on_sentinel_question)

    @classmethod
    def from_config(cls, config: Mapping[str, Any],
                    on_sentinel_question: Callable[[str], object] | None = None) -> RedisTarget:
        """The target the settings name; on_sentinel_question is told each Sentinel question's outcome."""
        return cls(config["REDIS_URL"], ca_cert=config.get("REDIS_CA_CERT"),
                   sentinels=[sentinel_address(entry) for entry in config.get("REDIS_SENTINELS") or []],
                   master=config.get("REDIS_SENTINEL_MASTER"), sentinel_password=config.get("REDIS_SENTINEL_PASSWORD"),
                   timeout=config["MEDIAFLOW_CONNECT_TIMEOUT"], on_sentinel_question=on_sentinel_question)

    def client(self, **options: Any) -> redis.Redis:
        """A client with these connection options, to REDIS_URL's server or to Sentinel's master."""
        if self._sentinel is None:
            extra = self._tls_options() if urlsplit(self.url).scheme == "rediss" else {}
            extra.pop("ssl", None)  # from_url reads it from the scheme
            return redis.Redis.from_url(self.url, **extra, **options)
        settings = parse_url(self.url)
        for name in ("host", "port", "connection_class"):
            settings.pop(name, None)
        if urlsplit(self.url).scheme == "rediss":
            settings.update(self._tls_options())
        master: redis.Redis = self._sentinel.master_for(self.master, **settings, **options)
        return master

    def _tls_options(self) -> dict[str, Any]:
        """TLS for Redis and its Sentinels: the certificate and its host name checked, whatever redis-py's defaults."""
        query = parse_url(self.url)
        options: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
        ca_cert = self.ca_cert or query.get("ssl_ca_certs")
        if ca_cert:
            options["ssl_ca_certs"] = ca_cert
        # A client certificate the URL names is shown to the Sentinels too.
        options.update({name: query[name] for name in ("ssl_certfile", "ssl_keyfile") if query.get(name)})
        return options

    @staticmethod
    def server(client: redis.Redis, *, ask: bool = False) -> tuple[str, int] | None:
        """The master a Sentinel client's connections go to (ask: a Sentinel first); None for REDIS_URL's server.

        Asking moves the client's idle connections to the master the Sentinel names.
        """
        pool = client.connection_pool
        if not isinstance(pool, SentinelConnectionPool):
            return None
        address: tuple[str, int] | None = pool.get_master_address() if ask else pool.master_address
        return address

    def close(self) -> None:
        """Close the connections to the Sentinels (each client closes its own)."""
        if self._sentinel is not None:
            self._sentinel.close()


def describe(error: BaseException, client: redis.Redis | None = None) -> str:
    """What went wrong talking to Redis, in words an operator can act on (which TLS peer, Sentinel), else its type.

    client: the client that failed, to name the server whose certificate was refused. Never a password.
    """
    client = client if isinstance(client, redis.Redis) else None
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, SentinelsSilent):
            return _silent(cause)
        if isinstance(cause, ssl.SSLCertVerificationError):
            master = RedisTarget.server(client) if client is not None else None
            if master is not None:
                return (f"TLS verification failed against the master Sentinel named, {_address(master)}: Redis's TLS "
                        f"certificate was not accepted ({cause.verify_message}); check REDIS_CA_CERT, and that the "
                        "certificate names the address the Sentinels announce")
            return (f"Redis's TLS certificate was not accepted{_at(client)} ({cause.verify_message}): check "
                    "REDIS_CA_CERT and the host name in REDIS_URL")
        if isinstance(cause, MasterNotFoundError):
            # Not redis-py's text: it holds each Sentinel connection's whole repr.
            return "no Sentinel names a master: a failover in progress, or a wrong REDIS_SENTINEL_MASTER"
        cause = cause.__cause__ or cause.__context__
    return error.__class__.__name__


def _silent(error: SentinelsSilent) -> str:
    """Why no Sentinel answered: a refusal first (a setting to fix), else each one's failure."""
    for address, failure in error.failures:
        refusal = _refusal(address, failure)
        if refusal:
            return refusal
    each = ", ".join(f"{address} {failure.__class__.__name__}" for address, failure in error.failures)
    return f"no Sentinel answers ({each}): check that they run and REDIS_SENTINELS"


def _refusal(address: str, error: BaseException) -> str | None:
    """How the Sentinel at address refused the portal (a password, a certificate, an error answer), or None for
    silence (no connection, a timeout, a connection cut): the first needs a setting fixed, the second may pass."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (f"TLS verification failed against the Sentinel at {address}: its certificate was not "
                    f"accepted ({cause.verify_message}); check REDIS_CA_CERT (it verifies the Sentinels too) and "
                    "the host names in REDIS_SENTINELS")
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLEOFError):
            return f"the TLS handshake with the Sentinel at {address} failed ({cause.reason}): check its TLS settings"
        if isinstance(cause, redis.AuthenticationError):
            # Not "password: …", which the log's redaction would take for a secret.
            return (f"the Sentinel at {address} refused REDIS_SENTINEL_PASSWORD (wrong, or not set where it asks "
                    "for one)")
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
        return None
    # It answered, with an error: no permission (ACL), or not a Sentinel at all.
    return f"the Sentinel at {address} answered with an error ({error.__class__.__name__}): check REDIS_SENTINELS"


def _address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _at(client: redis.Redis | None) -> str:
    """The " at host:port" of REDIS_URL's server in a message (nothing for a unix socket, which has no TLS)."""
    kwargs = client.connection_pool.connection_kwargs if client is not None else {}
    return f" at {_address((kwargs['host'], kwargs['port']))}" if kwargs.get("host") else ""


def check_at_start(config: Mapping[str, Any]) -> str | None:
    """Why the Redis of SESSION_BACKEND=redis does not answer a PING just now, or None; asked once, no retries."""
    if config["SESSION_BACKEND"] != "redis":
        return None
    target = RedisTarget.from_config(config)
    timeout = config["MEDIAFLOW_CONNECT_TIMEOUT"]
    client = target.client(socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except redis.RedisError as error:
        return describe(error, client)
    finally:
        client.close()
        target.close()
    return None
