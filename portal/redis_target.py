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
from collections.abc import Mapping
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


class SentinelsSilent(MasterNotFoundError):
    """No Sentinel answered (each one's failure kept, by address), so none could name the master."""

    def __init__(self, master: str, failures: list[tuple[str, BaseException]]) -> None:
        super().__init__(f"No Sentinel answered for {master!r}")
        self.failures = failures


class SteadySentinel(Sentinel):
    """redis-py's Sentinel client, which keeps to the master the Sentinels last named while none answers.

    redis-py asks the Sentinels on every new connection and fails it when none answers, although the
    master may serve well (Sentinels paused, restarting, cut off by a firewall); its discover_master
    also keeps no record of which Sentinel failed how. Here, once a master is known: one thread asks at
    a time (the others take the known master), a round that no Sentinel answers returns the known
    master and quiets the questions for SENTINEL_QUIET, and then one Sentinel is asked per round until
    one answers. A Sentinel that answers without naming a usable master (a failover in progress) is
    believed: no connection then goes to the old master.
    """

    def __init__(self, sentinels: list[tuple[str, int]], **options: Any) -> None:
        super().__init__(sentinels, **options)  # type: ignore[no-untyped-call]
        self._known: dict[str, tuple[str, int]] = {}
        self._asking = threading.Lock()
        self._quiet_until = 0.0
        # Set while no Sentinel answers, so the warning is logged once per silence, not per round.
        self._silent = False

    def discover_master(self, service_name: str) -> tuple[str, int]:
        known = self._known.get(service_name)
        if known is None:
            return self._ask(service_name, self.sentinels)
        if time.monotonic() < self._quiet_until or not self._asking.acquire(blocking=False):
            return known
        try:
            # While silent, one Sentinel a round, in turn: a request waits at most one timeout for the question.
            return self._ask(service_name, self.sentinels[:1] if self._silent else self.sentinels)
        except SentinelsSilent as error:
            self._quiet_until = time.monotonic() + SENTINEL_QUIET
            if self._silent:
                self.sentinels.append(self.sentinels.pop(0))
            else:
                self._silent = True
                log.warning("Redis Sentinel: %s; new connections go to the master they last named, %s, and "
                            "/readyz stays ready while it answers", describe(error), _address(known))
            return known
        finally:
            self._asking.release()

    def _ask(self, service_name: str, sentinels: list[redis.Redis]) -> tuple[str, int]:
        """The master the first Sentinel that answers names (as redis-py's discover_master), else an error."""
        failures: list[tuple[str, BaseException]] = []
        for sentinel in sentinels:
            try:
                masters: dict[str, Any] = sentinel.sentinel_masters()  # type: ignore[assignment]
            except (redis.ConnectionError, redis.TimeoutError) as error:
                kwargs = sentinel.connection_pool.connection_kwargs
                failures.append((_address((kwargs["host"], kwargs["port"])), error))
                continue
            if self._silent:
                self._silent = False
                log.info("A Sentinel answers again")
            state = masters.get(service_name)
            if not (state and self.check_master_state(state, service_name)):  # type: ignore[no-untyped-call]
                # It answered: a failover in progress, or no such master. Never the old master then.
                raise MasterNotFoundError(f"No master found for {service_name!r}")
            # The Sentinel that answered is asked first next time, as redis-py does.
            position = self.sentinels.index(sentinel)
            self.sentinels[0], self.sentinels[position] = sentinel, self.sentinels[0]
            address = (str(state["ip"]), int(state["port"]))
            self._known[service_name] = address
            return address
        raise SentinelsSilent(service_name, failures) from failures[-1][1] if failures else None


class RedisTarget:
    """Makes redis-py clients for the session store, each with a connection pool of its own."""

    def __init__(self, url: str, *, ca_cert: str | None = None, sentinels: list[tuple[str, int]] | None = None,
                 master: str | None = None, sentinel_password: str | None = None, timeout: float = 3.0) -> None:
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
                "retry": Retry(NoBackoff(), 0), **tls})

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RedisTarget:
        return cls(config["REDIS_URL"], ca_cert=config.get("REDIS_CA_CERT"),
                   sentinels=[sentinel_address(entry) for entry in config.get("REDIS_SENTINELS") or []],
                   master=config.get("REDIS_SENTINEL_MASTER"), sentinel_password=config.get("REDIS_SENTINEL_PASSWORD"),
                   timeout=config["MEDIAFLOW_CONNECT_TIMEOUT"])

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
    """Why no Sentinel answered: a certificate or a password first (each needs a fix), else each one's failure."""
    for address, failure in error.failures:
        cause: BaseException | None = failure
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return (f"TLS verification failed against the Sentinel at {address}: its certificate was not "
                        f"accepted ({cause.verify_message}); check REDIS_CA_CERT (it verifies the Sentinels too) and "
                        "the host names in REDIS_SENTINELS")
            if isinstance(cause, redis.AuthenticationError):
                return f"the Sentinel at {address} refused the password: check REDIS_SENTINEL_PASSWORD"
            cause = cause.__cause__ or cause.__context__
    each = ", ".join(f"{address} {failure.__class__.__name__}" for address, failure in error.failures)
    return f"no Sentinel answers ({each}): check that they run and REDIS_SENTINELS"


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
