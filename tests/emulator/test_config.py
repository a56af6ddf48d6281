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


def test_a_library_is_read_from_the_file_with_defaults_for_what_it_leaves_out() -> None:
    config = parse_config({"users": [{"username": "a", "password": "a"}], "library": {
        "folders": [{"id": -1, "name": "Top"}, {"id": 2, "name": "Mine", "parent": -1, "owner": "a"},
                    {"id": 3, "name": "Inside mine", "parent": 2, "archived": True}],
        "files": [{"id": -7, "name": "Film", "filename": "film.MP4", "folder_id": 3, "length": 12,
                   "license": {"rights_exists": True, "use_to": "2020-12-31"}},
                  {"id": 8, "name": "Logo", "filename": "logo.png", "folder_id": -1, "filesize": 0,
                   "gdpr_status": "AWAIT_CONSENT", "allow_download": False, "allow_download_reason": "No."}]}})
    library = config.library
    assert [(e.folder.id, e.depth, e.private) for e in library.tree("a")] == [(-1, 0, False), (2, 1, True),
                                                                             (3, 2, True)]
    film, logo = library.files[-7], library.files[8]
    assert film.type.kind == "video" and film.license.use_to == "2020-12-31" and film.uploaded_by == "Demo User"
    assert logo.size == 0 and logo.gdpr_status == "AWAIT_CONSENT" and not logo.allow_download
    assert library.owner(3) == "a" and not library.can_see(3, "b")
    assert parse_config({}).library.files.keys() == default_config().library.files.keys()


def test_readmes_example_config_file_is_valid() -> None:
    section = (ROOT / "README.md").read_text().partition("**Config file** (JSON)")[2]
    example = section.partition("```json\n")[2].partition("```")[0]
    config = parse_config(json.loads(example), source="README")
    assert config.library.files[-10].license.use_to == "2020-12-31" and config.library.owner(-2) == "demo"


GOOD_CLIENT = {"id": "c", "secret": "s", "redirect_uris": ["http://x/cb"]}
FOLDER = {"id": 1, "name": "F"}
FILE = {"id": 1, "name": "N", "filename": "n.jpg", "folder_id": 1}


def library(folders: list[dict[str, object]] | None = None, files: list[dict[str, object]] | None = None,
            **top: object) -> dict[str, object]:
    return {"library": {"folders": [FOLDER] if folders is None else folders, "files": files or [], **top}}

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
    ({"library": []}, "library: must be a JSON object"),
    ({"library": {"folders": []}}, "library.files: is required"),
    (library(shelves=[]), "library.shelves: unknown field"),
    (library([{"name": "F"}]), "library.folders[0].id: is required"),
    (library([{"id": "1", "name": "F"}]), "library.folders[0].id: must be a whole number"),
    (library([{"id": 1.0, "name": "F"}]), "library.folders[0].id: must be a whole number"),
    (library([{"id": 1, "name": ""}]), "library.folders[0].name: must be a non-empty string"),
    (library([FOLDER, FOLDER]), "library.folders: duplicate id '1'"),
    (library([FOLDER | {"parent": 5}]), "library.folders[0].parent: no folder has id 5"),
    (library([FOLDER | {"parent": 2}, {"id": 2, "name": "G", "parent": 1}]),
     "library.folders[0].parent: folders form a loop"),
    (library([FOLDER | {"archived": "no"}]), "library.folders[0].archived: must be true or false"),
    (library([FOLDER | {"owner": "nobody"}]), "library.folders[0].owner: no user is called 'nobody'"),
    (library([FOLDER | {"owner": "demo"}, {"id": 2, "name": "G", "parent": 1, "owner": "editor"}]),
     "library.folders[1].owner: differs from the owner"),
    (library([FOLDER | {"colour": "red"}]), "library.folders[0].colour: unknown field"),
    (library(files=[{"id": 1, "name": "N", "filename": "n.jpg"}]), "library.files[0].folder_id: is required"),
    (library(files=[FILE | {"folder_id": 9}]), "library.files[0].folder_id: no folder has id 9"),
    (library(files=[FILE | {"filename": "n.gif"}]), "library.files[0].filename: must end in one of .jpg"),
    (library(files=[FILE | {"filename": "jpg"}]), "library.files[0].filename: must end in one of"),
    (library(files=[FILE, FILE]), "library.files: duplicate id '1'"),
    (library(files=[FILE | {"gdpr_status": "ok"}]), "library.files[0].gdpr_status: must be one of OK, MISSING_CONSENT"),
    (library(files=[FILE | {"filesize": -1}]), "library.files[0].filesize: must be a whole number, 0 or more"),
    (library(files=[FILE | {"width": "800"}]), "library.files[0].width"),
    (library(files=[FILE | {"uploaded": "2024-1-5T09:00:00"}]), "library.files[0].uploaded: must be a time"),
    (library(files=[FILE | {"uploaded": "2024-02-30T09:00:00"}]), "library.files[0].uploaded: must be a time"),
    (library(files=[FILE | {"description": 5}]), "library.files[0].description: must be a string"),
    (library(files=[FILE | {"allow_download": 0}]), "library.files[0].allow_download: must be true or false"),
    (library(files=[FILE | {"warn_from": "2020-W53-4"}]), "library.files[0].warn_from: must be a date"),
    (library(files=[FILE | {"license": []}]), "library.files[0].license: must be a JSON object"),
    (library(files=[FILE | {"license": {"use_to": "31/12/2020"}}]), "library.files[0].license.use_to: must be a date"),
    (library(files=[FILE | {"license": {"lock": True}}]), "library.files[0].license.lock: unknown field"),
    (library(files=[FILE | {"type": "image"}]), "library.files[0].type: unknown field"),
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
