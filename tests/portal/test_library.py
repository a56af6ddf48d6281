"""The media library's pages against the emulator over real HTTP: what they show, every bad input, every failure."""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server
from werkzeug.wrappers import Request

from emulator.library import file_bytes
from portal.library import build_tree, summary
from tests.conftest import FakeClock
from tests.support import Emulator, portal_login

# Ids in the emulator's default library (emulator/library.py).
BRAND_ASSETS, PHOTO_LIBRARY, ARCHIVE, DEMOS_DRAFTS, ERIKAS_FILES, EMPTY = -3, 6, 7, -5, 11, 12
DANGEROUS, QUOTES, MISSING_CONSENT, EMBARGOED, EXPIRED_LICENSE, FILM, BRAND_GUIDE = 102, 103, 104, 107, 108, 109, -101


@pytest.fixture
def browsing(make_app: Callable[..., Flask], backend: str) -> Any:
    client = make_app(backend=backend).test_client()
    portal_login(client)
    return client


@pytest.fixture
def logged_in(make_app: Callable[..., Flask]) -> Any:
    client = make_app().test_client()
    portal_login(client)
    return client


def api_calls(emulator: Emulator) -> dict[str, int]:
    return dict(emulator.stats()["api"])


@pytest.mark.parametrize(
    ("path", "shown"),
    [("/library", ["Marketing", "Brand assets", "Demo&#39;s drafts", "private", "archived"]),
     (f"/library/folders/{BRAND_ASSETS}", ["Logo on white", "Brand guide 2024", 'aria-current="page"']),
     (f"/library/folders/{DEMOS_DRAFTS}", ["Draft poster"]),
     (f"/library/folders/{EMPTY}", ["This page of the folder has no files."]),
     (f"/library/folders/{PHOTO_LIBRARY}", ["Next page", "Page 1"]),
     (f"/library/folders/{PHOTO_LIBRARY}?page=2", ["Previous page", "Page 2"]),
     (f"/library/folders/{PHOTO_LIBRARY}?sort=filesize&order=desc", ['value="filesize" selected']),
     (f"/files/{BRAND_GUIDE}", ["Brand guide 2024", "Colours, type and logo rules.", "PDF print", "Original"]),
     (f"/files/{MISSING_CONSENT}", ["Consent missing", "Åsa Ström", "3000 \N{MULTIPLICATION SIGN} 2000 px"]),
     (f"/files/{EMBARGOED}", ["You may not download this file: Embargoed until the product launch."]),
     (f"/files/{EXPIRED_LICENSE}", ["2020-12-31 <strong class=\"warn\">(expired)</strong>", "Licence 4411"]),
     (f"/files/{FILM}", ["94 s", "1920 \N{MULTIPLICATION SIGN} 1080 px"]),
     ("/search?q=stockholm", ["26 files found"]),
     ("/search?q=%C3%96RESUNDSBRON", ["1 file found", "Öresundsbron i dimma"]),
     ("/search?q=nothing-like-this", ["Nothing in the library matches."]),
     ("/search", ['type="search"'])],
)
def test_library_pages_show_what_mediaflow_holds(browsing: Any, path: str, shown: list[str]) -> None:
    page = browsing.get(path)
    assert page.status_code == 200, page.text
    for text in shown:
        assert text in page.text, text


def test_the_page_after_the_last_has_no_next_link(logged_in: Any) -> None:
    assert "Next page" not in logged_in.get(f"/library/folders/{PHOTO_LIBRARY}?page=2").text


