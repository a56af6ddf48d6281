"""Settings: read from the environment and .env, checked once, one clear line per problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from portal.config import DEFAULTS, ConfigError, settings_from_env
from tests.support import ROOT

GOOD = {"MEDIAFLOW_CLIENT_ID": "id", "MEDIAFLOW_CLIENT_SECRET": "client-s3cr3t-value",
        "SECRET_KEY": "k" * 8 + "-0123456789abcdefghijklmnopqrstuv"}


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
    for uri in ("https://portal.example/callback", "http://127.0.0.1:5000/callback", "http://localhost/callback"):
        app = create_app({**GOOD, "SESSION_FILE_DIR": str(tmp_path), "MEDIAFLOW_REDIRECT_URI": uri})
        assert app.config["MEDIAFLOW_REDIRECT_URI"] == uri


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
