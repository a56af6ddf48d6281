"""The emulator's clients, users and media library: defaults, and a JSON file checked field by field."""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from .library import (
    FILE_TYPES,
    GDPR_STATUSES,
    Folder,
    Library,
    License,
    MediaFile,
    default_library,
    extension_of,
)

T = TypeVar("T")
GRANT_TYPES = ("authorization_code", "refresh_token", "password")
DEMO_CLIENT_ID = "mediaflow-portal-demo"
DEMO_CLIENT_SECRET = "demo-client-secret-not-for-production"  # noqa: S105 - public by design: demo only


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Client:
    id: str
    secret: str
    redirect_uris: tuple[str, ...]
    grants: tuple[str, ...] = GRANT_TYPES
    issue_refresh_token: bool = True
    expires_in: int = 3600
    # Lifetime of the tokens the refresh grant issues; None: expires_in. Lets a test watch one expiry only.
    refreshed_expires_in: int | None = None
    rotate_refresh_tokens: bool = False
    # One newer Mediaflow example shows "refresh_token": "" instead of leaving it out.
    empty_refresh_token_on_refresh: bool = False


@dataclass(frozen=True)
class User:
    id: int
    username: str
    password: str
    name: str
    email: str
    customer_id: int = 1


@dataclass(frozen=True)
class EmulatorConfig:
    clients: tuple[Client, ...]
    users: tuple[User, ...]
    code_lifetime: int = 60
    source: str = "built-in defaults"
    library: Library = field(default_factory=default_library)

    def client(self, client_id: str | None) -> Client | None:
        return next((c for c in self.clients if c.id == client_id), None)

    def user(self, username: str | None) -> User | None:
        return next((u for u in self.users if u.username == username), None)

    def authenticate(self, username: str | None, password: str | None) -> User | None:
        """The user with these credentials, compared in constant time, or None."""
        user = self.user(username)
        if user is None or password is None:
            return None
        if not hmac.compare_digest(password.encode("utf-8", "surrogatepass"), user.password.encode()):
            return None
        return user


def default_config() -> EmulatorConfig:
    """One client matching the portal's demo settings, and the user demo / demo."""
    demo_client = Client(
        id=DEMO_CLIENT_ID,
        secret=DEMO_CLIENT_SECRET,
        redirect_uris=(
            "http://127.0.0.1:5000/callback",
            "http://localhost:5000/callback",
        ),
    )
    users = (
        User(1, "demo", "demo", "Demo User", "demo@example.com"),
        User(2, "editor", "editor", "Erika Editor", "editor@example.com"),
    )
    return EmulatorConfig(clients=(demo_client,), users=users)


