"""The media API on the demo library: arrays for success, Mediaflow's error body for failure, over real HTTP."""

from __future__ import annotations

import time
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from itsdangerous import BadSignature

from emulator import create_app
from emulator.config import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from emulator.library import FORMATS, GDPR_STATUSES, PREVIEW_SIZES, DownloadExpired, DownloadSigner, default_library
from emulator.library import file_bytes as library_file_bytes
from tests.support import Emulator

DANGEROUS = "<img src=x onerror=alert(1)>"
SUMMARY_KEYS = {"id", "name", "filename", "filesize", "type", "thumbPreview", "smallPreview", "mediumPreview",
                "uploaded", "uploadedBy", "gdprStatus", "folderId"}
FULL_KEYS = SUMMARY_KEYS | {"width", "height", "length", "photographer", "description", "alttext", "checksum",
                            "hasPreview"}
FOLDER_KEYS = {"id", "name", "type", "depth", "archived", "parent", "hasChildren", "private"}
NO_ACCESS = {"status": 403, "error": "You do not have access to this folder."}
SEARCH = {"searchTerm": "stockholm", "lang": "en-GB", "ai": False}

# Every /1/ endpoint of the library, with a call that succeeds for demo.
ENDPOINTS = [
    ("GET", "/1/me", None),
    ("GET", "/1/foldertree?fields=all&private=true&public=true", None),
    ("GET", "/1/folder/-3/files?fields=all", None),
    ("GET", "/1/file/-101?fields=all", None),
    ("GET", "/1/file/101/checkpermissions", None),
    ("GET", "/1/file/108/license", None),
    ("POST", "/1/search/file?fields=all", SEARCH),
    ("GET", "/1/formats?fields=id,name,suffix,filetype,width,height,keepratio", None),
    ("GET", "/1/file/101/downloads/0", None),
]
ENDPOINT_IDS = [path.partition("?")[0] for _, path, _ in ENDPOINTS]


@pytest.fixture(scope="module")
def tokens(emulator: Emulator) -> dict[str, str]:
    """One access token per demo user, through the password grant."""
    found = {}
    for username in ("demo", "editor", "outsider"):
        answer = emulator.token(grant_type="password", username=username, password=username,
                                client_id="portal-test", client_secret=emulator.secret("portal-test"))
        assert answer.status_code == 200, answer.text
        found[username] = answer.json()["access_token"]
    return found


@pytest.fixture
def call(emulator: Emulator, tokens: dict[str, str]) -> Callable[..., requests.Response]:
    def send(path: str, user: str | None = "demo", json: Any = None, method: str | None = None,
             **headers: str) -> requests.Response:
        if user is not None:
            headers["Authorization"] = f"Bearer {tokens[user]}"
        return requests.request(method or ("POST" if json is not None else "GET"), f"{emulator.url}{path}",
                                json=json, headers=headers, timeout=5)

    return send


def ok(response: requests.Response) -> list[Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list)
    return body


def error(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "error"} and body["status"] == status and body["error"]
    return str(body["error"])


# --- the bearer token, arrays and counts, for every endpoint