@pytest.mark.parametrize("path", ["/library/folders/4", f"/files/{DANGEROUS}", "/search?q=onerror"])
def test_everything_mediaflow_returns_is_shown_as_text(logged_in: Any, path: str) -> None:
    page = logged_in.get(path).text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<img src=x" not in page and "<script>alert" not in page


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [("/library/folders/abc", 404, "Page not found"),
     ("/library/folders/99999999999999999999999", 404, "Page not found"),
     ("/library/folders/--3", 404, "Page not found"),
     ("/library/folders/424242", 404, "Not found in Mediaflow"),
     (f"/library/folders/{ERIKAS_FILES}", 403, "You do not have access"),
     ("/files/-424242", 404, "Not found in Mediaflow"),
     (f"/library/folders/{PHOTO_LIBRARY}?page=0", 400, "A page number is a whole number from 1 to 10000."),
     (f"/library/folders/{PHOTO_LIBRARY}?page=abc", 400, "A page number"),
     (f"/library/folders/{PHOTO_LIBRARY}?page=%C2%B2", 400, "A page number"),
     (f"/library/folders/{PHOTO_LIBRARY}?page=10001", 400, "A page number"),
     (f"/library/folders/{PHOTO_LIBRARY}?page=99999999999999999999", 400, "A page number"),
     (f"/library/folders/{PHOTO_LIBRARY}?sort=evil", 400, "&#39;sort&#39; must be one of: filename, uploaded"),
     (f"/library/folders/{PHOTO_LIBRARY}?order=up", 400, "&#39;order&#39; must be one of: asc, desc"),
     ("/search?q=" + "x" * 201, 400, "A search is at most 200 characters long."),
     ("/search?q=a%1B%5B2Jb", 400, "A search cannot hold control characters"),
     ("/search?q=a%00b", 400, "A search cannot hold control characters"),
     ("/search?q=a%09b", 400, "A search cannot hold control characters"),
     ("/search?q=a%C2%85b", 400, "A search cannot hold control characters"),   # NEL, a C1 control
     (f"/files/{BRAND_GUIDE}/download?format=abc", 400, "Choose a download format from the list."),
     (f"/files/{BRAND_GUIDE}/download?format=-1", 400, "Choose a download format"),
     (f"/files/{BRAND_GUIDE}/download?format=99", 404, "no file, folder or download format at this address"),
     (f"/files/{EMBARGOED}/download?format=0", 403, "You do not have access"),
     # A format that does not fit the file: Mediaflow's 400, explained.
     ("/files/101/download?format=3", 400, "Mediaflow refused this request"),
     # Mediaflow's own sentence ends in a full stop: the page adds none after it.
     ("/files/101/download?format=3", 400, "does not fit a image file. Go back"),
     ("/library/folders/%D9%A1", 404, "Page not found"),        # Arabic-Indic 1: not an id
     ("/files/%F0%9D%9F%8F%F0%9D%9F%8E%F0%9D%9F%8F", 404, "Page not found")],
)
def test_bad_input_gets_a_page_that_says_what_happened(logged_in: Any, path: str, status: int, says: str) -> None:
    page = logged_in.get(path)
    assert page.status_code == status, page.text
    assert says in page.text
    assert "Traceback" not in page.text
    assert not {"\x00", "\x1b", "\x85"} & set(page.text)  # a refused search's term is not echoed
    assert logged_in.get("/session").status_code == 200  # never logged out by it


@pytest.mark.parametrize("path", ["/library", f"/library/folders/{BRAND_ASSETS}", "/search?q=x", "/files/101",
                                  "/files/101/download?format=0"])
def test_the_library_needs_a_login_and_comes_back_to_the_page(make_app: Callable[..., Flask], path: str) -> None:
    client = make_app().test_client()
    page = client.get(path)
    assert page.status_code == 302
    assert page.headers["Location"].startswith("/login?next=/")
    back = portal_login(client, next_url=page.headers["Location"].removeprefix("/login?next="))
    assert back.headers["Location"] == requests.utils.unquote(page.headers["Location"].removeprefix("/login?next="))


