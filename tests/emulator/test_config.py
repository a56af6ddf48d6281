"""The emulator's config file: defaults, and a clear one-line error for every malformed field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.config import DEMO_CLIENT_ID, ConfigError, default_config, parse_config
from portal.config import DEFAULTS
from tests.support import ROOT


def test_defaults_hold_the_portals_demo_client_and_the_demo_user() -> None:
    config = default_config()
    client = config.client(DEMO_CLIENT_ID)
    assert client is not None and "http://127.0.0.1:5000/callback" in client.redirect_uris
    assert config.user("demo") is not None and config.user("demo").password == "demo"  # type: ignore[union-attr]
    assert DEFAULTS["MEDIAFLOW_EMULATOR_URL"] == "http://127.0.0.1:5001"


def test_a_users_customer_id_is_read_and_defaults_to_1() -> None:
    config = parse_config({"users": [{"username": "a", "password": "a"},
                                     {"username": "b", "password": "b", "customer_id": 42}]})
    assert [(u.username, u.customer_id) for u in config.users] == [("a", 1), ("b", 42)]


GOOD_CLIENT = {"id": "c", "secret": "s", "redirect_uris": ["http://x/cb"]}

BAD_CONFIGS = [
    ([], "top level: must be a JSON object"),
    ({"clients": {}}, "clients: must be a JSON array"),
    ({"clients": [{"secret": "s", "redirect_uris": ["u"]}]}, "clients[0].id: is required"),
    ({"clients": [GOOD_CLIENT | {"expires_in": "3600"}]}, "clients[0].expires_in: must be a positive whole number"),
    ({"clients": [GOOD_CLIENT | {"expires_in": 0}]}, "clients[0].expires_in"),
    ({"clients": [GOOD_CLIENT | {"grants": ["implicit"]}]}, "clients[0].grants: unknown grant 'implicit'"),
    ({"clients": [GOOD_CLIENT | {"rotate_refresh_tokens": "yes"}]}, "clients[0].rotate_refresh_tokens: must be true"),
    ({"clients": [GOOD_CLIENT | {"redirect_uris": []}]}, "clients[0].redirect_uris: must list at least one"),
    ({"clients": [GOOD_CLIENT | {"colour": "red"}]}, "clients[0].colour: unknown field"),
    ({"clients": [GOOD_CLIENT, GOOD_CLIENT]}, "clients: duplicate id 'c'"),
    ({"users": [{"username": "u"}]}, "users[0].password: is required"),
    ({"users": [{"username": 5, "password": "p"}]}, "users[0].username: must be a non-empty string"),
    ({"users": [{"username": "u", "password": "p", "customer_id": "7"}]},
     "users[0].customer_id: must be a positive whole number"),
    ({"users": [{"username": "u", "password": "p", "customer_id": 0}]}, "users[0].customer_id"),
    ({"code_lifetime": -1}, "code_lifetime"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_CONFIGS)
def test_malformed_config_names_the_field(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^cfg\.json: ") as error:
        parse_config(raw, source="cfg.json")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON (line 1, column 2)"),
     (json.dumps({"clients": [{"id": "c"}]}), "clients[0].redirect_uris: is required"),
     (None, "no such file")],
)
def test_bad_config_file_stops_start_up_with_one_line_and_no_traceback(tmp_path: Path, content: str | None,
                                                                      message: str) -> None:
    path = tmp_path / "emulator.json"
    if content is not None:
        path.write_text(content)
    result = subprocess.run([sys.executable, "-m", "emulator", "--port", "1", "--config", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert str(path) in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
