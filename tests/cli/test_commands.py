"""`flask mediaflow password|refresh|me` against the emulator, through Click's runner, with no mocks."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal import cli
from tests.support import Emulator, free_port


@pytest.fixture
def run(make_app: Callable[..., Flask]) -> Callable[..., Any]:
    def invoke(*args: str, client_id: str = "portal-test", stdin: str | None = None, env: dict[str, str] | None = None,
               **config: Any) -> Any:
        app = make_app(client_id, **config)
        return app.test_cli_runner().invoke(args=["mediaflow", *args], input=stdin, env=env)

    return invoke


def test_password_prompts_for_username_and_hidden_password(run: Callable[..., Any]) -> None:
    result = run("password", stdin="demo\ndemo\n")
    assert result.exit_code == 0, result.stderr
    assert "Username" in result.stderr and "Password" in result.stderr
    assert "demo\n" not in result.stderr.replace("Username: demo", "")  # the password is not echoed
    token = json.loads(result.stdout)
    assert set(token) == {"access_token", "token_type", "expires_in", "refresh_token"}


def test_password_from_stdin_with_state_written_to_a_0600_file(run: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "token.json"
    result = run("password", "--username", "editor", "--password-stdin", "--state", "st-9", "--out", str(out),
                 stdin="editor\n")
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text())["state"] == "st-9"
    assert "access_token" not in result.stdout


def test_password_is_never_a_command_line_argument(run: Callable[..., Any]) -> None:
    result = run("password", "--username", "demo", "--password", "demo")
    assert result.exit_code == 2
    assert "No such option" in result.stderr


def test_refresh_from_a_token_file_keeps_the_old_refresh_token(run: Callable[..., Any], tmp_path: Path,
                                                               emulator: Emulator) -> None:
    out = tmp_path / "token.json"
    assert run("password", "--username", "demo", "--password-stdin", "--out", str(out), client_id="short",
               stdin="demo\n").exit_code == 0
    old = json.loads(out.read_text())
    result = run("refresh", "--refresh-token-file", str(out), client_id="short")
    assert result.exit_code == 0, result.stderr
    new = json.loads(result.stdout)
    assert new["access_token"] != old["access_token"]
    assert new["refresh_token"] == old["refresh_token"]  # Mediaflow sent none: the old one is kept
    assert emulator.refreshes() == 1


@pytest.mark.parametrize("form", ['{"refresh_token": "%s"}', '"%s"', "\ufeff%s\n", "  %s  "],
                         ids=["token-set", "json-string", "byte-order-mark", "spaces"])
def test_a_token_file_may_hold_the_token_in_each_usual_form(run: Callable[..., Any], tmp_path: Path,
                                                            emulator: Emulator, form: str) -> None:
    out = tmp_path / "token.json"
    assert run("password", "--username", "demo", "--password-stdin", "--out", str(out), stdin="demo\n").exit_code == 0
    (tmp_path / "token.txt").write_text(form % json.loads(out.read_text())["refresh_token"], encoding="utf-8")
    result = run("refresh", "--refresh-token-file", str(tmp_path / "token.txt"))
    assert result.exit_code == 0, result.stderr


def test_refresh_from_the_environment_with_rotation_prints_the_new_refresh_token(run: Callable[..., Any],
                                                                                 tmp_path: Path) -> None:
    out = tmp_path / "token.json"
    run("password", "--username", "demo", "--password-stdin", "--out", str(out), client_id="rotating", stdin="demo\n")
    old = json.loads(out.read_text())["refresh_token"]
    result = run("refresh", client_id="rotating", env={"MEDIAFLOW_REFRESH_TOKEN": old})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["refresh_token"] not in ("", None, old)


def test_me_shows_that_a_token_works(run: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "token.json"
    run("password", "--username", "editor", "--password-stdin", "--out", str(out), stdin="editor\n")
    result = run("me", "--token-file", str(out))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "Erika Editor"
    assert json.loads(out.read_text())["access_token"] not in result.stdout


ERRORS = [
    ("wrong-credentials", ["password", "--username", "demo", "--password-stdin"], {"stdin": "wrong\n"},
     cli.EXIT_CREDENTIALS, "refused the username or password"),
    ("not-allowed", ["password", "--username", "demo", "--password-stdin"],
     {"stdin": "demo\n", "client_id": "code-only"}, cli.EXIT_NOT_ALLOWED, "unauthorized_client"),
    ("invalid-grant", ["refresh"], {"env": {"MEDIAFLOW_REFRESH_TOKEN": "not-a-token"}, "client_id": "short"},
     cli.EXIT_INVALID_GRANT, "invalid_grant"),
    ("missing-setting", ["refresh"], {"env": {"MEDIAFLOW_REFRESH_TOKEN": ""}}, cli.EXIT_SETTING,
     "MEDIAFLOW_REFRESH_TOKEN"),
    ("empty-password", ["password", "--username", "demo", "--password-stdin"], {"stdin": "\n"}, cli.EXIT_SETTING,
     "no password"),
]


@pytest.mark.parametrize(("args", "options", "code", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_each_error_is_one_line_with_its_own_exit_code(run: Callable[..., Any], args: list[str],
                                                       options: dict[str, Any], code: int, message: str) -> None:
    result = run(*args, **options)
    assert result.exit_code == code
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("fault", "code", "message"),
    [({"kind": "delay", "delay": 1.5}, cli.EXIT_UNREACHABLE, "did not answer in time"),
     ({"kind": "drop"}, cli.EXIT_UNREACHABLE, "cannot be reached"),
     ({"kind": "garbage"}, cli.EXIT_BAD_ANSWER, "without JSON"),
     ({"kind": "status", "status": 503}, cli.EXIT_BAD_ANSWER, "HTTP 503")],
    ids=["timeout", "dropped", "non-json", "503"],
)
def test_mediaflow_failures_have_their_own_exit_codes(run: Callable[..., Any], emulator: Emulator,
                                                      fault: dict[str, Any], code: int, message: str) -> None:
    emulator.fault(endpoint="token", **fault)
    result = run("password", "--username", "demo", "--password-stdin", stdin="demo\n", MEDIAFLOW_READ_TIMEOUT=0.5)
    assert result.exit_code == code
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unreachable_mediaflow(run: Callable[..., Any]) -> None:
    result = run("password", "--username", "demo", "--password-stdin", stdin="demo\n",
                 MEDIAFLOW_TOKEN_URL=f"http://127.0.0.1:{free_port()}/token")
    assert result.exit_code == cli.EXIT_UNREACHABLE
    assert "cannot be reached" in result.stderr


def test_expired_access_token_for_me(run: Callable[..., Any], tmp_path: Path) -> None:
    token = tmp_path / "token.txt"
    token.write_text("expired-or-unknown-token\n")
    result = run("me", "--token-file", str(token))
    assert result.exit_code == cli.EXIT_INVALID_GRANT
    assert "HTTP 401" in result.stderr


def test_a_missing_setting_stops_the_command_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support import ROOT, env_with

    env = env_with(MEDIAFLOW_CLIENT_ID="some-client", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "mediaflow", "refresh"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == cli.EXIT_SETTING
    assert result.stderr.strip().endswith("MEDIAFLOW_CLIENT_SECRET is not set: Mediaflow requires it with "
                                          "MEDIAFLOW_CLIENT_ID")
    assert "Traceback" not in result.stderr


# A string that looks like a token: it must never reach a message, whatever the file around it.
LEAK = "at-LEAKME-0123456789abcdef"
OTHER_UID = 65534  # nobody; the tests run as root, which may give a file away


def nowhere() -> dict[str, str]:
    """Settings that point at a closed port: a command that asks Mediaflow anyway exits 6, not 2."""
    closed = f"http://127.0.0.1:{free_port()}"
    return {"MEDIAFLOW_TOKEN_URL": f"{closed}/token", "MEDIAFLOW_API_BASE": f"{closed}/1"}


def only_error_line(result: Any) -> str:
    """The one line a failure prints: nothing else on stderr, nothing on stdout, no token text."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert LEAK not in result.stderr and "LEAKME" not in result.stderr
    return str(lines[0])


