"""Settings from the environment (and .env), checked once at start."""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import secrets
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from dotenv import load_dotenv

# The emulator's built-in demo client; public by design, valid only against the emulator.
DEMO_CLIENT_ID = "mediaflow-portal-demo"
DEMO_CLIENT_SECRET = "demo-client-secret-not-for-production"  # noqa: S105 - public by design: demo only


class ConfigError(Exception):
    """One unusable setting; the message is one line that names the variable."""


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not 0 < value <= 120:
        raise ConfigError(f"{name}={raw!r} must be more than 0 and at most 120 seconds")
    return value


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not true or false")


@dataclass(frozen=True)
class Setting:
    """One setting of the configuration contract: README's table and .env.example list exactly these."""

    name: str
    parse: Callable[[str, str], Any]
    default: Any
    meaning: str


def _text(name: str, raw: str) -> str:
    return raw


def _hosts(name: str, raw: str) -> list[str]:
    return [host.strip() for host in raw.split(",") if host.strip()]


def _names(name: str, raw: str) -> list[str]:
    # Mediaflow's ids, domains and usernames compare without regard to case or surrounding spaces.
    return [item.strip().lower() for item in raw.split(",") if item.strip()]


SETTINGS = [
    Setting("MEDIAFLOW_CLIENT_ID", _text, None, "client id from Mediaflow"),
    Setting("MEDIAFLOW_CLIENT_SECRET", _text, None, "client secret; required with a client id, refused without one"),
    Setting("MEDIAFLOW_DEMO", _boolean, False,
            "allows demo mode (no client id) when gunicorn binds an address other than loopback"),
    Setting("MEDIAFLOW_REDIRECT_URI", _text, None, "the callback registered with Mediaflow"),
    Setting("MEDIAFLOW_AUTHORIZE_URL", _text, "https://login.mediaflowpro.com/authorize", "where the browser signs in"),
    Setting("MEDIAFLOW_TOKEN_URL", _text, "https://accounts.mediaflow.com/1/oauth2/token", "token endpoint"),
    Setting("MEDIAFLOW_API_BASE", _text, "https://api.mediaflow.com/1", "REST API base"),
    Setting("MEDIAFLOW_SCOPE", _text, None, "sent only when set"),
    Setting("MEDIAFLOW_REFRESH_LEEWAY", _integer, 60, "refresh this many seconds before expiry"),
    Setting("MEDIAFLOW_PKCE", _boolean, True, "PKCE with S256"),
    Setting("MEDIAFLOW_CONNECT_TIMEOUT", _seconds, 3.0, "seconds to connect, for every call to Mediaflow"),
    Setting("MEDIAFLOW_READ_TIMEOUT", _seconds, 5.0, "seconds to wait for an answer, for every call to Mediaflow"),
    Setting("MEDIAFLOW_EMULATOR_URL", _text, "http://127.0.0.1:5001", "the emulator, in demo mode"),
    Setting("MEDIAFLOW_EMULATOR_BROWSER_URL", _text, None, "the emulator as the browser reaches it, when that differs"),
    Setting("SECRET_KEY", _text, None, "signs CSRF tokens"),
    Setting("SESSION_BACKEND", _text, "filesystem", "where sessions live: `filesystem` (one host) or `redis`"),
    Setting("REDIS_URL", _text, None, "the Redis for `SESSION_BACKEND=redis`"),
    # Redis as companies run it (portal/redis_target.py): a private CA, Sentinel.
    Setting("REDIS_CA_CERT", _text, None, "PEM file of the CA that signed Redis's certificate"),
    Setting("REDIS_SENTINELS", _hosts, None, "Sentinels that name the master"),
    Setting("REDIS_SENTINEL_MASTER", _text, None, "the master's name at the Sentinels"),
    Setting("REDIS_SENTINEL_PASSWORD", _text, None, "the Sentinels' own password"),
    Setting("SESSION_REDIS_CACHE", _boolean, True, "each worker keeps the session records it read"),
    Setting("SESSION_FILE_DIR", _text, None, "folder of the filesystem backend"),
    Setting("SESSION_FILESYSTEM_ALLOW_WORKERS", _boolean, False,
            "allow the filesystem backend under several gunicorn workers"),
    # None means: Secure, except in demo mode, which serves plain http on loopback.
    Setting("SESSION_COOKIE_SECURE", _boolean, None, "the cookie's `Secure` flag"),
    Setting("SESSION_IDLE_TIMEOUT", _integer, 30 * 60, "seconds idle before a session ends"),
    Setting("SESSION_MAX_LIFETIME", _integer, 12 * 60 * 60, "seconds in all before a session ends"),
    Setting("TRUSTED_PROXY_COUNT", _integer, 0,
            "reverse proxies whose `X-Forwarded-*` and `X-Request-ID` headers are trusted"),
    Setting("TRUSTED_HOSTS", _hosts, None, "host names the portal answers to besides"),
    Setting("LOG_FORMAT", _text, "text", "`text` or `json`"),
    # portal/metrics.py: Prometheus scrapes each replica directly.
    Setting("METRICS_ALLOW_FROM", _hosts, ["127.0.0.1/32", "::1/128"],
            "addresses or networks that may read `/metrics`"),
    # Read by gunicorn.conf.py: its master serves the metrics of every worker on their own port.
    Setting("METRICS_PORT", _integer, None,
            "port on which gunicorn's master serves the metrics, summed over its workers"),
    Setting("METRICS_BIND_HOST", _text, "127.0.0.1", "address the metrics port listens on"),
    # Who may enter (portal/gate.py): a person passes if any list that is set names them; none set, everyone.
    Setting("ALLOWED_CUSTOMER_IDS", _names, None, "Mediaflow `customerId` values (from `/me`) whose users may enter"),
    Setting("ALLOWED_EMAIL_DOMAINS", _names, None,
            "e-mail domains (the whole part after `@`, any case) whose users may enter"),
    Setting("ALLOWED_USERS", _names, None, "usernames or e-mail addresses that may enter"),
    # The gate for other apps (nginx auth_request).
    Setting("GATE_AUTH_PATH", _text, "/auth", "the path nginx's `auth_request` asks"),
    Setting("GATE_PASS_ACCESS_TOKEN", _boolean, False, "adds `X-Auth-Request-Access-Token`"),
    Setting("GATE_ALLOWED_REDIRECT_HOSTS", _hosts, None, "hosts that `/login?next=` may send people back to"),
    Setting("SESSION_COOKIE_DOMAIN", _text, None, "share the session cookie with every subdomain of this domain"),
    # The media library (portal/library.py).
    Setting("LIBRARY_CACHE_SECONDS", _integer, 60,
            "seconds a session keeps its folder tree and the download formats; 0: ask Mediaflow every time"),
    Setting("MEDIAFLOW_PREVIEW_ORIGINS", _hosts, None,
            "origins that serve Mediaflow's previews, the only ones images may load from"),
    # Read by gunicorn.conf.py.
    Setting("GUNICORN_BIND", _text, "0.0.0.0:8000", "address gunicorn serves on"),
    Setting("GUNICORN_WORKERS", _integer, 2, "worker processes"),
    Setting("GUNICORN_THREADS", _integer, 4, "threads per worker"),
    Setting("GUNICORN_TIMEOUT", _integer, 30, "seconds before a stuck worker is restarted"),
    Setting("GUNICORN_GRACEFUL_TIMEOUT", _integer, 30, "seconds allowed for a graceful stop"),
    Setting("GUNICORN_CERTFILE", _text, None, "PEM certificate (chain): gunicorn serves https itself"),
    Setting("GUNICORN_KEYFILE", _text, None, "PEM key of `GUNICORN_CERTFILE`"),
]
DEFAULTS: dict[str, Any] = {setting.name: setting.default for setting in SETTINGS}


