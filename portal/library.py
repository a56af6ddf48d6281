"""The media library: browse the folder tree, search, look at a file, download it in a chosen format.

Every page reads Mediaflow through portal/api.py as the logged-in user. What does not change while
someone browses (the folder tree, the download formats) is kept LIBRARY_CACHE_SECONDS per session in
the session store and in the worker's memory; files and their details are always asked for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, current_app, render_template, request, session
from werkzeug.routing import IntegerConverter, Map
from werkzeug.wrappers import Response

from . import api, logs, tokens
from .auth import login_required
from .mediaflow import MediaflowUnavailable

bp = Blueprint("library", __name__)

PER_PAGE = 24
MAX_PAGE = 10_000
MAX_SEARCH_LENGTH = 200
# Mediaflow's search languages; a browser asking for none of them (or for "*") searches in English.
LANGUAGES = ["en-GB", "sv-SE", "fi-FI", "nb-NO", "de-DE"]
# A search shows this many files at most, and asks to narrow it down when there are more.
MAX_RESULTS = 100
# Longer URLs from Mediaflow are not believed: no browser or proxy takes them whole anyway.
MAX_URL_LENGTH = 8192
# What a browser would read differently from how Mediaflow wrote it.
NOT_IN_URL = re.compile(r"[\\\r\n\t ]")
SORTS = {"filename": "Name", "uploaded": "Upload date", "filesize": "Size"}
ORDERS = {"asc": "Ascending", "desc": "Descending"}
# What a grid of previews shows; `fields` names are lowercase (mediaflow-api.md).
LIST_FIELDS = "id,name,filename,filesize,type,thumbpreview,uploaded,gdprstatus"
TREE_FIELDS = "id,name,type,parent,depth,archived,haschildren,private"
# The folder trees and format lists a worker keeps in memory, at most (one each per session browsing).
MAX_KEPT = 1000
# A tree deeper than this is not Mediaflow's: the rest is not shown rather than recursed into.
MAX_DEPTH = 32
GDPR = {
    "OK": "Consent in order",
    "MISSING_CONSENT": "Consent missing: people in this file have not agreed to its use",
    "INVALID_CONSENT": "Consent no longer valid: do not use this file",
    "AWAIT_CONSENT": "Waiting for consent: do not use this file yet",
}


class MediaflowId(IntegerConverter):
    """Mediaflow's ids in URLs: whole numbers, negative ones too (Mediaflow has them), within 64 bits.

    ASCII digits only: Werkzeug's own pattern also takes other scripts' digits, so one file would have
    many URLs, and a proxy rule on a path could be walked around.
    """

    regex = r"-?[0-9]+"

    def __init__(self, url_map: Map) -> None:
        super().__init__(url_map, signed=True, min=-(2**63), max=2**63 - 1)


@dataclass
class Folder:
    id: int
    name: str
    archived: bool
    private: bool
    children: list[Folder] = field(default_factory=list)


def init_app(app: Flask) -> None:
    app.url_map.converters["mediaflow_id"] = MediaflowId
    app.register_blueprint(bp)
    app.add_template_filter(file_size)
    app.extensions["library_kept"] = {}


@bp.get("/library")
@login_required
def library() -> Any:
    """The folder tree, and a prompt to pick a folder."""
    return render_template("library/folder.html", tree=build_tree(folder_tree(), None), folder=None, files=None)


@bp.get("/library/folders/<mediaflow_id:folder_id>")
@login_required
def folder(folder_id: int) -> Any:
    """One folder's files as a grid of previews, a page at a time. Calls: GET /folder/{id}/files (+ the tree)."""
    page, sort, order = _page_number(), _choice("sort", SORTS), _choice("order", ORDERS)
    tree = build_tree(folder_tree(), folder_id)
    files = api.get(f"folder/{folder_id}/files", fields=LIST_FIELDS, type="any", sort=sort, order=order,
                    per_page=PER_PAGE, page=page)
    return render_template("library/folder.html", tree=tree, folder=tree.selected, folder_id=folder_id,
                           files=summaries(files), page=page, sort=sort, order=order, sorts=SORTS, orders=ORDERS,
                           has_next=len(files) >= PER_PAGE)


@bp.get("/search")
@login_required
def search() -> Any:
    """Search the whole library in the browser's language. Calls: POST /search/file."""
    term = request.args.get("q", "").strip()
    if len(term) > MAX_SEARCH_LENGTH:
        abort(400, description=f"A search is at most {MAX_SEARCH_LENGTH} characters long.")
    # No one types a control character into a search, and a page cannot show one.
    if logs.CONTROL.search(term):
        abort(400, description="A search cannot hold control characters (such as a tab or a line break).")
    if not term:
        return render_template("library/search.html", term="", files=None, more=False)
    lang = request.accept_languages.best_match(LANGUAGES, default="en-GB")
    found = api.post("search/file", {"searchTerm": term, "lang": lang, "ai": False}, fields=LIST_FIELDS)
    if not isinstance(found, list):
        raise MediaflowUnavailable("Mediaflow's search answered with an unexpected shape", 502)
    files = summaries(found)
    return render_template("library/search.html", term=term, files=files[:MAX_RESULTS],
                           more=len(files) > MAX_RESULTS)


