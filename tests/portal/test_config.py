"""Settings: read from the environment and .env, checked once, one clear line per problem."""

from __future__ import annotations

import ast
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from emulator.config import default_config
from portal.config import (
    DEFAULTS,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    SETTINGS,
    ConfigError,
    check_bind,
    check_metrics_port,
    sentinel_address,
    settings_from_env,
    trusted_hosts,
)
from tests.conftest import SECRET_KEY
from tests.support import ROOT
from tests.tls import make_ca

GOOD = {"MEDIAFLOW_CLIENT_ID": "id", "MEDIAFLOW_CLIENT_SECRET": "client-s3cr3t-value",
        "SECRET_KEY": "config-test-secret-key-0123456789-qwertz"}


def test_defaults_point_at_the_real_mediaflow() -> None:
    assert DEFAULTS["MEDIAFLOW_AUTHORIZE_URL"] == "https://login.mediaflowpro.com/authorize"
    assert DEFAULTS["MEDIAFLOW_TOKEN_URL"] == "https://accounts.mediaflow.com/1/oauth2/token"
    assert DEFAULTS["MEDIAFLOW_API_BASE"] == "https://api.mediaflow.com/1"
    assert DEFAULTS["MEDIAFLOW_REFRESH_LEEWAY"] == 60
    assert DEFAULTS["MEDIAFLOW_PKCE"] is True
    assert DEFAULTS["SESSION_BACKEND"] == "filesystem"
    assert DEFAULTS["SESSION_REDIS_CACHE"] is True


def test_environment_values_are_parsed() -> None:
    settings = settings_from_env({"MEDIAFLOW_REFRESH_LEEWAY": "30", "MEDIAFLOW_PKCE": "true",
                                  "MEDIAFLOW_READ_TIMEOUT": "2.5", "MEDIAFLOW_SCOPE": "", "REDIS_URL": "redis://r",
                                  "SESSION_REDIS_CACHE": "off"})
    assert settings == {"MEDIAFLOW_REFRESH_LEEWAY": 30, "MEDIAFLOW_PKCE": True, "MEDIAFLOW_READ_TIMEOUT": 2.5,
                        "REDIS_URL": "redis://r", "SESSION_REDIS_CACHE": False}


