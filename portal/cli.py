"""`flask --app app mediaflow …`: the password and refresh-token grants for scripts and servers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import click
from flask.cli import AppGroup

from . import api, mediaflow

# One distinct exit code per kind of failure, so scripts can tell them apart.
EXIT_SETTING = 2          # a missing or unusable setting, input or file (click's usage errors share it)
EXIT_CREDENTIALS = 3      # wrong username or password
EXIT_NOT_ALLOWED = 4      # unauthorized_client: this client id may not use the grant
EXIT_INVALID_GRANT = 5    # the refresh token (or access token) is refused
EXIT_UNREACHABLE = 6      # Mediaflow cannot be reached or does not answer in time
EXIT_BAD_ANSWER = 7       # Mediaflow answered something that is not the documented JSON
EXIT_REFUSED = 8          # any other refusal, e.g. invalid_client

# Far more than any token set; a bigger file is not one, and is not read whole.
MAX_TOKEN_FILE = 64 * 1024
# RFC 6749 allows visible ASCII in tokens; a space or line break means the file holds something else.
TOKEN = re.compile(r"[\x21-\x7e]+")

cli = AppGroup("mediaflow", help="Get and use Mediaflow tokens without a browser (password and refresh grants).")


@cli.command("password")
@click.option("--username", help="Mediaflow username (asked for when missing).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--state", help="Send this state and check that Mediaflow echoes it.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the token set here (mode 0600).")
def password_command(username: str | None, password_stdin: bool, state: str | None, out: Path | None) -> None:
    """Get a token set with the password grant (trusted scripts only; see README)."""
    if out is not None:
        check_out(out)
    if not username:
        username = click.prompt("Username", err=True)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail(EXIT_SETTING, "no password on standard input")
    else:
        password = click.prompt("Password", hide_input=True, err=True)
    try:
        token = mediaflow.password_grant(str(username), password, state=state)
    except mediaflow.MediaflowRefused as error:
        if error.error == "invalid_grant":
            fail(EXIT_CREDENTIALS, "Mediaflow refused the username or password (invalid_grant)")
        raise_for(error)
    except mediaflow.MediaflowError as error:
        raise_for(error)
    emit(token_output(token), out)


@cli.command("refresh")
@click.option("--refresh-token-file", type=click.Path(path_type=Path),
              help="A file with the refresh token, or a token set written by `password --out`.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the token set here (mode 0600).")
def refresh_command(refresh_token_file: Path | None, out: Path | None) -> None:
    """Get a new token set from a refresh token (the long-lived "server key")."""
    if out is not None:
        # Before the grant: with rotation, a token set that cannot be written is lost for good.
        check_out(out)
    if refresh_token_file is not None:
        refresh_token = read_token(refresh_token_file, "refresh_token")
    else:
        refresh_token = os.environ.get("MEDIAFLOW_REFRESH_TOKEN", "").strip()
    if not refresh_token:
        fail(EXIT_SETTING, "no refresh token: pass --refresh-token-file or set MEDIAFLOW_REFRESH_TOKEN")
    try:
        token = mediaflow.refresh(refresh_token)
    except mediaflow.MediaflowError as error:
        raise_for(error)
    # Mediaflow may leave the refresh token out: the old one stays valid, so keep it.
    emit(token_output(token, fallback_refresh_token=refresh_token), out)


@cli.command("me")
@click.option("--token-file", type=click.Path(path_type=Path), required=True,
              help="A file with the access token, or a token set written by `password --out`.")
def me_command(token_file: Path) -> None:
    """Call GET /me with an access token, to show that it works."""
    try:
        user = api.me(read_token(token_file, "access_token"))
    except mediaflow.MediaflowRefused as error:
        if error.status == 401:
            fail(EXIT_INVALID_GRANT, "Mediaflow refused the access token (HTTP 401): refresh it or log in again")
        raise_for(error)
    except mediaflow.MediaflowError as error:
        raise_for(error)
    click.echo(json.dumps(user, indent=2))


def token_output(token: dict[str, Any], fallback_refresh_token: str | None = None) -> dict[str, Any]:
    """The documented fields only, in a stable order."""
    result = {"access_token": token["access_token"], "token_type": token.get("token_type", "Bearer"),
              "expires_in": token["expires_in"],
              "refresh_token": token.get("refresh_token") or fallback_refresh_token}
    if token.get("state"):
        result["state"] = token["state"]
    return result


def emit(token: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(token, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    check_out(out)  # again: the path may have changed while Mediaflow answered
    write_private(out, text)
    click.echo(f"Token set written to {out} (mode 0600).", err=True)


def check_out(out: Path) -> None:
    """Refuse an --out that is a symbolic link, not a file, another user's file, or in no folder."""
    try:
        found = out.lstat()
    except FileNotFoundError:
        if not out.parent.is_dir():
            fail(EXIT_SETTING, f"cannot write {out}: there is no folder {out.parent}")
        return
    except OSError as error:
        fail(EXIT_SETTING, f"cannot write {out}: {error.strerror}")
    if stat.S_ISLNK(found.st_mode):
        fail(EXIT_SETTING, f"{out} is a symbolic link: give the path of the file itself")
    if not stat.S_ISREG(found.st_mode):
        fail(EXIT_SETTING, f"cannot write {out}: not a regular file")
    if found.st_uid != os.geteuid():
        fail(EXIT_SETTING, f"{out} belongs to another user (uid {found.st_uid}): not replacing it")