@bp.get("/files/<mediaflow_id:file_id>")
@login_required
def file(file_id: int) -> Any:
    """A file's details, rights and GDPR status, and a download link per format.

    Calls: GET /file/{id}, /file/{id}/checkpermissions, /file/{id}/license (+ the formats).
    """
    details = api.first(api.get(f"file/{file_id}", fields="all"))
    permissions = api.first(api.get(f"file/{file_id}/checkpermissions"))
    rights = api.first(api.get(f"file/{file_id}/license", fields="all"))
    formats = [f for f in download_formats() if _fits(f, details)]
    today = datetime.fromtimestamp(tokens.service().clock(), UTC).date().isoformat()
    return render_template("library/file.html", file=summary(details), details=details, permissions=permissions,
                           rights=rights, formats=formats, gdpr=gdpr_words(details.get("gdprStatus")), today=today)


@bp.get("/files/<mediaflow_id:file_id>/download")
@login_required
def download(file_id: int) -> Response:
    """Send the browser to a short-lived download URL. Calls: GET /file/{id}/downloads/{format}.

    The URL is signed for this user: it is handed to the browser once and never logged, stored or shown.
    """
    format_id = request.args.get("format", "0")
    if not (format_id.isascii() and format_id.isdigit() and len(format_id) <= 9):
        abort(400, description="Choose a download format from the list.")
    answer = api.first(api.get(f"file/{file_id}/downloads/{format_id}"))
    url = answer.get("downloadURL")
    # Mediaflow chooses the host; over https, as every other call to Mediaflow (http on loopback only).
    if not isinstance(url, str) or not _is_web_url(url, https=True):
        raise MediaflowUnavailable("Mediaflow's download answer has no usable downloadURL", 502)
    # Not flask.redirect: its body repeats the URL as a link, for whatever keeps bodies (a proxy, a HAR file).
    response = current_app.response_class(status=303, headers={"Location": url})
    # The signed URL's host learns nothing of the portal's pages.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def folder_tree() -> list[Any]:
    """GET /foldertree for this session, kept LIBRARY_CACHE_SECONDS."""
    return _cached("foldertree", lambda: api.get("foldertree", fields=TREE_FIELDS, private="true", public="true"))


def download_formats() -> list[Any]:
    """GET /formats, kept as the folder tree is."""
    return _cached("formats", lambda: api.get("formats", fields="id,name,suffix,filetype,width,height"))


def _cached(name: str, fetch: Callable[[], list[Any]]) -> list[Any]:
    """Mediaflow's answer, kept in the session store (for every worker) and in this worker's memory.

    The worker's copy spares a warm page its only read of the store; both end LIBRARY_CACHE_SECONDS
    after Mediaflow answered, so a copy is never older than that, wherever it is read.
    """
    seconds = current_app.config["LIBRARY_CACHE_SECONDS"]
    if not seconds:
        return fetch()
    service = tokens.service()
    now = service.clock()
    # Under the session's token key: another session, even the same user's, never reads it.
    key = f"{name}:{session['tokens_key']}"
    near: dict[str, tuple[float, list[Any]]] = current_app.extensions["library_kept"]
    if (copy := near.get(key)) and now < copy[0]:
        return copy[1]
    kept = service.store.recall(key)
    value: list[Any]
    if (isinstance(kept, dict) and isinstance(kept.get("value"), list) and isinstance(kept.get("at"), int | float)
            and 0 <= now - kept["at"] < seconds):
        at, value = kept["at"], kept["value"]
    else:
        at, value = now, fetch()
        service.store.remember(key, {"at": at, "value": value}, seconds)
    if len(near) >= MAX_KEPT:
        near.clear()  # a worker serves fewer live sessions than this; a crowd starts it again
    near[key] = (at + seconds, value)
    return value


@dataclass
class Tree:
    roots: list[Folder]
    selected: Folder | None
    # The selected folder and its ancestors: their branches are open.
    open_ids: set[int]