def test_settings_come_from_dotenv_without_overriding_the_environment(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("MEDIAFLOW_SCOPE=from-dotenv\nMEDIAFLOW_REFRESH_LEEWAY=10\n")
    monkeypatch.setenv("MEDIAFLOW_REFRESH_LEEWAY", "20")
    settings = settings_from_env(dotenv_path=str(dotenv))
    assert settings["MEDIAFLOW_SCOPE"] == "from-dotenv"
    assert settings["MEDIAFLOW_REFRESH_LEEWAY"] == 20


BAD = [
    ({"SECRET_KEY": None}, "SECRET_KEY is not set"),
    ({"SECRET_KEY": "tiny-k3y"}, "SECRET_KEY is too short or a placeholder"),
    ({"SECRET_KEY": "change-me"}, "SECRET_KEY is too short or a placeholder"),
    ({"MEDIAFLOW_CLIENT_SECRET": None}, "MEDIAFLOW_CLIENT_SECRET is not set"),
    ({"SESSION_BACKEND": "memcached"}, "SESSION_BACKEND='memcached' is not supported"),
    ({"SESSION_BACKEND": "redis"}, "REDIS_URL is not set"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "localhost:6379"}, "REDIS_URL='localhost:6379' is not a valid URL"),
    ({"MEDIAFLOW_TOKEN_URL": "accounts.mediaflow.com/token"}, "MEDIAFLOW_TOKEN_URL="),
    ({"MEDIAFLOW_AUTHORIZE_URL": "ftp://login"}, "MEDIAFLOW_AUTHORIZE_URL="),
    ({"MEDIAFLOW_API_BASE": "https://"}, "MEDIAFLOW_API_BASE="),
    ({"MEDIAFLOW_REDIRECT_URI": "http://portal.example/callback"}, "MEDIAFLOW_REDIRECT_URI='http://portal.example"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is not supported"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "redis//:hunter2-pw@cache:6379"}, "REDIS_URL='redis//***@cache:6379'"),
    ({"MEDIAFLOW_REFRESH_LEEWAY": -1}, "MEDIAFLOW_REFRESH_LEEWAY must be zero or more"),
    # Demo mode only when no client is configured at all: a lone secret was meant for Mediaflow.
    ({"MEDIAFLOW_CLIENT_ID": None}, "MEDIAFLOW_CLIENT_SECRET is set without MEDIAFLOW_CLIENT_ID"),
    ({"MEDIAFLOW_DEMO": True}, "MEDIAFLOW_DEMO=true with MEDIAFLOW_CLIENT_ID set"),
    # Plain http to Mediaflow outside loopback: codes, tokens and the client secret in the clear.
    ({"MEDIAFLOW_AUTHORIZE_URL": "http://login.example/authorize"},
     "MEDIAFLOW_AUTHORIZE_URL='http://login.example/authorize' uses plain http outside loopback"),
    ({"MEDIAFLOW_TOKEN_URL": "http://accounts.example/token"},
     "MEDIAFLOW_TOKEN_URL='http://accounts.example/token' uses plain http outside loopback"),
    ({"MEDIAFLOW_API_BASE": "http://10.0.0.8/1"}, "MEDIAFLOW_API_BASE='http://10.0.0.8/1' uses plain http outside"),
    ({"MEDIAFLOW_REDIRECT_URI": "https://portal.example/callback#top"}, "MEDIAFLOW_REDIRECT_URI='https://portal.exa"),
    ({"MEDIAFLOW_REDIRECT_URI": "https://admin:hunter2-pw@portal.example/callback"},
     "MEDIAFLOW_REDIRECT_URI='https://***@portal.example/callback' holds a user:password@"),
    ({"MEDIAFLOW_REDIRECT_URI": "http://u:hunter2-pw@127.0.0.1:5000/callback"}, "holds a user:password@"),
    # Keys a person typed: whitespace, one character, a short cycle, a run of the alphabet or the digits.
    ({"SECRET_KEY": " " * 40}, "SECRET_KEY is too short or a placeholder"),
    ({"SECRET_KEY": "a" * 40}, "SECRET_KEY is too regular to be random"),
    ({"SECRET_KEY": "abcdef" * 6}, "SECRET_KEY is too regular to be random"),
    ({"SECRET_KEY": "0123456789" * 4}, "SECRET_KEY is too regular to be random"),
    ({"SECRET_KEY": "abcdefghijklmnopqrstuvwxyz0123456789"}, "SECRET_KEY is too regular to be random"),
    ({"SECRET_KEY": "kkkkkkkk-0123456789abcdefghijklmnopqrstuv"}, "SECRET_KEY is too regular to be random"),
    ({"SECRET_KEY": "changeme-changeme-changeme-changeme"}, "SECRET_KEY is too regular to be random"),
    ({"SECRET_KEY": "your-secret-key-your-secret-key-"}, "SECRET_KEY is too regular to be random"),
    ({"SECRET_KEY": "Password1Password1Password1Password1"}, "SECRET_KEY is too regular to be random"),
    ({"SECRET_KEY": "qwertyuiopasdfghjklzxcvbnm123456"}, "SECRET_KEY is too regular to be random"),
    ({"SECRET_KEY": "aAbBcCdDeEfFgGhHiIjJkKlLmMnNoOpP"}, "SECRET_KEY is too regular to be random"),
    ({"MEDIAFLOW_TOKEN_URL": "http://evil.example\\@127.0.0.1/1/oauth2/token"}, "holds a backslash, a space"),
    ({"MEDIAFLOW_REDIRECT_URI": " https://portal.example/callback"}, "holds a backslash, a space"),
    ({"MEDIAFLOW_API_BASE": "https://api.example/1\n"}, "holds a backslash, a space"),
    ({"TRUSTED_HOSTS": ["portal.example", "evil.example/x"]}, "TRUSTED_HOSTS='evil.example/x' is not a host name"),
    # The gate (portal/gate.py).
    ({"GATE_AUTH_PATH": "auth"}, "GATE_AUTH_PATH='auth' is not a path like /auth"),
    ({"GATE_AUTH_PATH": "/auth/../x?y"}, "GATE_AUTH_PATH="),
    ({"GATE_AUTH_PATH": "/login"}, "GATE_AUTH_PATH='/login' is one of the portal's own paths"),
    ({"GATE_AUTH_PATH": "/metrics"}, "GATE_AUTH_PATH='/metrics' is one of the portal's own paths"),
    # /metrics (portal/metrics.py): addresses and networks only; a network with host bits is a typo.
    ({"METRICS_ALLOW_FROM": ["127.0.0.1/32", "10.0.0.1/8"]}, "METRICS_ALLOW_FROM='10.0.0.1/8' is not an IP address"),
    ({"METRICS_ALLOW_FROM": ["prometheus.internal"]}, "METRICS_ALLOW_FROM='prometheus.internal' is not an IP"),
    ({"METRICS_PORT": 0}, "METRICS_PORT=0 is not a TCP port"),
    ({"METRICS_PORT": 70000}, "METRICS_PORT=70000 is not a TCP port"),
    ({"METRICS_BIND_HOST": "http://127.0.0.1"}, "METRICS_BIND_HOST='http://127.0.0.1' is not an IP address"),
    ({"METRICS_BIND_HOST": "[::1]"}, "METRICS_BIND_HOST='[::1]': write an IPv6 address without brackets, like ::1"),
    ({"GATE_ALLOWED_REDIRECT_HOSTS": ["app.example", "https://evil.example"]},
     "GATE_ALLOWED_REDIRECT_HOSTS='https://evil.example' is not a host name"),
    ({"SESSION_COOKIE_DOMAIN": "com"}, "SESSION_COOKIE_DOMAIN='com' is not a domain with a dot"),
    ({"SESSION_COOKIE_DOMAIN": "example.com/x"}, "SESSION_COOKIE_DOMAIN="),
    # The media library (portal/library.py): origins go into the CSP as they are.
    ({"LIBRARY_CACHE_SECONDS": -1}, "LIBRARY_CACHE_SECONDS must be from 0 to 3600"),
    ({"LIBRARY_CACHE_SECONDS": 10**20}, "LIBRARY_CACHE_SECONDS must be from 0 to 3600"),
    ({"MEDIAFLOW_PREVIEW_ORIGINS": ["https://cdn.example/previews"]},
     "MEDIAFLOW_PREVIEW_ORIGINS='https://cdn.example/previews' is not an origin"),
    ({"MEDIAFLOW_PREVIEW_ORIGINS": ["https://cdn.example; script-src *"]}, "MEDIAFLOW_PREVIEW_ORIGINS="),
    ({"MEDIAFLOW_PREVIEW_ORIGINS": ["*"]}, "MEDIAFLOW_PREVIEW_ORIGINS='*' is not an origin"),
    ({"MEDIAFLOW_PREVIEW_ORIGINS": ["data:"]}, "MEDIAFLOW_PREVIEW_ORIGINS='data:' is not an origin"),
    ({"MEDIAFLOW_PREVIEW_ORIGINS": ["http://cdn.example"]},
     "MEDIAFLOW_PREVIEW_ORIGINS='http://cdn.example' uses plain http outside loopback"),
    # Redis as companies run it (portal/redis_target.py): TLS always verifies, Sentinel needs its master's name.
    *[({"SESSION_BACKEND": "redis", "REDIS_URL": f"rediss://:hunter2-pw@cache:6380/0?{query}"},
       "REDIS_URL='rediss://***@cache:6380/0?") for query in (
        "ssl_cert_reqs=none", "ssl_cert_reqs=optional", "ssl_cert_reqs=NONE", "ssl_check_hostname=false",
        "ssl_check_hostname=0")],
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "rediss://cache:6380/0?ssl_cert_reqs=none"},
     "turns off the check of Redis's certificate: the portal always verifies it; for a private CA, set REDIS_CA_CERT"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "redis://cache:6379/0", "REDIS_CA_CERT": str(ROOT / "README.md")},
     "REDIS_URL='redis://cache:6379/0' is not rediss:// but REDIS_CA_CERT is set"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "redis://cache:6379/0?ssl_ca_certs=/etc/ca.pem"},
     "is not rediss:// but ssl_ca_certs is set"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "rediss://cache:6380/0", "REDIS_CA_CERT": "/nonexistent/ca.pem"},
     "REDIS_CA_CERT='/nonexistent/ca.pem' cannot be read as a CA file: No such file or directory"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "rediss://cache:6380/0", "REDIS_CA_CERT": str(ROOT / "README.md")},
     "REDIS_CA_CERT='" + str(ROOT / "README.md") + "' cannot be read as a CA file"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "rediss://cache:6380/0?ssl_ca_certs=/nonexistent/ca.pem"},
     "ssl_ca_certs='/nonexistent/ca.pem' cannot be read as a CA file"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "rediss://cache:6380/0?ssl_ca_certs=/a.pem", "REDIS_CA_CERT": "/b.pem"},
     "REDIS_CA_CERT and REDIS_URL's ssl_ca_certs both name a CA file: keep one"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "redis://cache:6379/0", "REDIS_SENTINELS": ["s1:26379", "s2"]},
     "REDIS_SENTINELS='s2' is not host:port"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "redis://cache:6379/0", "REDIS_SENTINELS": ["s1:99999"]},
     "REDIS_SENTINELS='s1:99999' is not host:port"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "redis://cache:6379/0", "REDIS_SENTINELS": ["s1:26379"]},
     "REDIS_SENTINEL_MASTER is not set: REDIS_SENTINELS needs the master's name"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "redis://cache:6379/0", "REDIS_SENTINEL_MASTER": "main"},
     "REDIS_SENTINEL_MASTER is set without REDIS_SENTINELS"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "redis://cache:6379/0", "REDIS_SENTINEL_PASSWORD": "hunter2-pw"},
     "REDIS_SENTINEL_PASSWORD is set without REDIS_SENTINELS"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "unix:///run/redis.sock", "REDIS_SENTINELS": ["s1:26379"],
      "REDIS_SENTINEL_MASTER": "main"}, "REDIS_URL is unix:// with REDIS_SENTINELS"),
    # What redis-py would stop on later, in every worker, with a traceback; a password is never shown.
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "redis://:hunter2-pw@cache:6379/0?socket_timeout=abc"},
     "REDIS_URL='redis://***@cache:6379/0?socket_timeout=abc' cannot be used: Invalid value for 'socket_timeout'"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "redis://cache:6379/0?sockettimeout=5"}, "cannot be used"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "redis://cache:6379/0?protocol=4"}, "cannot be used"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "redis://cache:99999/0"}, "cannot be used: Port out of range"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "redis://cache:6379/x"}, "names a database that is not a number"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "rediss://:hunter2/pw@cache:6380/0"}, "REDIS_URL='rediss://***@cache"),
    ({"SESSION_BACKEND": "redis", "REDIS_URL": "rediss://:hunter2@pw@cache:6380/x"}, "REDIS_URL='rediss://***@cache"),
    ({"SESSION_FILE_DIR": str(ROOT / "README.md")}, "SESSION_FILE_DIR='" + str(ROOT / "README.md") + "' cannot hold"),
]