def load_config(path: str | Path) -> EmulatorConfig:
    """Read a JSON config file, naming the file and the field in any error."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error.__class__.__name__})") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno})") from None
    return parse_config(raw, source=str(path))


def parse_config(raw: Any, source: str = "config") -> EmulatorConfig:
    """Build the config from parsed JSON; unknown keys and wrong types are errors."""
    reader = _Reader(source)
    top = reader.mapping(raw, "", {"clients", "users", "code_lifetime", "library"})
    defaults = default_config()
    clients = defaults.clients
    users = defaults.users
    if "clients" in top:
        items = reader.array(top["clients"], "clients")
        clients = tuple(_client(reader, item, f"clients[{i}]") for i, item in enumerate(items))
        reader.unique([c.id for c in clients], "clients", "id")
    if "users" in top:
        items = reader.array(top["users"], "users")
        users = tuple(_user(reader, item, f"users[{i}]", i + 1) for i, item in enumerate(items))
        reader.unique([u.username for u in users], "users", "username")
    code_lifetime = reader.positive_int(top.get("code_lifetime", 60), "code_lifetime")
    library = _library(reader, top["library"], {u.username for u in users}) if "library" in top else defaults.library
    return EmulatorConfig(clients=clients, users=users, code_lifetime=code_lifetime, source=source, library=library)


def _client(reader: _Reader, raw: Any, where: str) -> Client:
    fields = {
        "id", "secret", "redirect_uris", "grants", "issue_refresh_token",
        "expires_in", "refreshed_expires_in", "rotate_refresh_tokens", "empty_refresh_token_on_refresh",
    }
    item = reader.mapping(raw, where, fields, required={"id", "secret", "redirect_uris"})
    grants: tuple[str, ...] = tuple(reader.strings(item.get("grants", list(GRANT_TYPES)), f"{where}.grants"))
    for grant in grants:
        if grant not in GRANT_TYPES:
            reader.fail(f"{where}.grants", f"unknown grant {grant!r}; use {', '.join(GRANT_TYPES)}")
    uris: tuple[str, ...] = tuple(reader.strings(item["redirect_uris"], f"{where}.redirect_uris"))
    if not uris:
        reader.fail(f"{where}.redirect_uris", "must list at least one URI")
    return Client(
        id=reader.text(item["id"], f"{where}.id"),
        secret=reader.text(item["secret"], f"{where}.secret"),
        redirect_uris=uris,
        grants=grants,
        issue_refresh_token=reader.boolean(item.get("issue_refresh_token", True), f"{where}.issue_refresh_token"),
        expires_in=reader.positive_int(item.get("expires_in", 3600), f"{where}.expires_in"),
        refreshed_expires_in=(None if item.get("refreshed_expires_in") is None else
                              reader.positive_int(item["refreshed_expires_in"], f"{where}.refreshed_expires_in")),
        rotate_refresh_tokens=reader.boolean(
            item.get("rotate_refresh_tokens", False), f"{where}.rotate_refresh_tokens"
        ),
        empty_refresh_token_on_refresh=reader.boolean(
            item.get("empty_refresh_token_on_refresh", False), f"{where}.empty_refresh_token_on_refresh"
        ),
    )


def _user(reader: _Reader, raw: Any, where: str, number: int) -> User:
    item = reader.mapping(raw, where, {"username", "password", "name", "email", "customer_id"},
                          required={"username", "password"})
    username = reader.text(item["username"], f"{where}.username")
    customer_id = item.get("customer_id", 1)
    if isinstance(customer_id, bool) or not isinstance(customer_id, int) or customer_id <= 0:
        reader.fail(f"{where}.customer_id", "must be a positive whole number")
    return User(
        id=number,
        username=username,
        password=reader.text(item["password"], f"{where}.password"),
        name=reader.text(item.get("name", username), f"{where}.name"),
        email=reader.text(item.get("email", f"{username}@example.com"), f"{where}.email"),
        customer_id=customer_id,
    )


def _library(reader: _Reader, raw: Any, usernames: set[str]) -> Library:
    top = reader.mapping(raw, "library", {"folders", "files"}, required={"folders", "files"})
    folders = [_folder(reader, item, f"library.folders[{i}]", usernames)
               for i, item in enumerate(reader.array(top["folders"], "library.folders"))]
    reader.unique([str(f.id) for f in folders], "library.folders", "id")
    by_id = {f.id: f for f in folders}
    for i, folder in enumerate(folders):
        where = f"library.folders[{i}]"
        if folder.parent is not None and folder.parent not in by_id:
            reader.fail(f"{where}.parent", f"no folder has id {folder.parent}")
        seen, above = {folder.id}, folder.parent
        while above is not None and above in by_id:
            if above in seen:
                reader.fail(f"{where}.parent", "folders form a loop")
            seen.add(above)
            if folder.owner and by_id[above].owner not in (None, folder.owner):
                reader.fail(f"{where}.owner", "differs from the owner of the private folder it is in")
            above = by_id[above].parent
    files = [_file(reader, item, f"library.files[{i}]", by_id)
             for i, item in enumerate(reader.array(top["files"], "library.files"))]
    reader.unique([str(f.id) for f in files], "library.files", "id")
    return Library(folders, files)


def _folder(reader: _Reader, raw: Any, where: str, usernames: set[str]) -> Folder:
    item = reader.mapping(raw, where, {"id", "name", "parent", "archived", "owner"}, required={"id", "name"})
    owner = reader.optional(item.get("owner"), f"{where}.owner", reader.text)
    if owner is not None and owner not in usernames:
        reader.fail(f"{where}.owner", f"no user is called {owner!r}")
    return Folder(
        id=reader.integer(item["id"], f"{where}.id"),
        name=reader.text(item["name"], f"{where}.name"),
        parent=reader.optional(item.get("parent"), f"{where}.parent", reader.integer),
        archived=reader.boolean(item.get("archived", False), f"{where}.archived"),
        owner=owner,
    )


FILE_FIELDS = {
    "id", "name", "filename", "folder_id", "uploaded", "uploaded_by", "filesize", "gdpr_status", "width", "height",
    "length", "photographer", "description", "alttext", "allow_download", "allow_download_reason", "warn_from",
    "license",
}


def _file(reader: _Reader, raw: Any, where: str, folders: dict[int, Folder]) -> MediaFile:
    item = reader.mapping(raw, where, FILE_FIELDS, required={"id", "name", "filename", "folder_id"})
    filename = reader.text(item["filename"], f"{where}.filename")
    if extension_of(filename) not in FILE_TYPES:
        reader.fail(f"{where}.filename", f"must end in one of {', '.join('.' + e for e in FILE_TYPES)}")
    folder_id = reader.integer(item["folder_id"], f"{where}.folder_id")
    if folder_id not in folders:
        reader.fail(f"{where}.folder_id", f"no folder has id {folder_id}")
    gdpr_status = item.get("gdpr_status", "OK")
    if gdpr_status not in GDPR_STATUSES:
        reader.fail(f"{where}.gdpr_status", f"must be one of {', '.join(GDPR_STATUSES)}")
    text = reader.any_text
    return MediaFile(
        id=reader.integer(item["id"], f"{where}.id"),
        name=reader.text(item["name"], f"{where}.name"),
        filename=filename,
        folder_id=folder_id,
        uploaded=reader.timestamp(item.get("uploaded", "2024-01-15T09:30:00"), f"{where}.uploaded"),
        uploaded_by=text(item.get("uploaded_by", "Demo User"), f"{where}.uploaded_by"),
        filesize=reader.optional(item.get("filesize"), f"{where}.filesize", reader.size),
        gdpr_status=gdpr_status,
        width=reader.optional(item.get("width"), f"{where}.width", reader.size),
        height=reader.optional(item.get("height"), f"{where}.height", reader.size),
        length=reader.optional(item.get("length"), f"{where}.length", reader.size),
        photographer=text(item.get("photographer", ""), f"{where}.photographer"),
        description=text(item.get("description", ""), f"{where}.description"),
        alttext=text(item.get("alttext", ""), f"{where}.alttext"),
        allow_download=reader.boolean(item.get("allow_download", True), f"{where}.allow_download"),
        allow_download_reason=text(item.get("allow_download_reason", ""), f"{where}.allow_download_reason"),
        warn_from=reader.optional(item.get("warn_from"), f"{where}.warn_from", reader.day),
        license=_license(reader, item["license"], f"{where}.license") if "license" in item else License(),
    )


def _license(reader: _Reader, raw: Any, where: str) -> License:
    fields = {"rights_exists", "rights_information", "license_information", "download_warning", "lock_file",
              "use_from", "use_to"}
    item = reader.mapping(raw, where, fields)
    return License(
        rights_exists=reader.boolean(item.get("rights_exists", False), f"{where}.rights_exists"),
        rights_information=reader.any_text(item.get("rights_information", ""), f"{where}.rights_information"),
        license_information=reader.any_text(item.get("license_information", ""), f"{where}.license_information"),
        download_warning=reader.any_text(item.get("download_warning", ""), f"{where}.download_warning"),
        lock_file=reader.boolean(item.get("lock_file", False), f"{where}.lock_file"),
        use_from=reader.optional(item.get("use_from"), f"{where}.use_from", reader.day),
        use_to=reader.optional(item.get("use_to"), f"{where}.use_to", reader.day),
    )


def _is_time(raw: Any, pattern: str, layout: str) -> bool:
    """Exactly this layout, zero-padded (strptime alone takes 2020-1-5), and a real date."""
    if not isinstance(raw, str) or not re.fullmatch(pattern, raw):
        return False
    try:
        datetime.strptime(raw, layout)
    except ValueError:
        return False
    return True


class _Reader:
    """Type checks that raise ConfigError naming the file and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {where or 'top level'}: {problem}")

    def mapping(
        self, raw: Any, where: str, allowed: set[str], required: frozenset[str] | set[str] = frozenset()
    ) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.fail(where, "must be a JSON object")
        for key in sorted(set(raw) - allowed):
            self.fail(f"{where}.{key}".lstrip("."), f"unknown field; expected one of {', '.join(sorted(allowed))}")
        for key in sorted(required - set(raw)):
            self.fail(f"{where}.{key}".lstrip("."), "is required")
        return raw

    def array(self, raw: Any, where: str) -> list[Any]:
        if not isinstance(raw, list):
            self.fail(where, "must be a JSON array")
        return raw

    def text(self, raw: Any, where: str) -> str:
        if not isinstance(raw, str) or not raw:
            self.fail(where, "must be a non-empty string")
        return raw

    def any_text(self, raw: Any, where: str) -> str:
        if not isinstance(raw, str):
            self.fail(where, "must be a string")
        return raw

    def integer(self, raw: Any, where: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.fail(where, "must be a whole number")
        return raw

    def size(self, raw: Any, where: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            self.fail(where, "must be a whole number, 0 or more")
        return raw

    def day(self, raw: Any, where: str) -> str:
        if not _is_time(raw, r"[0-9]{4}-[0-9]{2}-[0-9]{2}", "%Y-%m-%d"):
            self.fail(where, "must be a date, YYYY-MM-DD")
        return str(raw)

    def timestamp(self, raw: Any, where: str) -> str:
        if not _is_time(raw, r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}", "%Y-%m-%dT%H:%M:%S"):
            self.fail(where, "must be a time, YYYY-MM-DDTHH:MM:SS")
        return str(raw)

    def optional(self, raw: Any, where: str, check: Callable[[Any, str], T]) -> T | None:
        return None if raw is None else check(raw, where)

    def strings(self, raw: Any, where: str) -> list[str]:
        return [self.text(item, f"{where}[{i}]") for i, item in enumerate(self.array(raw, where))]

    def boolean(self, raw: Any, where: str) -> bool:
        if not isinstance(raw, bool):
            self.fail(where, "must be true or false")
        return raw

    def positive_int(self, raw: Any, where: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
            self.fail(where, "must be a positive whole number of seconds")
        return raw

    def unique(self, values: list[str], where: str, name: str) -> None:
        seen = {v for v in values if values.count(v) > 1}
        if seen:
            self.fail(where, f"duplicate {name} {sorted(seen)[0]!r}")