def build_tree(flat: list[Any], selected_id: int | None) -> Tree:
    """Mediaflow's flat folder list as a tree; a folder whose parent is missing is a root."""
    folders: dict[int, Folder] = {}
    parents: dict[int, Any] = {}
    for item in flat:
        # Mediaflow's tree also holds separators; only folders are shown.
        if (isinstance(item, dict) and _is_id(item.get("id")) and item["id"] not in folders
                and item.get("type", "folder") == "folder"):
            folders[item["id"]] = Folder(item["id"], _text(item.get("name")) or "(no name)",
                                         item.get("archived") is True, item.get("private") is True)
            parents[item["id"]] = item.get("parent")
    roots: list[Folder] = []
    for folder_id, node in folders.items():
        parent = folders.get(parents[folder_id]) if _is_id(parents[folder_id]) else None
        if parent is not None and parent is not node:
            parent.children.append(node)
        else:
            roots.append(node)
    # Only what hangs from a root is shown, to MAX_DEPTH: a parent loop in the data cannot recurse forever.
    reachable: dict[int, int | None] = {}
    stack: list[tuple[Folder, int | None, int]] = [(root, None, 0) for root in roots]
    while stack:
        node, parent_id, depth = stack.pop()
        if node.id in reachable or depth > MAX_DEPTH:
            continue
        reachable[node.id] = parent_id
        stack.extend((child, node.id, depth + 1) for child in node.children)
    for node in folders.values():
        node.children = [child for child in node.children if reachable.get(child.id) == node.id]
    open_ids: set[int] = set()
    current = selected_id if selected_id in reachable else None
    while current is not None and current not in open_ids:
        open_ids.add(current)
        current = reachable[current]
    selected = folders[selected_id] if selected_id is not None and selected_id in reachable else None
    return Tree(roots, selected, open_ids)


@dataclass(frozen=True)
class FileCard:
    """What a page shows of a file, each field checked: Mediaflow's shapes beyond these are not documented."""

    id: int
    name: str
    filename: str
    kind: str
    extension: str
    size: int | None
    uploaded: str
    thumb: str | None
    preview: str | None
    gdpr_ok: bool
    # The file page's extras; None when Mediaflow gives none that make sense.
    width: int | None = None
    height: int | None = None
    length: int | None = None
    folder_id: int | None = None
    alt: str = ""


def summaries(files: list[Any]) -> list[FileCard]:
    return [card(item) for item in files if isinstance(item, dict) and _is_id(item.get("id"))]


def card(item: dict[str, Any]) -> FileCard:
    """What a grid of previews shows of a file: one preview, and no file-page extras."""
    kind = item.get("type")
    kind = kind if isinstance(kind, dict) else {"type": kind}
    size = item.get("filesize")
    return FileCard(
        id=item["id"],
        name=_text(item.get("name")) or _text(item.get("filename")) or "(no name)",
        filename=_text(item.get("filename")),
        kind=_text(kind.get("description")) or _text(kind.get("type")) or "file",
        extension=_text(kind.get("extension")),
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        uploaded=_text(item.get("uploaded"))[:10],
        thumb=_preview(item.get("thumbPreview")),
        preview=None,
        gdpr_ok=item.get("gdprStatus") in (None, "OK"),
    )


def summary(item: dict[str, Any]) -> FileCard:
    """What a file's own page shows: the card, with the larger preview and the measures."""
    return replace(
        card(item),
        preview=_preview(item.get("mediumPreview")) or _preview(item.get("smallPreview")),
        width=_measure(item.get("width")),
        height=_measure(item.get("height")),
        length=_measure(item.get("length")),
        folder_id=item["folderId"] if _is_id(item.get("folderId")) else None,
        alt=_text(item.get("alttext")),
    )


def _measure(value: Any) -> int | None:
    """Pixels or seconds: a positive number of a sensible size, shown whole."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 10**7:
        return round(value)
    return None


def gdpr_words(status: Any) -> str:
    if status is None:
        return "Not recorded"
    return GDPR.get(str(status), f"Unknown status ({_text(status)[:40]})")


def file_size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _fits(download_format: Any, details: dict[str, Any]) -> bool:
    """A format for any file, or for this file's type (Mediaflow answers 400 to the others)."""
    if not isinstance(download_format, dict) or not _is_id(download_format.get("id")):
        return False
    filetype = download_format.get("filetype")
    kind = details.get("type")
    return filetype in (None, "", "any") or (isinstance(kind, dict) and filetype == kind.get("type"))


def _page_number() -> int:
    raw = request.args.get("page", "1")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6 and 1 <= int(raw) <= MAX_PAGE):
        abort(400, description=f"A page number is a whole number from 1 to {MAX_PAGE}.")
    return int(raw)


def _choice(name: str, choices: dict[str, str]) -> str:
    value = request.args.get(name, next(iter(choices)))
    if value not in choices:
        abort(400, description=f"'{name}' must be one of: {', '.join(choices)}.")
    return value


def _preview(url: Any) -> str | None:
    return url if isinstance(url, str) and _is_web_url(url) else None


def _is_web_url(url: str, https: bool = False) -> bool:
    """An absolute http(s) URL a browser reads as Mediaflow wrote it: no user:password@, a valid port, not huge."""
    if len(url) > MAX_URL_LENGTH or NOT_IN_URL.search(url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        return False
    if parts.scheme not in ("https", "http") or not parts.hostname or "@" in parts.netloc:
        return False
    return not https or parts.scheme == "https" or parts.hostname in ("localhost", "127.0.0.1", "::1")


def _is_id(value: Any) -> bool:
    """An id the portal's URLs can carry (MediaflowId): a whole number within 64 bits."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