LOOPBACK_HOSTS = ["localhost", "127.0.0.1"]
# A host name, in ASCII labels.
HOST_NAME = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")
# In a host setting, ".domain" also names its subdomains: never "." or ".com" alone, which would match any site.
HOST_SETTING = re.compile(rf"{HOST_NAME.pattern}|\.[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
# The portal's own pages and endpoints, which GATE_AUTH_PATH must not take over.
PORTAL_PATHS = ("/login", "/callback", "/logout", "/account", "/session", "/healthz", "/readyz", "/userinfo",
                "/library", "/search", "/metrics")
MAX_LIBRARY_CACHE_SECONDS = 3600
# Where Mediaflow serves previews is not documented: its own hosts, so any https subdomain of its two domains.
MEDIAFLOW_PREVIEW_ORIGINS = ["https://*.mediaflow.com", "https://*.mediaflowpro.com"]


# Words that only a person choosing a key by hand puts in it.
TYPED_WORDS = ("changeme", "change-me", "password", "passw0rd", "qwerty", "asdf", "your-secret", "example")
PLACEHOLDER_KEYS = {"change-me", "changeme", "secret", "dev", "development", "replace-me", "your-secret-key"}


def settings_from_env(environ: dict[str, str] | None = None, dotenv_path: str | None = ".env") -> dict[str, Any]:
    """Read every setting of the configuration contract from the environment and .env."""
    if environ is None:
        if dotenv_path:
            load_dotenv(dotenv_path, override=False)
        environ = dict(os.environ)
    env = {k: v for k, v in environ.items() if v != ""}
    return {setting.name: setting.parse(setting.name, env[setting.name]) for setting in SETTINGS if setting.name in env}


def configure(config: dict[str, Any], instance_path: str) -> None:
    """Fill in demo mode, then check every setting; raise ConfigError on the first bad one."""
    if not config.get("MEDIAFLOW_CLIENT_ID"):
        if config.get("MEDIAFLOW_CLIENT_SECRET"):
            # Demo mode would drop it for the public demo secret: the operator meant to log in to Mediaflow.
            raise ConfigError("MEDIAFLOW_CLIENT_SECRET is set without MEDIAFLOW_CLIENT_ID: set the client id too, "
                              "or remove the secret for demo mode")
        _enter_demo_mode(config, instance_path)
    elif config.get("MEDIAFLOW_DEMO"):
        raise ConfigError("MEDIAFLOW_DEMO=true with MEDIAFLOW_CLIENT_ID set: demo mode uses the emulator's client, "
                          "so remove one of them")
    elif not config.get("MEDIAFLOW_CLIENT_SECRET"):
        raise ConfigError("MEDIAFLOW_CLIENT_SECRET is not set: Mediaflow requires it with MEDIAFLOW_CLIENT_ID")
    _check_secret_key(config)
    if config.get("SESSION_COOKIE_SECURE") is None:
        config["SESSION_COOKIE_SECURE"] = not config["MEDIAFLOW_DEMO"]
    for name in ("MEDIAFLOW_AUTHORIZE_URL", "MEDIAFLOW_TOKEN_URL", "MEDIAFLOW_API_BASE"):
        _check_url(name, config[name])
        # Demo mode talks plain http to the emulator (in compose as http://emulator:5001).
        if not config["MEDIAFLOW_DEMO"]:
            _check_is_https_outside_loopback(name, config[name], "Mediaflow's endpoints need https://")
    if config.get("MEDIAFLOW_REDIRECT_URI"):
        _check_url("MEDIAFLOW_REDIRECT_URI", config["MEDIAFLOW_REDIRECT_URI"])
        _check_redirect_uri_is_exact(config["MEDIAFLOW_REDIRECT_URI"])
        if not config["MEDIAFLOW_DEMO"]:
            _check_is_https_outside_loopback("MEDIAFLOW_REDIRECT_URI", config["MEDIAFLOW_REDIRECT_URI"],
                                             "register an https:// callback with Mediaflow")
    config["TRUSTED_HOSTS"] = trusted_hosts(config)
    backend = config["SESSION_BACKEND"]
    if backend not in ("filesystem", "redis"):
        raise ConfigError(f"SESSION_BACKEND={backend!r} is not supported: use 'filesystem' or 'redis'")
    if backend == "redis":
        if not config.get("REDIS_URL"):
            raise ConfigError("REDIS_URL is not set: SESSION_BACKEND=redis needs it, e.g. redis://localhost:6379/0")
        _check_url("REDIS_URL", config["REDIS_URL"], schemes=("redis", "rediss", "unix"))
        _check_redis(config)
    else:
        _check_session_folder(config, instance_path)
    _check_gate(config)
    _check_library(config)
    _check_metrics(config)
    if config["LOG_FORMAT"] not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT={config['LOG_FORMAT']!r} is not supported: use 'text' or 'json'")
    for name in ("MEDIAFLOW_REFRESH_LEEWAY", "TRUSTED_PROXY_COUNT"):
        if config[name] < 0:
            raise ConfigError(f"{name} must be zero or more")
    for name in ("SESSION_IDLE_TIMEOUT", "SESSION_MAX_LIFETIME"):
        if config[name] <= 0:
            raise ConfigError(f"{name} must be a positive number of seconds")


def trusted_hosts(config: Mapping[str, Any]) -> list[str]:
    """The Host names requests may carry: loopback, the redirect URI's host, and TRUSTED_HOSTS.

    Without MEDIAFLOW_REDIRECT_URI the callback URL is built from the Host header, so a name
    outside this list could send Mediaflow's code to another site; Flask answers it with a 400.
    """
    extra = config.get("TRUSTED_HOSTS") or []
    names = [extra] if isinstance(extra, str) else list(extra)
    for name in names:
        if not HOST_SETTING.fullmatch(name):
            raise ConfigError(f"TRUSTED_HOSTS={name!r} is not a host name: list names like portal.example.com, "
                              "separated by commas")
    redirect_host = urlsplit(config.get("MEDIAFLOW_REDIRECT_URI") or "").hostname
    if redirect_host:
        names.insert(0, redirect_host)
    return list(dict.fromkeys([*LOOPBACK_HOSTS, *(name.lower() for name in names)]))


def _check_redis(config: dict[str, Any]) -> None:
    """TLS that verifies Redis's certificate, a CA file that can be read, Sentinels that are host:port."""
    url = config["REDIS_URL"]
    parts = urlsplit(url)
    if parts.scheme != "unix" and not re.fullmatch(r"/?\d*", parts.path):
        raise ConfigError(f"REDIS_URL={_shown(url)!r} names a database that is not a number: e.g. …/0")
    # As redis-py reads them: names as written, the first value of each.
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    tls_options = sorted(name for name in query if name.startswith("ssl_"))
    if parts.scheme != "rediss" and (tls_options or config.get("REDIS_CA_CERT")):
        named = "REDIS_CA_CERT" if config.get("REDIS_CA_CERT") else tls_options[0]
        raise ConfigError(f"REDIS_URL={_shown(url)!r} is not rediss:// but {named} is set: use rediss:// for TLS")
    if query.get("ssl_cert_reqs", "required") != "required" or (
        query.get("ssl_check_hostname", "true").lower() in ("0", "false", "no", "off", "n", "f")
    ):
        raise ConfigError(f"REDIS_URL={_shown(url)!r} turns off the check of Redis's certificate: the portal always "
                          "verifies it; for a private CA, set REDIS_CA_CERT")
    if config.get("REDIS_CA_CERT") and "ssl_ca_certs" in query:
        raise ConfigError("REDIS_CA_CERT and REDIS_URL's ssl_ca_certs both name a CA file: keep one")
    for name, path in (("REDIS_CA_CERT", config.get("REDIS_CA_CERT")), ("ssl_ca_certs", query.get("ssl_ca_certs"))):
        if path:
            try:
                ssl.create_default_context(cafile=path)
            except (OSError, ValueError) as error:
                reason = error.strerror if isinstance(error, OSError) and error.strerror else "no PEM certificate in it"
                raise ConfigError(f"{name}={path!r} cannot be read as a CA file: {reason}") from None
    try:
        # As redis-py will read it: a port, an option or a value it cannot use, named now. make_connection
        # builds the connection object, which checks every option, without connecting.
        redis.ConnectionPool.from_url(url).make_connection()
    except (ValueError, TypeError, redis.RedisError) as error:
        raise ConfigError(f"REDIS_URL={_shown(url)!r} cannot be used: {error}") from None
    sentinels = config.get("REDIS_SENTINELS") or []
    if not sentinels:
        for name in ("REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD"):
            if config.get(name):
                raise ConfigError(f"{name} is set without REDIS_SENTINELS: list the Sentinels (host:port, ...) too")
        return
    for entry in sentinels:
        try:
            sentinel_address(entry)
        except ValueError:
            raise ConfigError(f"REDIS_SENTINELS={entry!r} is not host:port: list the Sentinels like "
                              "sentinel-1:26379, separated by commas") from None
    if not config.get("REDIS_SENTINEL_MASTER"):
        raise ConfigError("REDIS_SENTINEL_MASTER is not set: REDIS_SENTINELS needs the master's name, as in the "
                          "Sentinels' `sentinel monitor <name> ...`")
    if parts.scheme == "unix":
        raise ConfigError("REDIS_URL is unix:// with REDIS_SENTINELS: use redis:// or rediss:// (Sentinel names "
                          "the master's host and port)")


def sentinel_address(entry: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[::1]:port"; ValueError when it is neither."""
    parts = urlsplit(f"//{entry.strip()}")
    if not parts.hostname or not parts.port or parts.username or parts.path or parts.query:
        raise ValueError(entry)
    return parts.hostname, parts.port


def _check_gate(config: dict[str, Any]) -> None:
    path = config["GATE_AUTH_PATH"]
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", path or ""):
        raise ConfigError(f"GATE_AUTH_PATH={path!r} is not a path like /auth")
    if path in PORTAL_PATHS or path.startswith("/static/"):
        raise ConfigError(f"GATE_AUTH_PATH={path!r} is one of the portal's own paths: choose another, like /auth")
    for name in ("GATE_ALLOWED_REDIRECT_HOSTS",):
        for host in config.get(name) or []:
            if not HOST_SETTING.fullmatch(host):
                raise ConfigError(f"{name}={host!r} is not a host name: list names like app.example.com, "
                                  "separated by commas")
    domain = config.get("SESSION_COOKIE_DOMAIN")
    if domain and not re.fullmatch(r"\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", domain):
        raise ConfigError(f"SESSION_COOKIE_DOMAIN={domain!r} is not a domain with a dot, like example.com")


def _check_session_folder(config: dict[str, Any], instance_path: str) -> None:
    """The filesystem backend's folders exist or can be made: else every worker would fail at boot."""
    base = Path(config.get("SESSION_FILE_DIR") or instance_path)
    name = "SESSION_FILE_DIR" if config.get("SESSION_FILE_DIR") else "The instance folder"
    try:
        for part in ("sessions", "tokens"):
            (base / part).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{name}={str(base)!r} cannot hold the sessions: {error.strerror}") from None
    if not all(os.access(base / part, os.W_OK | os.X_OK) for part in ("sessions", "tokens")):
        raise ConfigError(f"{name}={str(base)!r} cannot hold the sessions: its folders are not writable")


def _check_library(config: dict[str, Any]) -> None:
    if not 0 <= config["LIBRARY_CACHE_SECONDS"] <= MAX_LIBRARY_CACHE_SECONDS:
        # A kept folder tree names private folders: it should not outlive a session's logout by much.
        raise ConfigError(f"LIBRARY_CACHE_SECONDS must be from 0 to {MAX_LIBRARY_CACHE_SECONDS}")
    origins = config.get("MEDIAFLOW_PREVIEW_ORIGINS")
    if not origins:
        # In demo mode the emulator serves the previews, at the address the browser reaches it;
        # otherwise Mediaflow's hosts, and the API's own (an emulator or a staging Mediaflow).
        if config["MEDIAFLOW_DEMO"]:
            origins = [_origin(config["MEDIAFLOW_AUTHORIZE_URL"])]
        else:
            origins = list(dict.fromkeys([_origin(config["MEDIAFLOW_API_BASE"]), *MEDIAFLOW_PREVIEW_ORIGINS]))
    origins = [origin.rstrip("/") for origin in origins]
    for origin in origins:
        if not _is_origin(origin):
            raise ConfigError(f"MEDIAFLOW_PREVIEW_ORIGINS={origin!r} is not an origin like https://media.example.com "
                              "or https://*.example.com (no path), separated by commas")
        if not config["MEDIAFLOW_DEMO"]:
            _check_is_https_outside_loopback("MEDIAFLOW_PREVIEW_ORIGINS", origin.replace("*.", ""),
                                             "previews need https://")
    config["MEDIAFLOW_PREVIEW_ORIGINS"] = origins


def _check_metrics(config: dict[str, Any]) -> None:
    for network in config.get("METRICS_ALLOW_FROM") or []:
        try:
            ipaddress.ip_network(network)
        except ValueError:
            raise ConfigError(f"METRICS_ALLOW_FROM={network!r} is not an IP address or network like 10.0.0.0/8 "
                              "(no host bits after the /), separated by commas") from None
    port = config.get("METRICS_PORT")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"METRICS_PORT={port!r} is not a TCP port (1 to 65535)")
    host = config["METRICS_BIND_HOST"]
    if host.startswith("["):
        # prometheus_client binds the address as written: with brackets it is no address at all.
        raise ConfigError(f"METRICS_BIND_HOST={host!r}: write an IPv6 address without brackets, like ::1")
    if not (HOST_NAME.fullmatch(host) or _is_ip_address(host)):
        raise ConfigError(f"METRICS_BIND_HOST={host!r} is not an IP address or host name like 127.0.0.1 or 0.0.0.0")


def check_metrics_port(port: int | None, addresses: list[str]) -> None:
    """Refuse a METRICS_PORT that gunicorn itself binds (GUNICORN_BIND): one of the two could not listen."""
    taken = [address for address in addresses if not address.startswith(("unix:", "fd://"))
             and address.rpartition(":")[2] == str(port)]
    if port is not None and taken:
        raise ConfigError(f"METRICS_PORT={port} is the port gunicorn serves the portal on ({taken[0]}): "
                          "choose another for the metrics")


def _is_ip_address(text: str) -> bool:
    try:
        return bool(ipaddress.ip_address(text.removeprefix("[").removesuffix("]")))
    except ValueError:
        return False


def _is_origin(value: str) -> bool:
    """An origin a CSP source list can hold: http(s), a host name, *.domain or an IP address, a port; no path."""
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        return False
    if value != f"{parts.scheme}://{parts.netloc}" or "@" in parts.netloc or parts.scheme not in ("http", "https"):
        return False
    host = parts.hostname or ""
    if HOST_NAME.fullmatch(host.removeprefix("*.")):
        return True
    try:
        return bool(ipaddress.ip_address(host))
    except ValueError:
        return False


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _enter_demo_mode(config: dict[str, Any], instance_path: str) -> None:
    """No client id: talk to the local emulator with its demo client."""
    emulator = config["MEDIAFLOW_EMULATOR_URL"].rstrip("/")
    _check_url("MEDIAFLOW_EMULATOR_URL", emulator)
    # In containers the browser reaches the emulator at another address than the portal does.
    browser = (config.get("MEDIAFLOW_EMULATOR_BROWSER_URL") or emulator).rstrip("/")
    _check_url("MEDIAFLOW_EMULATOR_BROWSER_URL", browser)
    config["MEDIAFLOW_DEMO"] = True
    config["MEDIAFLOW_CLIENT_ID"] = DEMO_CLIENT_ID
    config["MEDIAFLOW_CLIENT_SECRET"] = DEMO_CLIENT_SECRET
    for name, base, path in (("MEDIAFLOW_AUTHORIZE_URL", browser, "/authorize"),
                             ("MEDIAFLOW_TOKEN_URL", emulator, "/1/oauth2/token"),
                             ("MEDIAFLOW_API_BASE", emulator, "/1")):
        if config[name] == DEFAULTS[name]:
            config[name] = base + path
    if not config.get("SECRET_KEY"):
        config["SECRET_KEY"] = _demo_secret_key(instance_path)


def _demo_secret_key(instance_path: str) -> str:
    # One key shared by every worker of this checkout, so sessions and CSRF tokens work across them.
    path = Path(instance_path) / "demo-secret-key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Write aside, then link into place: workers starting together all read one whole key.
        draft = path.with_name(f".demo-secret-key-{os.getpid()}")
        draft.write_text(secrets.token_urlsafe(48))
        draft.chmod(0o600)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def check_bind(addresses: list[str], environ: dict[str, str] | None = None) -> None:
    """Refuse demo mode on a non-loopback address unless MEDIAFLOW_DEMO=true asks for it."""
    settings = DEFAULTS | settings_from_env(environ)
    if settings.get("MEDIAFLOW_CLIENT_ID") or settings["MEDIAFLOW_DEMO"]:
        return
    public = [address for address in addresses if not _is_local_bind(address)]
    if public:
        raise ConfigError(
            f"MEDIAFLOW_CLIENT_ID is not set and the server binds {public[0]}, not loopback: set MEDIAFLOW_CLIENT_ID, "
            "or MEDIAFLOW_DEMO=true to serve the demo (public client secret, plain http) there"
        )


def _is_local_bind(address: str) -> bool:
    """A gunicorn bind address ("host:port", "[::1]:port", "unix:path") that only this machine reaches."""
    if address.startswith("unix:"):
        return True
    if address.startswith("fd://"):
        return False  # an inherited socket: its address is unknown here
    host = address[1:].partition("]")[0] if address.startswith("[") else address.rpartition(":")[0] or address
    return _is_loopback(host)


def check_workers(workers: int, environ: dict[str, str] | None = None) -> None:
    """Refuse the filesystem backend under several workers unless the operator says it is shared."""
    settings = DEFAULTS | settings_from_env(environ)
    if settings["SESSION_BACKEND"] == "filesystem" and workers > 1 and not settings["SESSION_FILESYSTEM_ALLOW_WORKERS"]:
        raise ConfigError(
            f"SESSION_BACKEND=filesystem with {workers} workers: use SESSION_BACKEND=redis, or set "
            "SESSION_FILESYSTEM_ALLOW_WORKERS=true if all workers run on this one host"
        )


def _check_secret_key(config: dict[str, Any]) -> None:
    key = config.get("SECRET_KEY")
    if not key:
        raise ConfigError(
            "SECRET_KEY is not set: generate one with  python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    text = str(key).strip()
    if text.lower() in PLACEHOLDER_KEYS or len(text.encode()) < 32:
        raise ConfigError("SECRET_KEY is too short or a placeholder: use at least 32 random bytes")
    if _looks_typed(text):
        raise ConfigError("SECRET_KEY is too regular to be random (fewer than 8 distinct characters, a repeated "
                          "chunk, a placeholder word, or mostly a run like aaaa, abcd or 0123): use at least 32 random "
                          "bytes")


def _looks_typed(key: str) -> bool:
    """A key a person typed: few distinct characters, a chunk said again, a placeholder word, or mostly runs."""
    lowered = key.lower()
    steps = [ord(b) - ord(a) for a, b in itertools.pairwise(lowered)]
    repeated = any(lowered == (lowered[:size] * len(lowered))[:len(lowered)]
                   for size in range(1, len(lowered) // 2 + 1))
    # 32 random hex digits show fewer than 8 distinct ones about once in 10^7 keys.
    return (len(set(key)) < 8 or repeated or any(word in lowered for word in TYPED_WORDS)
            or sum(step in (-1, 0, 1) for step in steps) * 4 >= len(steps) * 3)


def _check_url(name: str, value: str, schemes: tuple[str, ...] = ("http", "https")) -> None:
    parts = urlsplit(value)
    # A backslash, a space or a control character is read differently by urlsplit, requests and browsers
    # ("http://evil.example\\@127.0.0.1/" goes to evil.example): none belongs in these URLs.
    if re.search(r"[\\\s\x00-\x1f\x7f]", value):
        raise ConfigError(f"{name}={_shown(value)!r} holds a backslash, a space or a control character")
    if parts.scheme not in schemes or (parts.scheme != "unix" and not parts.hostname):
        raise ConfigError(f"{name}={_shown(value)!r} is not a valid URL: expected {' or '.join(schemes)}://host/…")


def _check_is_https_outside_loopback(name: str, value: str, advice: str) -> None:
    parts = urlsplit(value)
    if parts.scheme == "https" or _is_loopback(parts.hostname or ""):
        return
    raise ConfigError(f"{name}={_shown(value)!r} uses plain http outside loopback: {advice}")


def _check_redirect_uri_is_exact(value: str) -> None:
    # RFC 6749 3.1.2: no fragment; a user:password@ would be sent to Mediaflow and to the browser.
    parts = urlsplit(value)
    if "@" in parts.netloc:
        raise ConfigError(f"MEDIAFLOW_REDIRECT_URI={_shown(value)!r} holds a user:password@: remove it")
    if "#" in value:
        raise ConfigError(f"MEDIAFLOW_REDIRECT_URI={_shown(value)!r} has a #fragment, which OAuth forbids: remove it")


def _shown(url: str) -> str:
    """The URL as it may be printed: all before its last "@" is masked (a password may hold "/" or "@")."""
    scheme, slashes, rest = url.partition("//")
    if not slashes:
        scheme, rest = "", url
    return f"{scheme}{slashes}***@{rest.rpartition('@')[2]}" if "@" in rest else url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