@pytest.mark.parametrize(("file_id", "format_id"), [(BRAND_GUIDE, 0), (101, 2), (FILM, 0)])
def test_a_download_redirects_once_to_mediaflows_signed_url_and_the_bytes_arrive(
    logged_in: Any, file_id: int, format_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = logged_in.get(f"/files/{file_id}/download?format={format_id}")
    assert answer.status_code == 303
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert answer.headers["Cache-Control"] == "no-store"
    url = answer.headers["Location"]
    assert answer.data == b""  # not even the "Redirecting..." page with the URL as a link, for a proxy to keep
    assert url not in logged_in.get(f"/files/{file_id}").text  # never put in a page
    assert url.split("/")[-1] not in caplog.text  # never logged by the portal (nor by requests or urllib3 in it)
    body = requests.get(url, timeout=5)
    assert body.status_code == 200 and body.content == file_bytes(file_id, format_id)


def test_the_file_page_offers_only_the_formats_that_fit_the_file(logged_in: Any) -> None:
    pdf = logged_in.get(f"/files/{BRAND_GUIDE}").text
    photo = logged_in.get("/files/101").text
    assert "PDF print" in pdf and "Web JPEG" not in pdf
    assert "Web JPEG" in photo and "PDF print" not in photo


@pytest.mark.parametrize(
    ("fault", "status", "says"),
    [({"kind": "status", "status": 500}, 502, "Mediaflow sent an answer the portal could not understand."),
     ({"kind": "status", "status": 409}, 502, "could not understand"),
     ({"kind": "garbage"}, 502, "could not understand"),
     ({"kind": "drop"}, 503, "Mediaflow could not be reached in time."),
     ({"kind": "delay", "delay": 1.5}, 503, "Mediaflow could not be reached in time."),
     ({"kind": "rate_limit", "retry_after": 0, "count": 2}, 429, "Please try again in a moment."),
     ({"kind": "rate_limit", "retry_after": 30}, 429, "Please wait 30 seconds")],
    ids=["500", "409", "garbage", "drop", "slow", "429-twice", "429-long"],
)
def test_a_mediaflow_failure_is_a_page_with_try_again_and_keeps_the_session(
    make_app: Callable[..., Flask], emulator: Emulator, fault: dict[str, Any], status: int, says: str
) -> None:
    client = make_app(MEDIAFLOW_READ_TIMEOUT=1.0).test_client()
    portal_login(client)
    path = f"/library/folders/{BRAND_ASSETS}"
    emulator.fault(endpoint="api", **fault)
    page = client.get(path)
    assert page.status_code == status
    assert says in page.text and "Try again" in page.text and "Your session is kept" in page.text
    assert f'href="{path}' in page.text
    if status == 429:
        assert page.headers["Retry-After"] == str(fault["retry_after"])
    assert client.get(path).status_code == 200


def test_a_429_is_waited_out_and_retried_once(logged_in: Any, emulator: Emulator) -> None:
    logged_in.get("/library")  # the folder tree is kept: the next page makes one call
    emulator.fault(endpoint="api", kind="rate_limit", retry_after=1)
    before = api_calls(emulator).get(f"/1/folder/{BRAND_ASSETS}/files", 0)
    page = logged_in.get(f"/library/folders/{BRAND_ASSETS}")
    assert page.status_code == 200 and "Logo on white" in page.text
    assert api_calls(emulator)[f"/1/folder/{BRAND_ASSETS}/files"] - before == 2


@pytest.mark.parametrize(("rejections", "status", "refreshes"), [(1, 200, 1), (2, 401, 1)],
                         ids=["refresh-and-retry", "still-refused-ends-politely"])
def test_a_401_for_a_token_that_looked_valid_refreshes_once_and_retries_once(
    browsing: Any, emulator: Emulator, rejections: int, status: int, refreshes: int
) -> None:
    emulator.fault(endpoint="api", kind="status", status=401, count=rejections)
    page = browsing.get(f"/library/folders/{BRAND_ASSETS}")
    assert page.status_code == status
    assert emulator.refreshes() == refreshes
    if status == 200:
        assert "Logo on white" in page.text
        assert browsing.get("/session").json["tokens"]["last_refreshed"] is not None
    else:
        assert "Your Mediaflow session has ended" in page.text
        assert f'href="/login?next=/library/folders/{BRAND_ASSETS}"' in page.text
        assert browsing.get("/session").status_code == 302


def test_a_token_that_expires_while_browsing_is_refreshed_once_and_pages_keep_working(
    make_app: Callable[..., Flask], emulator: Emulator, clock: FakeClock
) -> None:
    client = make_app("short", clock=clock).test_client()
    portal_login(client)
    for path in ("/library", f"/library/folders/{PHOTO_LIBRARY}", "/files/201", "/search?q=logo"):
        clock.advance(0.8)  # the 4-second token is due (under 2 s left) at the third page
        assert client.get(path).status_code == 200, path
    assert emulator.refreshes() == 1


@pytest.mark.parametrize(("seconds", "tree_calls"), [(60, 1), (0, 3)])
def test_the_folder_tree_is_kept_per_session_for_library_cache_seconds(
    make_app: Callable[..., Flask], emulator: Emulator, backend: str, seconds: int, tree_calls: int
) -> None:
    client = make_app(backend=backend, LIBRARY_CACHE_SECONDS=seconds).test_client()
    portal_login(client)
    for path in ("/library", f"/library/folders/{BRAND_ASSETS}", f"/library/folders/{PHOTO_LIBRARY}"):
        assert client.get(path).status_code == 200
    assert api_calls(emulator).get("/1/foldertree", 0) == tree_calls


@pytest.mark.parametrize(("later", "other_worker", "tree_calls"),
                         [(59, False, 1), (59, True, 1), (61, False, 2), (61, True, 2)])
def test_a_kept_tree_is_never_older_than_library_cache_seconds(
    make_app: Callable[..., Flask], emulator: Emulator, clock: FakeClock, backend: str, later: float,
    other_worker: bool, tree_calls: int
) -> None:
    app = make_app(backend=backend, clock=clock, LIBRARY_CACHE_SECONDS=60)
    client = app.test_client()
    portal_login(client)
    assert client.get("/library").status_code == 200  # asked, and kept in the store and in this worker
    clock.advance(later)
    if other_worker:
        app.extensions["library_kept"].clear()  # only the store's copy, as another worker has
    assert client.get(f"/library/folders/{PHOTO_LIBRARY}").status_code == 200
    assert client.get(f"/library/folders/{BRAND_ASSETS}").status_code == 200  # this worker's copy now
    assert api_calls(emulator).get("/1/foldertree", 0) == tree_calls


def test_a_warm_folder_page_makes_one_mediaflow_call_and_the_home_page_none(logged_in: Any,
                                                                           emulator: Emulator) -> None:
    logged_in.get(f"/library/folders/{BRAND_ASSETS}")
    before = sum(api_calls(emulator).values())
    logged_in.get(f"/library/folders/{PHOTO_LIBRARY}")
    assert sum(api_calls(emulator).values()) - before == 1
    logged_in.get("/")
    assert sum(api_calls(emulator).values()) - before == 1


def test_another_users_session_never_sees_the_first_users_cached_tree(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    demo, editor = app.test_client(), app.test_client()
    portal_login(demo)
    portal_login(editor, username="editor")
    assert "Demo&#39;s drafts" in demo.get("/library").text
    tree = editor.get("/library").text
    assert "Demo&#39;s drafts" not in tree and "Erika&#39;s private files" in tree


@pytest.mark.parametrize(
    ("accept_language", "lang"),
    [("sv-SE,sv;q=0.9,en;q=0.8", "sv-SE"), ("nb", "nb-NO"), ("de-AT, de;q=0.9", "de-DE"), ("fi", "fi-FI"),
     ("fr-FR, fr;q=0.9", "en-GB"), ("", "en-GB"), ("en-US", "en-GB")],
)
def test_search_asks_in_the_browsers_language_among_mediaflows_five(logged_in: Any, emulator: Emulator,
                                                                     accept_language: str, lang: str) -> None:
    headers = {"Accept-Language": accept_language} if accept_language else {}
    assert logged_in.get("/search?q=logo", headers=headers).status_code == 200
    assert emulator.stats()["last_search_lang"] == lang


@pytest.mark.parametrize(
    ("settings", "img_src"),
    [({}, "'self' {api} https://*.mediaflow.com https://*.mediaflowpro.com"),
     ({"MEDIAFLOW_PREVIEW_ORIGINS": ["https://cdn.example/", "https://*.media.example:8443"]},
      "'self' https://cdn.example https://*.media.example:8443")],
    ids=["default", "configured"],
)
def test_previews_may_load_from_the_preview_origins_and_nothing_else(
    make_app: Callable[..., Flask], emulator: Emulator, settings: dict[str, Any], img_src: str
) -> None:
    client = make_app(**settings).test_client()
    portal_login(client)
    page = client.get(f"/library/folders/{BRAND_ASSETS}")
    csp = page.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["img-src"] == img_src.format(api=emulator.url)
    assert "script-src" not in csp and "default-src 'self'" in csp  # still no inline script
    assert f'src="{html.escape(emulator.url)}/_emulator/preview/101/thumb.svg"' in page.text


class Hostile:
    """A Mediaflow that answers chosen API paths with chosen bytes; everything else goes to the emulator."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.answers: dict[str, tuple[int, bytes, float]] = {}
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        for prefix, (status, body, trickle) in self.answers.items():
            if request.path.startswith(prefix):
                start_response(f"{status} X", [("Content-Type", "application/json")])
                return self.trickled(body, trickle) if trickle else [body]
        upstream = requests.request(request.method, self.emulator.url + request.full_path, data=request.get_data(),
                                    headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                                    timeout=10)
        start_response(f"{upstream.status_code} X", [("Content-Type", "application/json")])
        return [upstream.content]

    @staticmethod
    def trickled(body: bytes, every: float) -> Iterator[bytes]:
        """The first byte at once (with the headers), then one byte every `every` seconds."""
        for index in range(len(body)):
            if index:
                time.sleep(every)
            yield body[index:index + 1]


@pytest.fixture
def hostile(emulator: Emulator) -> Iterator[Hostile]:
    server = Hostile(emulator)
    yield server
    server.server.shutdown()


LIST = f"/1/folder/{BRAND_ASSETS}/files"
DOWNLOAD = f"/1/file/{BRAND_GUIDE}/downloads/0"


@pytest.mark.parametrize(
    ("path", "answer", "page", "status", "says"),
    [("/1/foldertree", b'[{"id": 1, "name": "bad \\ud800 name", "parent": null}]', "/library", 200, "bad \ufffd name"),
     (LIST, b'[{"id": 5, "name": "x", "thumbPreview": "https://cdn.example/\\ud800"}]',
      f"/library/folders/{BRAND_ASSETS}", 200, ">x</span>"),
     (LIST, b"[" * 100_000 + b"]" * 100_000, f"/library/folders/{BRAND_ASSETS}", 502, "could not understand"),
     (LIST, b'"not an array"', f"/library/folders/{BRAND_ASSETS}", 502, "could not understand"),
     (LIST, b"[" + b'{"id": 1},' * 900_000 + b'{"id": 2}]', f"/library/folders/{BRAND_ASSETS}", 502, "could not"),
     (DOWNLOAD, b'[{"downloadURL": "https://evil.example:99999/x"}]', f"/files/{BRAND_GUIDE}/download", 502, "could"),
     (DOWNLOAD, b'[{"downloadURL": "https://[bad/x"}]', f"/files/{BRAND_GUIDE}/download", 502, "could not"),
     (DOWNLOAD, b'[{"downloadURL": "http://files.example/x"}]', f"/files/{BRAND_GUIDE}/download", 502, "could not"),
     (DOWNLOAD, b'[{"downloadURL": "https://u:p@files.example/x"}]', f"/files/{BRAND_GUIDE}/download", 502, "could"),
     (DOWNLOAD, b'[{"downloadURL": "https://files.example/\\ud800"}]', f"/files/{BRAND_GUIDE}/download", 303, ""),
     (DOWNLOAD, b'[{"downloadURL": "javascript:alert(1)"}]', f"/files/{BRAND_GUIDE}/download", 502, "could not")],
    ids=["surrogate-name", "surrogate-preview", "deep", "not-an-array", "too-large", "bad-port", "bad-host",
         "plain-http", "userinfo", "surrogate-url", "javascript"],
)
def test_an_answer_mediaflow_should_never_give_is_a_page_not_a_500(
    make_app: Callable[..., Flask], hostile: Hostile, path: str, answer: bytes, page: str, status: int, says: str
) -> None:
    client = make_app(MEDIAFLOW_API_BASE=f"{hostile.url}/1", LIBRARY_CACHE_SECONDS=0).test_client()
    portal_login(client)
    hostile.answers[path] = (200, answer, 0.0)
    response = client.get(page)
    assert response.status_code == status, response.text
    assert says in response.text
    assert client.get("/session").status_code == 200


def test_an_answer_that_trickles_in_is_cut_off_at_the_calls_time_limit(make_app: Callable[..., Flask],
                                                                        hostile: Hostile) -> None:
    client = make_app(MEDIAFLOW_API_BASE=f"{hostile.url}/1", MEDIAFLOW_CONNECT_TIMEOUT=0.5,
                      MEDIAFLOW_READ_TIMEOUT=1.0).test_client()
    portal_login(client)
    hostile.answers[LIST] = (200, b'[{"id": 1, "name": "slow"}]' + b" " * 100, 0.1)  # a byte every 0.1 s: 13 s
    started = time.monotonic()
    page = client.get(f"/library/folders/{BRAND_ASSETS}")
    assert page.status_code == 503 and "could not be reached in time" in page.text
    assert time.monotonic() - started < 4  # the read timeout alone would have waited for every byte
    del hostile.answers[LIST]
    # The half-read connection is not handed to the next call.
    assert client.get(f"/library/folders/{BRAND_ASSETS}").status_code == 200


def test_an_answer_that_stalls_midway_is_counted_as_a_timeout(make_app: Callable[..., Flask],
                                                                hostile: Hostile) -> None:
    app = make_app(MEDIAFLOW_API_BASE=f"{hostile.url}/1", MEDIAFLOW_CONNECT_TIMEOUT=0.5, MEDIAFLOW_READ_TIMEOUT=1.0)
    client = app.test_client()
    portal_login(client)
    hostile.answers[LIST] = (200, b'[{"id": 1, "name": "stalled"}]', 1.5)  # the headers and "[", then silence
    page = client.get(f"/library/folders/{BRAND_ASSETS}")
    assert page.status_code == 503 and "could not be reached in time" in page.text
    scrape = client.get("/metrics").text
    assert 'mediaflow_requests_total{endpoint="folder_files",status="timeout"} 1.0' in scrape
    assert 'status="unreachable"' not in scrape


def test_a_me_answer_of_the_wrong_shape_still_logs_in_without_a_name(make_app: Callable[..., Flask],
                                                                      hostile: Hostile) -> None:
    client = make_app(MEDIAFLOW_API_BASE=f"{hostile.url}/1").test_client()
    hostile.answers["/1/me"] = (200, b'{"id": 1, "name": "not in an array"}', 0.0)
    assert portal_login(client).status_code == 302
    assert "Welcome, Mediaflow user" in client.get("/").text


def test_a_cookie_mediaflow_sets_never_travels_with_another_users_calls(make_app: Callable[..., Flask],
                                                                        hostile: Hostile) -> None:
    seen: list[str | None] = []
    forward = hostile.app

    def with_cookie(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(environ.get("HTTP_COOKIE"))
        return forward(environ, lambda status, headers: start_response(status, [*headers, (
            "Set-Cookie", "AWSALB=sticky-for-this-user; Path=/")]))

    hostile.server.app = with_cookie
    app = make_app(MEDIAFLOW_API_BASE=f"{hostile.url}/1")
    first, second = app.test_client(), app.test_client()
    portal_login(first)
    portal_login(second, username="editor")
    assert second.get("/account").status_code == 200
    assert len(seen) == 3 and seen == [None, None, None]


def test_the_session_ended_page_mid_page_shows_nobody_logged_in(logged_in: Any, emulator: Emulator) -> None:
    emulator.fault(endpoint="api", kind="status", status=401, count=2)
    page = logged_in.get(f"/library/folders/{BRAND_ASSETS}")
    assert page.status_code == 401 and "Your Mediaflow session has ended" in page.text
    assert "Log out" not in page.text and "Demo User" not in page.text


def test_a_page_of_several_calls_waits_out_one_429_at_most(logged_in: Any, emulator: Emulator) -> None:
    logged_in.get(f"/files/{BRAND_GUIDE}")  # the formats are kept: the next view makes three calls
    emulator.fault(endpoint="api", kind="rate_limit", retry_after=1, count=2)
    started = time.monotonic()
    page = logged_in.get(f"/files/{BRAND_GUIDE}")
    assert page.status_code == 429 and page.headers["Retry-After"] == "1"
    assert time.monotonic() - started < 1.9  # one wait of a second, not two


def folder(id_: Any, parent: Any = None, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "name": f"f{id_}", "parent": parent, **extra}


@pytest.mark.parametrize(
    ("flat", "selected", "roots", "shown", "open_ids"),
    [([folder(1), folder(2, 1), folder(3, 2)], 3, [1], {1, 2, 3}, {1, 2, 3}),
     ([folder(2, 1), folder(1)], 2, [1], {1, 2}, {1, 2}),                       # a child before its parent
     ([folder(1, 2), folder(2, 1)], 1, [], set(), set()),                     # a parent loop: hidden, no recursion
     ([folder(1, 1)], 1, [1], {1}, {1}),                                      # its own parent: a root
     ([folder(1), folder(1, None, name="again")], None, [1], {1}, set()),     # a duplicate id: the first one
     ([folder("1"), folder(True), folder(2**63), folder(1.0), "x", None], None, [], set(), set()),  # not ids
     ([folder(-3), folder(5, -3), folder(9, 404)], 5, [-3, 9], {-3, 5, 9}, {-3, 5}),  # an unknown parent: a root
     ([folder(1), folder(2, 1, type="separator")], None, [1], {1}, set()),   # separators are not folders
     ([folder(n, n - 1 if n else None) for n in range(40)], 39, [0], set(range(33)), set())],  # too deep: cut
    ids=["nested", "child-first", "loop", "self-parent", "duplicate", "not-ids", "unknown-parent", "separator",
         "too-deep"],
)
def test_the_folder_tree_is_built_from_whatever_mediaflow_sends(
    flat: list[Any], selected: int | None, roots: list[int], shown: set[int], open_ids: set[int]
) -> None:
    tree = build_tree(flat, selected)

    def walk(nodes: list[Any]) -> set[int]:
        return {node.id for node in nodes} | {i for node in nodes for i in walk(node.children)}

    assert [root.id for root in tree.roots] == roots
    assert walk(tree.roots) == shown
    assert tree.open_ids == open_ids


@pytest.mark.parametrize(
    ("item", "expected"),
    [({"id": 1, "type": "image"}, {"kind": "image", "extension": "", "size": None}),
     ({"id": 1, "type": {"type": "video", "extension": "mp4", "description": "Film"}, "filesize": 2048},
      {"kind": "Film", "extension": "mp4", "size": 2048}),
     ({"id": 1, "filesize": True, "width": True, "height": 1e308, "length": "94"},
      {"size": None, "width": None, "height": None, "length": None}),
     ({"id": 1, "thumbPreview": "javascript:alert(1)", "mediumPreview": "data:image/png;base64,x",
       "smallPreview": "https://cdn.example/s.png"}, {"thumb": None, "preview": "https://cdn.example/s.png"}),
     ({"id": 1, "name": None, "filename": "a.png", "gdprStatus": "MISSING_CONSENT"},
      {"name": "a.png", "gdpr_ok": False}),
     ({"id": 1, "folderId": "7", "alttext": 5}, {"folder_id": None, "alt": ""})],
    ids=["type-string", "type-object", "odd-numbers", "preview-schemes", "name-fallback", "odd-extras"],
)
def test_a_file_card_keeps_only_what_has_the_documented_type(item: dict[str, Any], expected: dict[str, Any]) -> None:
    card = summary(item)
    assert {name: getattr(card, name) for name in expected} == expected
