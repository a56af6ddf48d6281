"""Mediaflow's REST API on the demo library (/1/…), and the plain URLs it hands out: previews and downloads."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    render_template,
    request,
    send_file,
    url_for,
)
from itsdangerous import BadSignature
from werkzeug.exceptions import HTTPException

from .config import EmulatorConfig, User
from .faults import Stats
from .library import (
    FILE_TYPES,
    FORMATS,
    PREVIEW_SIZES,
    SEARCH_LANGS,
    DownloadExpired,
    DownloadSigner,
    Library,
    MediaFile,
    checksum,
    file_bytes,
    preview_svg,
)
from .store import Store

api = Blueprint("api", __name__, url_prefix="/1")
media = Blueprint("media", __name__, url_prefix="/_emulator")

FOLDER_FIELDS = ("id", "name", "type", "depth", "archived", "parent", "hasChildren", "private")
FILE_SUMMARY_FIELDS = ("id", "name", "filename", "filesize", "type", "thumbPreview", "smallPreview",
                       "mediumPreview", "uploaded", "uploadedBy", "gdprStatus", "folderId")
FILE_FIELDS = (*FILE_SUMMARY_FIELDS, "width", "height", "length", "photographer", "description", "alttext",
               "checksum", "hasPreview")
FILE_DEFAULT_FIELDS = ("id", "name", "filename", "filesize", "type")
FORMAT_FIELDS = ("id", "name", "suffix", "filetype", "width", "height", "keepRatio")
SORT_KEYS: dict[str, Callable[[MediaFile], Any]] = {
    "filename": lambda f: (f.filename.casefold(), f.id),
    "name": lambda f: (f.name.casefold(), f.id),
    "uploaded": lambda f: (f.uploaded, f.id),
    "filesize": lambda f: (f.size, f.id),
}
NO_ACCESS = "You do not have access to this folder."


@dataclass
class MediaApi:
    """What the API's views share: the users and library, the tokens, the counts and the download signer."""

    config: EmulatorConfig
    store: Store
    stats: Stats
    signer: DownloadSigner

    @property
    def library(self) -> Library:
        return self.config.library


def init_app(app: Flask, config: EmulatorConfig, store: Store, stats: Stats) -> None:
    app.extensions["mediaflow_api"] = MediaApi(config, store, stats, DownloadSigner())
    app.register_blueprint(api)
    app.register_blueprint(media)


def public_url(endpoint: str, **values: Any) -> str:
    """An absolute URL the browser can open: at --public-url when the caller reaches the emulator elsewhere."""
    base = current_app.config.get("EMULATOR_PUBLIC_URL") or request.host_url
    return base.rstrip("/") + url_for(endpoint, **values)


def service() -> MediaApi:
    found: MediaApi = current_app.extensions["mediaflow_api"]
    return found


@api.before_request
def require_bearer() -> None:
    """Load the access token's user into g.user, or answer 401 before any /1/ view runs."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value:
        abort(401, "Missing bearer token.")
    access = service().store.find_access_token(value.strip())
    if access is None:
        abort(401, "The access token is invalid or has expired.")
    g.user = service().config.user(access.username)


@api.get("/me")
def me() -> Response:
    """Return the token's user as a one-element array, as Mediaflow's GETs do."""
    user: User = g.user
    return jsonify([{"id": user.id, "username": user.username, "name": user.name,
                     "email": user.email, "customerId": user.customer_id}])


@api.get("/foldertree")
def foldertree() -> Response:
    """List the folders this user sees, flat, each parent before its children."""
    entries = service().library.tree(g.user.username, private=_flag("private"), public=_flag("public"))
    fields = _fields(FOLDER_FIELDS)
    return jsonify([_pick({"id": e.folder.id, "name": e.folder.name, "type": "folder", "depth": e.depth,
                           "archived": e.folder.archived, "parent": e.folder.parent,
                           "hasChildren": e.has_children, "private": e.private}, fields) for e in entries])


@api.get("/folder/<int(signed=True):folder_id>/files")
def folder_files(folder_id: int) -> Response:
    """List one folder's files, sorted, one page at a time."""
    page = _number("page", 1, 1, 1_000_000)
    per_page = _number("per_page", 100, 1, 500)
    sort = _choice("sort", "filename", tuple(SORT_KEYS))
    order = _choice("order", "asc", ("asc", "desc"))
    fields = _fields(FILE_SUMMARY_FIELDS, FILE_DEFAULT_FIELDS, FILE_FIELDS)
    library = service().library
    if folder_id not in library.folders:
        abort(404, "No such folder.")
    if not library.can_see(folder_id, g.user.username):
        abort(403, NO_ACCESS)
    files = sorted(library.files_in(folder_id), key=SORT_KEYS[sort], reverse=order == "desc")
    start = (page - 1) * per_page
    return jsonify([_file_json(f, fields) for f in files[start:start + per_page]])