def make_symlink_to_another_users_file(tmp_path: Path) -> tuple[Path, Path]:
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours\n")
    os.chown(victim, OTHER_UID, OTHER_UID)
    (tmp_path / "token.json").symlink_to(victim)
    return tmp_path / "token.json", victim


def make_dangling_symlink(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "planted.json"
    (tmp_path / "token.json").symlink_to(target)
    return tmp_path / "token.json", target


def make_another_users_file(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "token.json"
    out.write_text("not yours\n")
    os.chown(out, OTHER_UID, OTHER_UID)
    return out, out


def make_missing_folder(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "no-such-folder" / "token.json", tmp_path / "no-such-folder"


OUT_REFUSALS = [
    ("symlink-to-another-users-file", make_symlink_to_another_users_file, "symbolic link"),
    ("dangling-symlink", make_dangling_symlink, "symbolic link"),
    ("another-users-file", make_another_users_file, "belongs to another user"),
    ("missing-folder", make_missing_folder, "cannot write"),
]


@pytest.mark.parametrize(("make", "message"), [r[1:] for r in OUT_REFUSALS], ids=[r[0] for r in OUT_REFUSALS])
def test_out_never_writes_through_a_link_or_into_another_users_file(
    run: Callable[..., Any], tmp_path: Path, make: Callable[[Path], tuple[Path, Path]], message: str,
) -> None:
    out, untouched = make(tmp_path)
    before = untouched.read_bytes() if untouched.is_file() else None
    owner = untouched.lstat().st_uid if untouched.exists() else None
    # Refused before Mediaflow is asked (it is not there: that would be exit 6), so no token set is lost.
    result = run("password", "--username", "demo", "--password-stdin", "--out", str(out), stdin="demo\n",
                 **nowhere())
    assert result.exit_code == cli.EXIT_SETTING
    assert message in only_error_line(result)
    assert (untouched.read_bytes() if untouched.is_file() else None) == before
    assert (untouched.lstat().st_uid if untouched.exists() else None) == owner
    assert out.is_symlink() == (make in (make_symlink_to_another_users_file, make_dangling_symlink))
    assert not [p for p in tmp_path.rglob("*.tmp")], "no temporary file is left behind"


def test_out_replaces_an_existing_file_with_a_new_0600_one(run: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "token.json"
    out.write_text("old\n")
    out.chmod(0o644)
    other_name = tmp_path / "out" / "other-name.txt"
    os.link(out, other_name)  # a second name of the same file must not receive the token set
    old_inode = out.stat().st_ino
    result = run("password", "--username", "demo", "--password-stdin", "--out", str(out), stdin="demo\n")
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.stat().st_uid == os.geteuid()
    assert out.stat().st_ino != old_inode
    assert other_name.read_text() == "old\n"
    assert set(json.loads(out.read_text())) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["other-name.txt", "token.json"]


def write_bytes(content: bytes) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / "token.json"
        path.write_bytes(content)
        return path

    return make


def make_folder(tmp_path: Path) -> Path:
    (tmp_path / "token.json").mkdir()
    return tmp_path / "token.json"


def make_fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "token.fifo")
    return tmp_path / "token.fifo"


def make_symlink_loop(tmp_path: Path) -> Path:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    return tmp_path / "a"


BAD_TOKEN_FILES = [
    ("broken-json", write_bytes(f'{{"access_token": "{LEAK}", "refresh_token": "{LEAK}"'.encode()), "not valid JSON"),
    ("json-list", write_bytes(f'[{{"access_token": "{LEAK}", "refresh_token": "{LEAK}"}}]'.encode()), "JSON"),
    ("json-without-brace", write_bytes(f'"access_token": "{LEAK}", "refresh_token": "{LEAK}"}}'.encode()),
     "not valid JSON"),
    ("json-field-not-a-token", write_bytes(f'{{"access_token": "{LEAK}\\n{LEAK}", "refresh_token": '
                                           f'"{LEAK} {LEAK}"}}'.encode()), "without a usable"),
    ("deeply-nested-json", write_bytes(b'{"a": ' * 10000), "not valid JSON"),
    ("binary-junk", write_bytes(bytes(range(256)) + LEAK.encode()), "not text"),
    ("control-characters", write_bytes(f"\x00\x01{LEAK}\x7f".encode()), "not a token"),
    ("two-lines", write_bytes(f"{LEAK}\n{LEAK}\n".encode()), "not a token"),
    ("huge", write_bytes(LEAK.encode() * 50_000), "larger than 64 KiB"),
    ("empty", write_bytes(b"\n"), "is empty"),
    ("folder", make_folder, "cannot read"),
    ("fifo", make_fifo, "not a regular file"),  # would wait for a writer forever
    ("symlink-loop", make_symlink_loop, "cannot read"),
    ("missing", lambda tmp_path: tmp_path / "missing.json", "cannot read"),
]


@pytest.mark.parametrize("option", ["me --token-file", "refresh --refresh-token-file"])
@pytest.mark.parametrize(("make", "message"), [b[1:] for b in BAD_TOKEN_FILES], ids=[b[0] for b in BAD_TOKEN_FILES])
def test_a_bad_token_file_is_one_line_without_its_text(run: Callable[..., Any], tmp_path: Path, option: str,
                                                       make: Callable[[Path], Path], message: str) -> None:
    path = make(tmp_path)
    # Mediaflow is not there: a command that sent the file's text anyway would exit 6, not 2.
    result = run(*option.split(), str(path), **nowhere())
    assert result.exit_code == cli.EXIT_SETTING
    assert message in only_error_line(result)