@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_every_endpoint_answers_an_array(call: Callable[..., requests.Response], method: str, path: str,
                                         body: Any) -> None:
    assert ok(call(path, json=body, method=method))


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer wrong-token", "Basic ZGVtbzpkZW1v", "Token x"])
@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_every_endpoint_without_a_valid_token_is_401(call: Callable[..., requests.Response], method: str, path: str,
                                                     body: Any, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    error(call(path, user=None, json=body, method=method, **headers), 401)


def test_every_endpoint_refuses_an_expired_token(emulator: Emulator, call: Callable[..., requests.Response]) -> None:
    answer = emulator.token(grant_type="password", username="demo", password="demo", client_id="short",
                            client_secret=emulator.secret("short"))
    expired = answer.json()["access_token"]
    time.sleep(answer.json()["expires_in"] + 0.1)
    for method, path, body in ENDPOINTS:
        error(call(path, user=None, json=body, method=method, Authorization=f"Bearer {expired}"), 401)


def test_stats_count_calls_and_time_per_path_401s_included(emulator: Emulator,
                                                           call: Callable[..., requests.Response]) -> None:
    ok(call("/1/folder/-3/files"))
    error(call("/1/folder/-3/files", user=None), 401)
    ok(call("/1/formats"))
    stats = emulator.stats()
    assert stats["api"] == {"/1/folder/-3/files": 2, "/1/formats": 1}
    assert set(stats["api_busy_ms"]) == {"/1/folder/-3/files", "/1/formats"}
    assert all(ms > 0 for ms in stats["api_busy_ms"].values())
    emulator.reset()
    assert emulator.stats()["api"] == {} and emulator.stats()["api_busy_ms"] == {}


# --- the folder tree

def test_foldertree_is_flat_and_puts_each_parent_before_its_children(call: Callable[..., requests.Response]) -> None:
    tree = ok(call("/1/foldertree?fields=all&private=true&public=true"))
    assert [f["id"] for f in tree] == [7, -5, 9, 12, 1, -3, 2, 5, 3, 4, 6, 8]
    seen: dict[int, dict[str, Any]] = {}
    for folder in tree:
        assert set(folder) == FOLDER_KEYS and folder["type"] == "folder"
        if folder["parent"] is None:
            assert folder["depth"] == 0
        else:
            assert folder["depth"] == seen[folder["parent"]]["depth"] + 1
        seen[folder["id"]] = folder
    assert max(f["depth"] for f in tree) >= 3
    assert {f["id"] for f in tree if f["hasChildren"]} == {-5, 1, 2, 3}
    assert {f["id"] for f in tree if f["archived"]} == {7}
    assert {f["id"] for f in tree if f["private"]} == {-5, 9}


@pytest.mark.parametrize(
    ("user", "query", "present", "absent"),
    [("demo", "", {-5, 9, 1, 4}, {11}),
     ("editor", "", {11, 1, 4}, {-5, 9}),
     ("outsider", "", {1, 4, 7}, {-5, 9, 11}),
     ("demo", "?private=false", {1, 4, 7}, {-5, 9}),
     ("demo", "?public=false", {-5, 9}, {1, 4, 7, 11}),
     ("editor", "?public=FALSE&private=1", {11}, {1, -5}),
     ("demo", "?private=false&public=false", set(), {1, -5})],
)
def test_foldertree_shows_a_private_folder_to_its_owner_only_and_filters(
        call: Callable[..., requests.Response], user: str, query: str, present: set[int], absent: set[int]) -> None:
    ids = {f["id"] for f in ok(call(f"/1/foldertree{query}", user=user))}
    assert present <= ids and not absent & ids


@pytest.mark.parametrize(("fields", "keys"), [("", FOLDER_KEYS), ("all", FOLDER_KEYS), ("any", FOLDER_KEYS),
                                              ("name,hasChildren", {"id", "name", "hasChildren"}),
                                              ("NAME,haschildren,nonsense", {"id", "name", "hasChildren"})])
def test_foldertree_fields(call: Callable[..., requests.Response], fields: str, keys: set[str]) -> None:
    tree = ok(call(f"/1/foldertree?fields={fields}" if fields else "/1/foldertree"))
    assert all(set(f) == keys for f in tree)


@pytest.mark.parametrize("query", ["private=yes", "public=", "private=2"])
def test_foldertree_with_a_bad_flag_is_400(call: Callable[..., requests.Response], query: str) -> None:
    error(call(f"/1/foldertree?{query}"), 400)


# --- a folder's files

def test_files_of_a_negative_folder(call: Callable[..., requests.Response], emulator: Emulator) -> None:
    files = ok(call("/1/folder/-3/files?fields=all"))
    assert [f["id"] for f in files] == [-101, 101]  # by filename: "Brand guide 2024.pdf", "logo-white.png"
    for found in files:
        assert set(found) == SUMMARY_KEYS and found["folderId"] == -3
        assert set(found["type"]) == {"id", "type", "extension", "description"}
        for size in PREVIEW_SIZES:
            assert found[f"{size}Preview"] == f"{emulator.url}/_emulator/preview/{found['id']}/{size}.svg"
    assert files[0]["type"]["type"] == "document" and files[0]["type"]["extension"] == "pdf"


def test_urls_use_the_origin_the_caller_reached(call: Callable[..., requests.Response]) -> None:
    found = ok(call("/1/folder/-3/files?fields=thumbpreview", Host="media.example.test:8123"))
    assert found[0]["thumbPreview"] == "http://media.example.test:8123/_emulator/preview/-101/thumb.svg"
    link = ok(call("/1/file/101/downloads/0", Host="media.example.test:8123"))[0]["downloadURL"]
    assert link.startswith("http://media.example.test:8123/_emulator/download/")


@pytest.mark.parametrize(
    ("fields", "keys"),
    [(None, {"id", "name", "filename", "filesize", "type"}),
     ("all", SUMMARY_KEYS),
     ("gdprstatus,thumbpreview", {"id", "gdprStatus", "thumbPreview"}),
     ("GDPRSTATUS,nonsense,", {"id", "gdprStatus"}),
     ("nonsense", {"id"})],
)
def test_folder_files_fields(call: Callable[..., requests.Response], fields: str | None, keys: set[str]) -> None:
    files = ok(call("/1/folder/4/files" + (f"?fields={fields}" if fields is not None else "")))
    assert len(files) == 2 and all(set(f) == keys for f in files)


def test_a_big_folder_comes_a_page_at_a_time(call: Callable[..., requests.Response]) -> None:
    pages = [ok(call(f"/1/folder/6/files?per_page=24&page={n}")) for n in (1, 2, 3)]
    assert [len(p) for p in pages] == [24, 2, 0]
    ids = [f["id"] for page in pages for f in page]
    assert len(set(ids)) == 26
    assert len(ok(call("/1/folder/6/files"))) == 26  # per_page defaults to 100


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize(("sort", "key"), [
    ("filename", lambda f: (f["filename"].casefold(), f["id"])),
    ("name", lambda f: (f["name"].casefold(), f["id"])),
    ("uploaded", lambda f: (f["uploaded"], f["id"])),
    ("filesize", lambda f: (f["filesize"], f["id"])),
])
def test_folder_files_sort_and_order(call: Callable[..., requests.Response], sort: str, key: Callable[..., Any],
                                     order: str) -> None:
    files = ok(call(f"/1/folder/6/files?fields=all&sort={sort}&order={order}"))
    assert files == sorted(files, key=key, reverse=order == "desc")
    assert files != sorted(files, key=key, reverse=order == "asc")


@pytest.mark.parametrize("query", ["page=0", "page=-1", "page=x", "page=", "per_page=0", "per_page=501",
                                   "per_page=1.5", "sort=size", "sort=", "order=up"])
def test_folder_files_with_a_bad_parameter_is_400(call: Callable[..., requests.Response], query: str) -> None:
    error(call(f"/1/folder/6/files?{query}"), 400)


def test_an_empty_folder_is_an_empty_array(call: Callable[..., requests.Response]) -> None:
    assert ok(call("/1/folder/12/files")) == []


@pytest.mark.parametrize(("user", "folder"), [("editor", -5), ("editor", 9), ("demo", 11), ("outsider", -5)])
def test_someone_elses_private_folder_is_403(call: Callable[..., requests.Response], user: str, folder: int) -> None:
    response = call(f"/1/folder/{folder}/files", user=user)
    assert response.status_code == 403 and response.json() == NO_ACCESS


@pytest.mark.parametrize(("user", "folder"), [("demo", -5), ("demo", 9), ("editor", 11), ("outsider", 7)])
def test_own_private_and_archived_folders_list_files(call: Callable[..., requests.Response], user: str,
                                                     folder: int) -> None:
    assert ok(call(f"/1/folder/{folder}/files", user=user))


@pytest.mark.parametrize("path", ["/1/folder/999/files", "/1/folder/-999/files", "/1/file/999", "/1/file/-999",
                                  "/1/file/-999/checkpermissions", "/1/file/999/license",
                                  "/1/file/-999/downloads/0", "/1/file/114", "/1/file/112/license"])
def test_unknown_or_invisible_ids_are_404(call: Callable[..., requests.Response], path: str) -> None:
    # 114 is in editor's private folder and 112 in demo's: as another user, they do not exist.
    error(call(path, user="outsider" if "112" in path else "demo"), 404)


# --- one file

@pytest.mark.parametrize(
    ("file_id", "expected"),
    [(109, {"type": {"id": 4, "type": "video", "extension": "mp4", "description": "MPEG-4 video"},
            "width": 1920, "height": 1080, "length": 94, "folderId": 8}),
     (-101, {"filename": "Brand guide 2024.pdf", "width": None, "height": None, "length": None, "folderId": -3}),
     (102, {"name": DANGEROUS, "filename": f"{DANGEROUS}.jpg", "gdprStatus": "OK", "hasPreview": True}),
     (104, {"name": "Midsommar på Åre", "gdprStatus": "MISSING_CONSENT"}),
     (105, {"gdprStatus": "INVALID_CONSENT"}),
     (106, {"gdprStatus": "AWAIT_CONSENT", "uploaded": "2024-01-15T09:30:00"})],
)
def test_a_file_in_full(call: Callable[..., requests.Response], file_id: int, expected: dict[str, Any]) -> None:
    [found] = ok(call(f"/1/file/{file_id}?fields=all"))
    assert set(found) == FULL_KEYS and found["id"] == file_id
    assert {k: found[k] for k in expected} == expected
    assert len(found["checksum"]) == 32 and found["filesize"] > 0


def test_a_file_without_fields_has_the_default_ones(call: Callable[..., requests.Response]) -> None:
    [found] = ok(call("/1/file/101"))
    assert set(found) == {"id", "name", "filename", "filesize", "type"}
    [found] = ok(call("/1/file/101?fields=alttext,width"))
    assert found == {"id": 101, "alttext": "Company logo", "width": 1200}


@pytest.mark.parametrize(("file_id", "expected"), [
    (101, {"allowDownload": True, "allowDownloadReason": "", "warnFrom": None}),
    (107, {"allowDownload": False, "allowDownloadReason": "Embargoed until the product launch.", "warnFrom": None}),
    (108, {"allowDownload": True, "allowDownloadReason": "", "warnFrom": "2020-12-01"}),
])
def test_checkpermissions(call: Callable[..., requests.Response], file_id: int, expected: dict[str, Any]) -> None:
    assert ok(call(f"/1/file/{file_id}/checkpermissions")) == [expected]


@pytest.mark.parametrize(("file_id", "expected"), [
    (101, {"rightsExists": False, "rightsInformation": "", "licenseInformation": "", "downloadWarning": "",
           "lockFile": False, "useFrom": None, "useTo": None}),
    (108, {"rightsExists": True, "rightsInformation": "Stock agency, editorial use only.",
           "licenseInformation": "Licence 4411", "downloadWarning": "The licence ended on 2020-12-31.",
           "lockFile": False, "useFrom": "2019-01-01", "useTo": "2020-12-31"}),
])
def test_license(call: Callable[..., requests.Response], file_id: int, expected: dict[str, Any]) -> None:
    assert ok(call(f"/1/file/{file_id}/license")) == [expected]


# --- search

@pytest.mark.parametrize(
    ("user", "term", "expected"),
    [("demo", "åre", [104]),
     ("demo", "ÅRE", [104]),
     ("demo", unicodedata.normalize("NFD", "Åre"), [104]),  # as a Mac types it
     ("demo", "STRASSE", [106]),  # ß casefolds to ss
     ("demo", "frühstück", [106]),  # in the description
     ("demo", "<img", [102]),
     ("demo", '"quotes" &', [103]),
     ("demo", "lofoten", [-102]),
     ("demo", ".PDF", [-101, 110]),
     ("demo", "idea sketch", [113]),
     ("editor", "idea sketch", []),  # in demo's private folder
     ("editor", "erika's notes", [114]),
     ("demo", "no such thing anywhere", [])],
)
def test_search_finds_visible_files_ignoring_case(call: Callable[..., requests.Response], user: str, term: str,
                                                  expected: list[int]) -> None:
    found = ok(call("/1/search/file", user=user, json={"searchTerm": term, "lang": "sv-SE", "ai": False}))
    assert sorted(f["id"] for f in found) == sorted(expected)


def test_search_fields_and_the_language_it_was_sent(emulator: Emulator,
                                                    call: Callable[..., requests.Response]) -> None:
    found = ok(call("/1/search/file?fields=all", json={"searchTerm": "Södermalm", "lang": "fi-FI", "ai": False}))
    assert len(found) > 1 and all(set(f) == SUMMARY_KEYS for f in found)
    assert emulator.stats()["last_search_lang"] == "fi-FI"
    assert ok(call("/1/search/file", json={"searchTerm": "x" * 200, "lang": "nb-NO"})) == []


@pytest.mark.parametrize(
    "body",
    ["not json", [], ["searchTerm"], None, {}, {"lang": "en-GB"}, {"searchTerm": "", "lang": "en-GB"},
     {"searchTerm": "   ", "lang": "en-GB"}, {"searchTerm": 5, "lang": "en-GB"}, {"searchTerm": ["a"], "lang": "en-GB"},
     {"searchTerm": "x" * 201, "lang": "en-GB"}, {"searchTerm": "logo"}, {"searchTerm": "logo", "lang": "sv_SE"},
     {"searchTerm": "logo", "lang": "en"}, {"searchTerm": "logo", "lang": None}],
)
def test_search_with_a_bad_body_is_400(emulator: Emulator, tokens: dict[str, str], body: Any) -> None:
    headers = {"Authorization": f"Bearer {tokens['demo']}", "Content-Type": "application/json"}
    data = body if isinstance(body, str) else None
    response = requests.post(f"{emulator.url}/1/search/file", headers=headers, data=data,
                             json=None if data is not None or body is None else body, timeout=5)
    error(response, 400)


def test_search_records_a_wrong_language_too(emulator: Emulator, call: Callable[..., requests.Response]) -> None:
    error(call("/1/search/file", json={"searchTerm": "logo", "lang": "sv_SE"}), 400)
    assert emulator.stats()["last_search_lang"] == "sv_SE"


# --- formats and downloads

def test_formats(call: Callable[..., requests.Response]) -> None:
    formats = ok(call("/1/formats?fields=id,name,suffix,filetype,width,height,keepratio"))
    assert formats[0] == {"id": 0, "name": "Original", "suffix": "", "filetype": "any", "width": None,
                          "height": None, "keepRatio": True}
    assert {(f["id"], f["suffix"], f["filetype"]) for f in formats} == {
        (0, "", "any"), (1, "jpg", "image"), (2, "png", "image"), (3, "pdf", "document")}
    assert ok(call("/1/formats?fields=name")) == [{"id": f.id, "name": f.name} for f in FORMATS.values()]


@pytest.mark.parametrize(
    ("file_id", "format_id", "filetype", "download_name"),
    [(101, 0, "png", "filename=logo-white.png"),
     (101, 1, "jpg", "filename=logo-white.jpg"),
     (-101, 0, "pdf", 'filename="Brand guide 2024.pdf"'),
     (-101, 3, "pdf", 'filename="Brand guide 2024.pdf"'),
     (-102, 0, "mp4", "filename=drone-lofoten.mp4"),
     (104, 2, "png", "filename*=UTF-8''Midsommar%20p%C3%A5%20%C3%85re.png"),
     (102, 0, "jpg", 'filename="<img src=x onerror=alert(1)>.jpg"')],
)
def test_a_signed_download_url_gives_the_files_bytes(emulator: Emulator, call: Callable[..., requests.Response],
                                                     file_id: int, format_id: int, filetype: str,
                                                     download_name: str) -> None:
    [link] = ok(call(f"/1/file/{file_id}/downloads/{format_id}"))
    assert {k: v for k, v in link.items() if k != "downloadURL"} == {
        "id": file_id, "format": format_id, "watermark": False, "isPreview": False, "filetype": filetype,
        "expiresIn": 60, "downloadWarning": ""}
    assert link["downloadURL"].startswith(f"{emulator.url}/_emulator/download/")
    answer = requests.get(link["downloadURL"], timeout=5)  # no bearer: the URL is the permission
    assert answer.status_code == 200
    assert answer.content == library_file_bytes(file_id, format_id)
    assert answer.headers["Content-Disposition"].startswith("attachment; ")
    assert download_name in answer.headers["Content-Disposition"]
    assert emulator.stats()["downloads"] == {"ok": 1, "tampered": 0, "expired": 0}


def test_an_originals_size_and_checksum_match_its_bytes(call: Callable[..., requests.Response]) -> None:
    [found] = ok(call("/1/file/-101?fields=filesize,checksum"))
    [link] = ok(call("/1/file/-101/downloads/0"))
    content = requests.get(link["downloadURL"], timeout=5).content
    assert found["filesize"] == len(content)
    assert ok(call("/1/file/108/downloads/0"))[0]["downloadWarning"] == "The licence ended on 2020-12-31."


@pytest.mark.parametrize(
    ("file_id", "format_id", "status", "message"),
    [(107, 0, 403, "Embargoed until the product launch."),
     (101, 99, 404, None), (101, -1, 404, None),
     (109, 1, 400, None), (-101, 2, 400, None), (101, 3, 400, None)],
)
def test_downloads_refused(call: Callable[..., requests.Response], file_id: int, format_id: int, status: int,
                           message: str | None) -> None:
    text = error(call(f"/1/file/{file_id}/downloads/{format_id}"), status)
    assert message is None or text == message


@pytest.mark.parametrize("change", [
    # The signature's first character: the last one's low bits are padding, and changing them may change nothing.
    lambda s: s.rpartition(".")[0] + "." + ("A" if s.rpartition(".")[2][0] != "A" else "B") + s.rpartition(".")[2][1:],
    lambda s: "W" + s[1:] if s[0] != "W" else "X" + s[1:],  # the payload
    lambda s: s.partition(".")[0],  # no signature at all
    lambda s: "nonsense",
])
def test_a_tampered_download_url_is_403(emulator: Emulator, call: Callable[..., requests.Response],
                                        change: Callable[[str], str]) -> None:
    [link] = ok(call("/1/file/101/downloads/0"))
    base, _, signed = link["downloadURL"].rpartition("/")
    answer = requests.get(f"{base}/{change(signed)}", timeout=5)
    assert answer.status_code == 403 and "text/html" in answer.headers["Content-Type"]
    assert emulator.stats()["downloads"]["tampered"] == 1


def test_the_signer_refuses_expired_and_foreign_tokens() -> None:
    now = [1_000_000.0]
    signer = DownloadSigner(lifetime=60, clock=lambda: now[0])
    token = signer.sign(-101, 3)
    now[0] += 59.9
    assert signer.unsign(token) == (-101, 3)
    now[0] += 0.1
    with pytest.raises(DownloadExpired):
        signer.unsign(token)
    with pytest.raises(BadSignature):
        DownloadSigner().unsign(DownloadSigner().sign(1, 0))  # each emulator signs with its own secret


def test_an_expired_download_url_is_410() -> None:
    app = create_app()
    client = app.test_client()
    token = client.post("/1/oauth2/token", data={"grant_type": "password", "username": "demo", "password": "demo",
                                                 "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET})
    [link] = client.get("/1/file/101/downloads/0",
                        headers={"Authorization": f"Bearer {token.json['access_token']}"}).json
    path = urlsplit(link["downloadURL"]).path
    assert client.get(path).status_code == 200
    app.extensions["mediaflow_api"].signer.clock = lambda: time.time() + 60
    assert client.get(path).status_code == 410
    assert client.get("/_emulator/stats").json["downloads"] == {"ok": 1, "tampered": 0, "expired": 1}


@pytest.mark.parametrize(("public_url", "origin"), [(None, "http://localhost"),
                                                   ("http://127.0.0.1:5001/", "http://127.0.0.1:5001")])
def test_preview_and_download_urls_name_the_public_url_when_given(public_url: str | None, origin: str) -> None:
    client = create_app(public_url=public_url).test_client()
    token = client.post("/1/oauth2/token", data={"grant_type": "password", "username": "demo", "password": "demo",
                                                 "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET})
    bearer = {"Authorization": f"Bearer {token.json['access_token']}"}
    [found] = client.get("/1/file/101?fields=all", headers=bearer).json
    [link] = client.get("/1/file/101/downloads/0", headers=bearer).json
    assert found["thumbPreview"] == f"{origin}/_emulator/preview/101/thumb.svg"
    assert link["downloadURL"].startswith(f"{origin}/_emulator/download/")


# --- previews

def parse_svg(content: bytes) -> ET.Element:
    """Parse strictly: a name that broke out of its text node would fail here or show up as an element."""
    return ET.fromstring(content)  # noqa: S314 - the emulator's own output, in a test


@pytest.mark.parametrize("size", list(PREVIEW_SIZES))
def test_a_preview_is_an_svg_with_the_name_as_text(emulator: Emulator, size: str) -> None:
    answer = requests.get(f"{emulator.url}/_emulator/preview/102/{size}.svg", timeout=5)  # no bearer, as on Mediaflow
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("image/svg+xml")
    assert answer.headers["Cache-Control"] == "public, max-age=3600"
    svg = parse_svg(answer.content)
    assert svg.tag == "{http://www.w3.org/2000/svg}svg" and svg.get("width") == str(PREVIEW_SIZES[size])
    assert svg.findtext("{http://www.w3.org/2000/svg}title") == DANGEROUS
    assert not svg.findall(".//{http://www.w3.org/2000/svg}img") and b"<img" not in answer.content
    assert emulator.stats()["previews"] == 1


def test_every_default_file_has_a_well_formed_preview_in_every_size() -> None:
    client = create_app().test_client()
    for file_id, found in default_library().files.items():
        for size in PREVIEW_SIZES:
            svg = parse_svg(client.get(f"/_emulator/preview/{file_id}/{size}.svg").data)
            assert svg.findtext("{http://www.w3.org/2000/svg}title") == found.name


@pytest.mark.parametrize("path", ["/_emulator/preview/999/thumb.svg", "/_emulator/preview/-999/small.svg",
                                  "/_emulator/preview/101/huge.svg", "/_emulator/preview/101/thumb.png"])
def test_an_unknown_preview_is_404(emulator: Emulator, path: str) -> None:
    assert requests.get(f"{emulator.url}{path}", timeout=5).status_code == 404


# --- the default library itself

def test_the_default_library_has_what_the_portal_must_handle() -> None:
    library = default_library()
    folders, files = library.folders, library.files
    assert max(library.depth(f) for f in folders) >= 3
    assert any(f < 0 and library.files_in(f) for f in folders) and any(f < 0 for f in files)
    assert {library.owner(f) for f in folders} == {None, "demo", "editor"}
    assert any(f.archived for f in folders.values())
    assert max(len(library.files_in(f)) for f in folders) > 24
    assert {f.gdpr_status for f in files.values()} == set(GDPR_STATUSES)
    assert {f.type.extension for f in files.values()} == {"jpg", "png", "pdf", "mp4"}
    names = {f.name for f in files.values()}
    assert DANGEROUS in names and '"quotes" & ampersands' in names
    assert any(not f.allow_download and f.allow_download_reason for f in files.values())
    assert any(f.license.use_to and f.license.use_to < "2021" for f in files.values())
    assert any(set(name) & set("åöéß") for name in names)
    assert 35 <= len(files) <= 50