def write_private(out: Path, text: str) -> None:
    """Write a new 0600 file beside `out`, then rename it over `out`: never through a link, never half written."""
    try:
        # mkstemp opens with O_CREAT | O_EXCL | O_NOFOLLOW: a name planted in the folder is never written through.
        fd, temp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as error:
        fail(EXIT_SETTING, f"cannot write {out}: {error.strerror}")
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)  # exactly 0600, whatever the umask
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # rename replaces the name, never a file it pointed to: a link swapped in meanwhile is replaced itself.
        os.replace(temp, out)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        fail(EXIT_SETTING, f"cannot write {out}: {error.strerror}")
    # So the rename survives a crash too; some filesystems cannot sync a folder, and the file itself is synced.
    with contextlib.suppress(OSError):
        folder = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def read_token(path: Path, field: str) -> str:
    """A token from a plain file, or from the `field` of a JSON token set; no message ever quotes the file."""
    try:
        # Not blocking, then only a regular file: a FIFO or a device would wait forever for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                fail(EXIT_SETTING, f"{path} is not a regular file")
            data = handle.read(MAX_TOKEN_FILE + 1)
    except OSError as error:
        fail(EXIT_SETTING, f"cannot read {path}: {error.strerror}")
    if len(data) > MAX_TOKEN_FILE:
        fail(EXIT_SETTING, f"{path} is larger than {MAX_TOKEN_FILE // 1024} KiB: not a token file")
    try:
        text = data.decode("utf-8-sig").strip()  # an editor's byte-order mark is not part of the token
    except UnicodeDecodeError:
        fail(EXIT_SETTING, f"{path} is not text")
    if not text:
        fail(EXIT_SETTING, f"{path} is empty")
    if text.startswith(('"', "{", "[")):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            # The position only: the decoder's message never quotes the text, but keep it that way.
            fail(EXIT_SETTING, f"{path} is not valid JSON (line {error.lineno}, column {error.colno})")
        except RecursionError:
            fail(EXIT_SETTING, f"{path} is not valid JSON (nested too deeply)")
        value = document if isinstance(document, str) else document.get(field) if isinstance(document, dict) else None
        if not isinstance(value, str) or not TOKEN.fullmatch(value):
            fail(EXIT_SETTING, f"{path} is JSON without a usable {field!r}")
        return value
    if not TOKEN.fullmatch(text):
        fail(EXIT_SETTING, f"{path} is not a token: one word of visible ASCII, or a JSON token set")
    return text


def raise_for(error: mediaflow.MediaflowError) -> NoReturn:
    if isinstance(error, mediaflow.MediaflowRefused):
        if error.error == "unauthorized_client":
            fail(EXIT_NOT_ALLOWED, "this client id may not use this grant (unauthorized_client)")
        if error.error == "invalid_grant":
            fail(EXIT_INVALID_GRANT, "Mediaflow refused the grant (invalid_grant): log in again for a new token")
        fail(EXIT_REFUSED, f"Mediaflow refused the request ({error.error})")
    if isinstance(error, mediaflow.MediaflowUnavailable) and error.status == 502:
        fail(EXIT_BAD_ANSWER, str(error))
    fail(EXIT_UNREACHABLE, str(error))


def fail(code: int, message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)