@pytest.mark.parametrize(("changes", "message"), BAD)
def test_unusable_setting_stops_the_app_with_one_line_naming_it(changes: dict[str, Any], message: str,
                                                                 tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = {**GOOD, "SESSION_FILE_DIR": str(tmp_path), **changes}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(SystemExit) as stop:
        create_app(config)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    for name in ("SECRET_KEY", "MEDIAFLOW_CLIENT_SECRET"):
        if config.get(name):
            assert str(config[name]) not in err
    assert "hunter2" not in err


@pytest.mark.parametrize(
    ("env", "message"),
    [({"MEDIAFLOW_REFRESH_LEEWAY": "soon"}, "MEDIAFLOW_REFRESH_LEEWAY='soon' is not a whole number"),
     ({"MEDIAFLOW_PKCE": "maybe"}, "MEDIAFLOW_PKCE='maybe' is not true or false"),
     ({"SESSION_REDIS_CACHE": "sometimes"}, "SESSION_REDIS_CACHE='sometimes' is not true or false"),
     ({"MEDIAFLOW_READ_TIMEOUT": "0"}, "MEDIAFLOW_READ_TIMEOUT='0' must be more than 0")],
)
def test_unparseable_environment_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_env(env)


def test_https_redirect_uri_and_loopback_http_are_accepted(tmp_path: Path) -> None:
    for uri in ("https://portal.example/callback", "http://127.0.0.1:5000/callback", "http://localhost/callback",
                "http://[::1]:5000/callback", "https://portal.example/callback?tenant=a"):
        app = create_app({**GOOD, "SESSION_FILE_DIR": str(tmp_path), "MEDIAFLOW_REDIRECT_URI": uri})
        assert app.config["MEDIAFLOW_REDIRECT_URI"] == uri


@pytest.mark.parametrize("url", ["http://127.0.0.1:5001/1", "http://localhost:5001/1", "http://127.8.0.1/1",
                                 "http://[::1]:5001/1", "https://api.example/1"])
def test_loopback_http_and_any_https_endpoint_are_accepted(url: str, tmp_path: Path) -> None:
    app = create_app({**GOOD, "SESSION_FILE_DIR": str(tmp_path), "MEDIAFLOW_API_BASE": url,
                      "MEDIAFLOW_TOKEN_URL": url + "/token", "MEDIAFLOW_AUTHORIZE_URL": url + "/authorize"})
    assert app.config["MEDIAFLOW_API_BASE"] == url


@pytest.mark.parametrize("key", [SECRET_KEY, "gunicorn-test-secret-key-0123456789abcdef", secrets.token_urlsafe(32),
                                 secrets.token_urlsafe(48), secrets.token_hex(16), secrets.token_hex(32)],
                         ids=["tests-key", "gunicorn-tests-key", "urlsafe-32", "urlsafe-48", "hex-16", "hex-32"])
def test_random_and_test_secret_keys_are_accepted(key: str, tmp_path: Path) -> None:
    assert create_app({**GOOD, "SESSION_FILE_DIR": str(tmp_path), "SECRET_KEY": key}).config["SECRET_KEY"] == key


@pytest.mark.parametrize(
    ("config", "hosts"),
    [({}, ["localhost", "127.0.0.1"]),
     ({"MEDIAFLOW_REDIRECT_URI": "https://Portal.Example:8443/callback"}, ["localhost", "127.0.0.1", "portal.example"]),
     ({"TRUSTED_HOSTS": "intranet.example"}, ["localhost", "127.0.0.1", "intranet.example"]),
     ({"MEDIAFLOW_REDIRECT_URI": "https://portal.example/callback",
       "TRUSTED_HOSTS": ["portal.example", ".corp.example"]},
      ["localhost", "127.0.0.1", "portal.example", ".corp.example"])],
)
def test_trusted_hosts_are_loopback_the_redirect_uri_host_and_the_listed_ones(config: dict[str, Any],
                                                                              hosts: list[str]) -> None:
    assert trusted_hosts(config) == hosts


def test_trusted_hosts_are_read_as_a_comma_separated_list() -> None:
    assert settings_from_env({"TRUSTED_HOSTS": "a.example, b.example,"})["TRUSTED_HOSTS"] == ["a.example", "b.example"]


@pytest.mark.parametrize(
    ("binds", "env", "refused"),
    [(["0.0.0.0:8000"], {}, True),
     (["[::]:8000"], {}, True),
     (["192.0.2.7:8000"], {}, True),
     (["127.0.0.1:8000", "0.0.0.0:8001"], {}, True),
     (["fd://3"], {}, True),
     (["127.0.0.1:8000"], {}, False),
     (["127.0.0.2:8000", "localhost:8001"], {}, False),
     (["[::1]:8000"], {}, False),
     (["unix:/run/portal.sock"], {}, False),
     (["0.0.0.0:8000"], {"MEDIAFLOW_DEMO": "true"}, False),
     (["0.0.0.0:8000"], {"MEDIAFLOW_CLIENT_ID": "id"}, False)],
)
def test_demo_mode_binds_only_loopback_unless_asked_for(binds: list[str], env: dict[str, str], refused: bool) -> None:
    if refused:
        message = "^MEDIAFLOW_CLIENT_ID is not set and the server binds " + re.escape(binds[-1])
        with pytest.raises(ConfigError, match=message):
            check_bind(binds, env)
    else:
        check_bind(binds, env)


@pytest.mark.parametrize(
    ("port", "binds", "refused"),
    [(8000, ["0.0.0.0:8000"], True),
     (8000, ["127.0.0.1:8001", "[::]:8000"], True),
     (9100, ["0.0.0.0:8000"], False),
     (8000, ["unix:/run/8000"], False),
     (None, ["0.0.0.0:8000"], False)],
)
def test_the_metrics_port_is_not_gunicorns_own(port: int | None, binds: list[str], refused: bool) -> None:
    if refused:
        with pytest.raises(ConfigError, match=rf"^METRICS_PORT={port} is the port gunicorn serves the portal on"):
            check_metrics_port(port, binds)
    else:
        check_metrics_port(port, binds)


def test_demo_mode_logs_one_warning_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    create_app({"SESSION_FILE_DIR": str(tmp_path)})
    assert capsys.readouterr().out.count("Demo mode: signing in against the emulator") == 1
    create_app({**GOOD, "SESSION_FILE_DIR": str(tmp_path)})
    assert "Demo mode" not in capsys.readouterr().out


def test_portal_demo_client_is_the_emulators_built_in_one() -> None:
    client = default_config().client(DEMO_CLIENT_ID)
    assert client is not None and client.secret == DEMO_CLIENT_SECRET
    assert "http://127.0.0.1:5000/callback" in client.redirect_uris


def test_the_portal_imports_nothing_from_its_test_double() -> None:
    for path in [ROOT / "app.py", ROOT / "gunicorn.conf.py", *(ROOT / "portal").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            assert not any(name.split(".")[0] == "emulator" for name in names), path


def test_demo_mode_points_at_the_emulator_without_any_setting(tmp_path: Path) -> None:
    app = create_app({"SESSION_FILE_DIR": str(tmp_path)})
    assert app.config["MEDIAFLOW_DEMO"] is True
    assert app.config["MEDIAFLOW_AUTHORIZE_URL"] == "http://127.0.0.1:5001/authorize"
    assert app.config["MEDIAFLOW_TOKEN_URL"] == "http://127.0.0.1:5001/1/oauth2/token"
    assert app.config["SESSION_COOKIE_SECURE"] is False
    assert "local Mediaflow emulator" in app.test_client().get("/").text


def test_real_mode_uses_secure_cookies_by_default(tmp_path: Path) -> None:
    app = create_app({**GOOD, "SESSION_FILE_DIR": str(tmp_path)})
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert "Connected to <strong>Mediaflow</strong>" in app.test_client().get("/").text


def test_flask_cli_refuses_to_start_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAFLOW_", "SECRET_", "SESSION_"))}
    env.update(MEDIAFLOW_CLIENT_ID="id", MEDIAFLOW_CLIENT_SECRET="s3cr3t-value", SESSION_BACKEND="nosuch")
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "routes"], cwd=tmp_path, env=env | {
        "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cr3t-value" not in result.stderr + result.stdout


# compose.yaml reads these from .env; the portal does not.
COMPOSE_ONLY = {"REDIS_PASSWORD"}


def readme_rows() -> dict[str, str]:
    """Each setting README's Configuration table names, with the meaning its row gives."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):readme.index("\n## ", readme.index("## Configuration") + 5)]
    cells = [row.split("|") for row in table.splitlines() if row.startswith("| `")]
    return {name: row[3] for row in cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row[1])}


def env_example() -> dict[str, str]:
    """What .env.example sets, by name (compose's own settings left out)."""
    pairs = re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.M)
    return {name: value for name, value in pairs if name not in COMPOSE_ONLY}


def test_readme_and_env_example_list_exactly_the_declared_settings() -> None:
    declared = {setting.name for setting in SETTINGS}
    rows, env = readme_rows(), env_example()
    assert set(rows) == declared, (set(rows) ^ declared)
    assert set(env) == declared, (set(env) ^ declared)
    assert len(SETTINGS) == len(declared)  # each declared once
    for setting in SETTINGS:
        assert setting.meaning in rows[setting.name], setting.name  # README says what the schema says


def test_env_example_values_are_the_defaults() -> None:
    shown = {name: value for name, value in env_example().items() if value}
    assert settings_from_env(shown, dotenv_path=None) == {name: DEFAULTS[name] for name in shown}


def test_every_setting_is_read_from_the_environment_by_its_schema() -> None:
    raw = {"MEDIAFLOW_PKCE": "false", "GUNICORN_WORKERS": "3", "TRUSTED_HOSTS": "a.example, .b.example",
           "MEDIAFLOW_READ_TIMEOUT": "2.5", "MEDIAFLOW_SCOPE": "files"}
    assert settings_from_env(raw, dotenv_path=None) == {
        "MEDIAFLOW_PKCE": False, "GUNICORN_WORKERS": 3, "TRUSTED_HOSTS": ["a.example", ".b.example"],
        "MEDIAFLOW_READ_TIMEOUT": 2.5, "MEDIAFLOW_SCOPE": "files"}
    assert set(DEFAULTS) == {setting.name for setting in SETTINGS}


def test_tls_with_a_private_ca_and_sentinels_are_accepted(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    settings = settings_from_env({"REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380,sentinel-3:26379"}, dotenv_path=None)
    app = create_app({**GOOD, "SESSION_FILE_DIR": str(tmp_path), "SESSION_BACKEND": "redis",
                      "REDIS_URL": "rediss://:hunter2-pw@main/0", "REDIS_CA_CERT": str(ca.cert),
                      "REDIS_SENTINEL_MASTER": "main", **settings})
    assert [sentinel_address(entry) for entry in app.config["REDIS_SENTINELS"]] == [
        ("10.0.0.1", 26379), ("::1", 26380), ("sentinel-3", 26379)]
