"""Which Redis holds the sessions: the one REDIS_URL names, or the master that Redis Sentinel names.

REDIS_URL always says how to talk to Redis: scheme (rediss:// for TLS), user, password, database and
redis-py's query options. With REDIS_SENTINELS it no longer says where: its host and port are not
used, and every new connection asks a Sentinel for the current master. TLS always verifies Redis's
and the Sentinels' certificates and host names, against REDIS_CA_CERT (or the URL's ssl_ca_certs) for
a private CA, else the system's CAs; config.py refuses a URL that turns the check off. A client
certificate in the URL (ssl_certfile, ssl_keyfile) is shown to both.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from .config import sentinel_address


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
            self._sentinel = Sentinel(sentinels, sentinel_kwargs={
                "socket_timeout": timeout, "socket_connect_timeout": timeout, "password": sentinel_password,
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


def describe(error: BaseException) -> str:
    """What went wrong talking to Redis, in words an operator can act on (a certificate, Sentinel), else its type."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (f"Redis's TLS certificate was not accepted ({cause.verify_message}): "
                    "check REDIS_CA_CERT and the host name in REDIS_URL or Sentinel's answer")
        if isinstance(cause, MasterNotFoundError):
            # Not redis-py's text: it holds each Sentinel connection's whole repr.
            return ("no Sentinel names a master: a failover in progress, a wrong REDIS_SENTINEL_MASTER or "
                    "REDIS_SENTINEL_PASSWORD, or no Sentinel answers")
        cause = cause.__cause__ or cause.__context__
    return error.__class__.__name__


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
        return describe(error)
    finally:
        client.close()
        target.close()
    return None