@api.get("/file/<int(signed=True):file_id>")
def file(file_id: int) -> Response:
    """Describe one file; fields=all adds sizes, credits, texts and the checksum."""
    return jsonify([_file_json(_visible_file(file_id), _fields(FILE_FIELDS, FILE_DEFAULT_FIELDS))])


@api.get("/file/<int(signed=True):file_id>/checkpermissions")
def checkpermissions(file_id: int) -> Response:
    """Say whether this user may download the file, and why not."""
    found = _visible_file(file_id)
    return jsonify([{"allowDownload": found.allow_download, "allowDownloadReason": found.allow_download_reason,
                     "warnFrom": found.warn_from}])


@api.get("/file/<int(signed=True):file_id>/license")
def file_license(file_id: int) -> Response:
    """Give the file's rights and licence dates."""
    terms = _visible_file(file_id).license
    return jsonify([{"rightsExists": terms.rights_exists, "rightsInformation": terms.rights_information,
                     "licenseInformation": terms.license_information, "downloadWarning": terms.download_warning,
                     "lockFile": terms.lock_file, "useFrom": terms.use_from, "useTo": terms.use_to}])


@api.post("/search/file")
def search() -> Response:
    """Find the visible files whose name, filename or description holds the search term."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, 'Send a JSON object such as {"searchTerm": "logo", "lang": "en-GB", "ai": false}.')
    lang = body.get("lang")
    service().stats.search(lang if isinstance(lang, str) else None)
    term = body.get("searchTerm")
    if not isinstance(term, str) or not term.strip():
        abort(400, "searchTerm must be a non-empty string.")
    if len(term) > 200:
        abort(400, "searchTerm must be at most 200 characters.")
    if lang not in SEARCH_LANGS:
        abort(400, f"lang must be one of {', '.join(SEARCH_LANGS)}.")
    fields = _fields(FILE_SUMMARY_FIELDS, FILE_DEFAULT_FIELDS, FILE_FIELDS)
    return jsonify([_file_json(f, fields) for f in service().library.search(term.strip(), g.user.username)])


@api.get("/formats")
def formats() -> Response:
    """List the download formats; 0 is the original."""
    fields = _fields(FORMAT_FIELDS)
    return jsonify([_pick({"id": f.id, "name": f.name, "suffix": f.suffix, "filetype": f.filetype,
                           "width": f.width, "height": f.height, "keepRatio": f.keep_ratio}, fields)
                    for f in FORMATS.values()])


@api.get("/file/<int(signed=True):file_id>/downloads/<int(signed=True):format_id>")
def download_url(file_id: int, format_id: int) -> Response:
    """Hand out a signed URL, valid a minute, for the file in one format."""
    found = _visible_file(file_id)
    if not found.allow_download:
        abort(403, found.allow_download_reason or "You may not download this file.")
    if format_id not in FORMATS:
        abort(404, "No such format.")
    chosen = FORMATS[format_id]
    if not chosen.fits(found):
        abort(400, f"The format {chosen.name!r} does not fit a {found.type.kind} file.")
    signer = service().signer
    return jsonify([{"id": found.id, "format": chosen.id, "watermark": False, "isPreview": False,
                     "filetype": chosen.extension(found), "expiresIn": signer.lifetime,
                     "downloadURL": public_url("media.download", signed=signer.sign(found.id, chosen.id)),
                     "downloadWarning": found.license.download_warning}])


@media.get("/preview/<int(signed=True):file_id>/<any(thumb, small, medium):size>.svg")
def preview(file_id: int, size: str) -> Response:
    """Draw a file's preview: its name on a rectangle coloured by its id. Plain URL, as on Mediaflow's hosts."""
    found = service().library.files.get(file_id)
    if found is None:
        abort(404, "No such file.")
    service().stats.preview()
    response = Response(preview_svg(found, size), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "public, max-age=3600"
    # Opened on its own, an SVG is a document: let nothing in it run.
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@media.get("/download/<signed>")
def download(signed: str) -> Response:
    """Send the bytes a signed, unexpired download URL names, as an attachment."""
    stats = service().stats
    try:
        file_id, format_id = service().signer.unsign(signed)
    except DownloadExpired:
        stats.download("expired")
        abort(410, "This download link has expired. Ask for a new one.")
    except BadSignature:
        stats.download("tampered")
        abort(403, "This download link is not valid.")
    # Signed only after the checks in download_url, and the library never changes: both exist.
    found, chosen = service().library.files[file_id], FORMATS[format_id]
    stats.download("ok")
    return send_file(io.BytesIO(file_bytes(file_id, format_id)), as_attachment=True,
                     mimetype=FILE_TYPES[chosen.extension(found)].mimetype, download_name=chosen.download_name(found))


@media.errorhandler(HTTPException)
def media_error(error: HTTPException) -> tuple[str, int]:
    return render_template("emulator/unavailable.html", error=error), error.code or 500


def _visible_file(file_id: int) -> MediaFile:
    # A file in someone else's private folder is not found, as if it did not exist.
    found = service().library.visible_file(file_id, g.user.username)
    if found is None:
        abort(404, "No such file.")
    return found


def _file_json(found: MediaFile, fields: tuple[str, ...]) -> dict[str, Any]:
    kind = found.type
    values: dict[str, Any] = {
        "id": found.id, "name": found.name, "filename": found.filename, "filesize": found.size,
        "type": {"id": kind.id, "type": kind.kind, "extension": kind.extension, "description": kind.description},
        "uploaded": found.uploaded, "uploadedBy": found.uploaded_by, "gdprStatus": found.gdpr_status,
        "folderId": found.folder_id, "width": found.width, "height": found.height, "length": found.length,
        "photographer": found.photographer, "description": found.description, "alttext": found.alttext,
        "hasPreview": True,
    }
    for size in PREVIEW_SIZES:
        if f"{size}Preview" in fields:
            values[f"{size}Preview"] = public_url("media.preview", file_id=found.id, size=size)
    if "checksum" in fields:
        values["checksum"] = checksum(found.id)
    return _pick(values, fields)


def _pick(values: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: values[name] for name in fields}


def _fields(everything: tuple[str, ...], default: tuple[str, ...] | None = None,
            pickable: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Mediaflow's fields=: all (or any), a lowercase comma list (id always comes), or the default."""
    asked = {name.strip().lower() for name in request.args.get("fields", "").split(",") if name.strip()}
    if not asked:
        return default or everything
    if asked & {"all", "any"}:
        return everything
    return tuple(name for name in pickable or everything if name == "id" or name.lower() in asked)


def _number(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not low <= int(raw) <= high:
        abort(400, f"{name} must be a whole number from {low} to {high}.")
    return int(raw)


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = request.args.get(name, default).lower()
    if value not in allowed:
        abort(400, f"{name} must be one of {', '.join(allowed)}.")
    return value


def _flag(name: str) -> bool:
    value = request.args.get(name, "true").lower()
    if value not in ("true", "false", "1", "0"):
        abort(400, f"{name} must be true or false.")
    return value in ("true", "1")
