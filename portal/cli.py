"""`flask --app app mediaflow …`: the password and refresh-token grants for scripts and servers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from flask.cli import AppGroup

from . import mediaflow

# One distinct exit code per kind of failure, so scripts can tell them apart.
EXIT_SETTING = 2          # a missing setting or input (click's usage errors share it)
EXIT_CREDENTIALS = 3      # wrong username or password
EXIT_NOT_ALLOWED = 4      # unauthorized_client: this client id may not use the grant
EXIT_INVALID_GRANT = 5    # the refresh token (or access token) is refused
EXIT_UNREACHABLE = 6      # Mediaflow cannot be reached or does not answer in time
EXIT_BAD_ANSWER = 7       # Mediaflow answered something that is not the documented JSON
EXIT_REFUSED = 8          # any other refusal, e.g. invalid_client

cli = AppGroup("mediaflow", help="Get and use Mediaflow tokens without a browser (password and refresh grants).")


@cli.command("password")
@click.option("--username", help="Mediaflow username (asked for when missing).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--state", help="Send this state and check that Mediaflow echoes it.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the token set here (mode 0600).")
def password_command(username: str | None, password_stdin: bool, state: str | None, out: Path | None) -> None:
    """Get a token set with the password grant (trusted scripts only; see README)."""
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
@click.option("--refresh-token-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A file with the refresh token, or a token set written by `password --out`.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the token set here (mode 0600).")
def refresh_command(refresh_token_file: Path | None, out: Path | None) -> None:
    """Get a new token set from a refresh token (the long-lived "server key")."""
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
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="A file with the access token, or a token set written by `password --out`.")
def me_command(token_file: Path) -> None:
    """Call GET /me with an access token, to show that it works."""
    try:
        user = mediaflow.fetch_me(read_token(token_file, "access_token"))
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
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when the file already existed with looser permissions
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    except OSError as error:
        fail(EXIT_SETTING, f"cannot write {out}: {error.strerror}")
    click.echo(f"Token set written to {out} (mode 0600).", err=True)


def read_token(path: Path, field: str) -> str:
    """A token from a plain file, or from the `field` of a JSON token set."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        fail(EXIT_SETTING, f"cannot read {path}: {getattr(error, 'strerror', None) or 'not text'}")
    if text.startswith("{"):
        try:
            value = json.loads(text).get(field)
        except (ValueError, AttributeError):
            value = None
        if not isinstance(value, str) or not value:
            fail(EXIT_SETTING, f"{path} is JSON without a usable {field!r}")
        return value
    if not text:
        fail(EXIT_SETTING, f"{path} is empty")
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
