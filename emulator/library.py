"""The demo media library: folders, files, their bytes, their preview SVGs and signed download tokens."""

from __future__ import annotations

import colorsys
import functools
import hashlib
import random
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from itsdangerous import URLSafeSerializer

GDPR_STATUSES = ("OK", "MISSING_CONSENT", "INVALID_CONSENT", "AWAIT_CONSENT")
SEARCH_LANGS = ("sv-SE", "en-GB", "fi-FI", "nb-NO", "de-DE")
PREVIEW_SIZES = {"thumb": 150, "small": 300, "medium": 800}


@dataclass(frozen=True)
class FileType:
    id: int
    kind: str  # Mediaflow's type.type: image, document or video
    extension: str
    description: str
    mimetype: str


FILE_TYPES = {t.extension: t for t in (
    FileType(1, "image", "jpg", "JPEG image", "image/jpeg"),
    FileType(2, "image", "png", "PNG image", "image/png"),
    FileType(3, "document", "pdf", "PDF document", "application/pdf"),
    FileType(4, "video", "mp4", "MPEG-4 video", "video/mp4"),
)}


@dataclass(frozen=True)
class Format:
    id: int
    name: str
    suffix: str
    filetype: str  # a FileType.kind, or "any"
    width: int | None = None
    height: int | None = None
    keep_ratio: bool = True

    def fits(self, file: MediaFile) -> bool:
        return self.filetype in ("any", file.type.kind)

    def extension(self, file: MediaFile) -> str:
        return self.suffix or file.type.extension

    def download_name(self, file: MediaFile) -> str:
        """The original's filename, or its stem with this format's suffix."""
        return f"{file.filename.rpartition('.')[0]}.{self.suffix}" if self.suffix else file.filename


FORMATS = {f.id: f for f in (
    Format(0, "Original", "", "any"),
    Format(1, "Web JPEG 1200", "jpg", "image", 1200, None),
    Format(2, "Thumbnail PNG 300", "png", "image", 300, 300, keep_ratio=False),
    Format(3, "PDF print", "pdf", "document"),
)}


@dataclass(frozen=True)
class Folder:
    id: int
    name: str
    parent: int | None = None
    archived: bool = False
    # A private folder belongs to one user; its subfolders are private to that user too.
    owner: str | None = None


@dataclass(frozen=True)
class License:
    rights_exists: bool = False
    rights_information: str = ""
    license_information: str = ""
    download_warning: str = ""
    lock_file: bool = False
    use_from: str | None = None
    use_to: str | None = None


@dataclass(frozen=True)
class MediaFile:
    id: int
    name: str
    filename: str
    folder_id: int
    uploaded: str = "2024-01-15T09:30:00"
    uploaded_by: str = "Demo User"
    # None: the size of the original's bytes (file_bytes(id, 0)).
    filesize: int | None = None
    gdpr_status: str = "OK"
    width: int | None = None
    height: int | None = None
    length: int | None = None
    photographer: str = ""
    description: str = ""
    alttext: str = ""
    allow_download: bool = True
    allow_download_reason: str = ""
    warn_from: str | None = None
    license: License = field(default_factory=License)

    @property
    def type(self) -> FileType:
        return FILE_TYPES[extension_of(self.filename)]

    @property
    def size(self) -> int:
        return self.filesize if self.filesize is not None else _original_size(self.id)


def extension_of(filename: str) -> str:
    return filename.rpartition(".")[2].lower() if "." in filename else ""


@dataclass(frozen=True)
class TreeEntry:
    folder: Folder
    depth: int
    private: bool
    has_children: bool


class Library:
    """Folders and files, indexed once; who sees what."""

    def __init__(self, folders: Iterable[Folder], files: Iterable[MediaFile]) -> None:
        self.folders = {f.id: f for f in folders}
        self.files = {f.id: f for f in files}
        self._children: dict[int | None, list[Folder]] = {}
        for folder in sorted(self.folders.values(), key=lambda f: (f.name.casefold(), f.id)):
            self._children.setdefault(folder.parent, []).append(folder)
        self._owner: dict[int, str | None] = {}
        self._depth: dict[int, int] = {}
        for folder, depth in self._walk():
            parent_owner = self._owner.get(folder.parent) if folder.parent is not None else None
            self._owner[folder.id] = folder.owner or parent_owner
            self._depth[folder.id] = depth
        self._files_in: dict[int, list[MediaFile]] = {}
        for file in self.files.values():
            self._files_in.setdefault(file.folder_id, []).append(file)

    def _walk(self, parent: int | None = None, depth: int = 0) -> Iterable[tuple[Folder, int]]:
        """Depth first, siblings by name: a parent always comes before its children."""
        for folder in self._children.get(parent, []):
            yield folder, depth
            yield from self._walk(folder.id, depth + 1)

    def owner(self, folder_id: int) -> str | None:
        return self._owner[folder_id]

    def depth(self, folder_id: int) -> int:
        return self._depth[folder_id]

    def can_see(self, folder_id: int, username: str) -> bool:
        return self._owner[folder_id] in (None, username)

    def tree(self, username: str, private: bool = True, public: bool = True) -> list[TreeEntry]:
        shown = [(f, d) for f, d in self._walk() if self.can_see(f.id, username)
                 and (private if self._owner[f.id] else public)]
        ids = {f.id for f, _ in shown}
        return [TreeEntry(f, d, self._owner[f.id] is not None,
                          any(c.id in ids for c in self._children.get(f.id, []))) for f, d in shown]

    def files_in(self, folder_id: int) -> list[MediaFile]:
        return list(self._files_in.get(folder_id, []))

    def visible_file(self, file_id: int, username: str) -> MediaFile | None:
        file = self.files.get(file_id)
        return file if file is not None and self.can_see(file.folder_id, username) else None

    def search(self, term: str, username: str) -> list[MediaFile]:
        """Visible files whose name, filename or description holds the term, ignoring case and accent encoding."""
        wanted = _folded(term)
        found = [f for f in self.files.values() if self.can_see(f.folder_id, username)
                 and any(wanted in _folded(text) for text in (f.name, f.filename, f.description))]
        return sorted(found, key=lambda f: (f.name.casefold(), f.id))


def _folded(text: str) -> str:
    # NFC first: a Mac sends "å" as "a" plus a combining ring, which casefold alone would not match.
    return unicodedata.normalize("NFC", text).casefold()


def file_bytes(file_id: int, format_id: int) -> bytes:
    """The same bytes every time for one file in one format: a header naming both, then a few KB of noise."""
    noise = random.Random(f"mediaflow-emulator:{file_id}:{format_id}")
    header = f"Mediaflow emulator: file {file_id}, format {format_id}\n".encode()
    return header + noise.randbytes(2048 + noise.randrange(6144))


@functools.lru_cache(maxsize=4096)
def _original_size(file_id: int) -> int:
    return len(file_bytes(file_id, 0))


def checksum(file_id: int) -> str:
    return hashlib.md5(file_bytes(file_id, 0), usedforsecurity=False).hexdigest()


# Characters XML 1.0 does not allow even escaped; a name from a config file could hold them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def preview_svg(file: MediaFile, size: str) -> str:
    """A coloured rectangle (the colour from the id) with the file's name as text."""
    width = PREVIEW_SIZES[size]
    ratio = file.height / file.width if file.width and file.height else 1.414 if file.type.kind == "document" else 0.75
    height = max(1, round(width * ratio))
    font = max(10, width // 14)
    name = _NOT_XML.sub("", file.name)
    fits = max(4, int(width / (font * 0.6)))
    label = name if len(name) <= fits else name[:fits - 1] + "…"
    red, green, blue = colorsys.hls_to_rgb((file.id * 47) % 360 / 360, 0.42, 0.55)
    fill = f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">'
        f"<title>{escape(name)}</title>"
        f'<rect width="{width}" height="{height}" fill="{fill}"/>'
        f'<text x="{width // 2}" y="{height // 2}" font-family="sans-serif" font-size="{font}" fill="#fff" '
        f'text-anchor="middle" dominant-baseline="middle">{escape(label)}</text>'
        "</svg>"
    )


class DownloadExpired(Exception):
    """A signed download token whose time is up."""


class DownloadSigner:
    """Short-lived, URL-safe tokens naming (file, format), signed with a secret made when the emulator starts."""

    def __init__(self, lifetime: int = 60, clock: Callable[[], float] = time.time) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self._serializer = URLSafeSerializer(secrets.token_bytes(32), salt="mediaflow-emulator-download")

    def sign(self, file_id: int, format_id: int) -> str:
        return self._serializer.dumps([file_id, format_id, round(self.clock() + self.lifetime, 3)])

    def unsign(self, token: str) -> tuple[int, int]:
        """The (file, format) in a token; itsdangerous.BadSignature if tampered with, DownloadExpired if old."""
        file_id, format_id, expires_at = self._serializer.loads(token)
        if self.clock() >= expires_at:
            raise DownloadExpired(token)
        return int(file_id), int(format_id)


def default_library() -> Library:
    """Nested, private and archived folders; names that need escaping; every GDPR status; 26 photos in one folder."""
    folders = [
        Folder(1, "Marketing"),
        Folder(2, "Campaigns", parent=1),
        Folder(3, "Spring 2024", parent=2),
        Folder(4, "Social media", parent=3),
        Folder(5, "Höstkampanj 2023", parent=2),
        Folder(-3, "Brand assets", parent=1),
        Folder(6, "Photo library"),
        Folder(7, "Archive 2019", archived=True),
        Folder(8, "Video"),
        Folder(12, "Empty folder"),
        Folder(-5, "Demo's drafts", owner="demo"),
        Folder(9, "Ideas", parent=-5),
        Folder(11, "Erika's private files", owner="editor"),
    ]
    places = ("Gamla stan", "Södermalm", "Djurgården", "Kungsholmen", "Östermalm", "Vasastan")
    photos = [
        MediaFile(200 + n, f"{places[n % len(places)]} {n:02d}", f"stockholm-{n:02d}.{'png' if n % 5 == 0 else 'jpg'}",
                  6, uploaded=f"2023-{n % 12 + 1:02d}-{(n * 7) % 28 + 1:02d}T{8 + n % 10:02d}:15:00",
                  uploaded_by="Erika Editor" if n % 3 else "Demo User", width=4000 + 10 * n, height=3000,
                  photographer="Åsa Ström", description=f"Street view of {places[n % len(places)]}.",
                  alttext=f"Stockholm, {places[n % len(places)]}")
        for n in range(1, 27)
    ]
    files = [
        MediaFile(101, "Logo on white", "logo-white.png", -3, width=1200, height=400, alttext="Company logo"),
        MediaFile(-101, "Brand guide 2024", "Brand guide 2024.pdf", -3, uploaded="2024-02-01T10:00:00",
                  description="Colours, type and logo rules."),
        MediaFile(102, "<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>.jpg", 4, width=1080,
                  height=1080, description="<script>alert('description')</script>", alttext="<b>not bold</b>"),
        MediaFile(103, '"quotes" & ampersands', '"quotes" & ampersands.png', 4, width=800, height=600,
                  photographer="O'Brien & Søn"),
        MediaFile(104, "Midsommar på Åre", "Midsommar på Åre.jpg", 3, width=3000, height=2000,
                  gdpr_status="MISSING_CONSENT", photographer="Åsa Ström", description="Dancing round the pole."),
        MediaFile(105, "Öresundsbron i dimma", "öresundsbron-dimma.jpg", 5, width=3000, height=2000,
                  gdpr_status="INVALID_CONSENT"),
        MediaFile(106, "Café an der Straße", "café-straße.jpg", 5, width=2400, height=1600,
                  gdpr_status="AWAIT_CONSENT", description="Frühstück für zwei, Frédéric's café."),
        MediaFile(107, "Product shot (embargoed)", "product-shot.jpg", 3, width=2000, height=2000,
                  allow_download=False, allow_download_reason="Embargoed until the product launch."),
        MediaFile(108, "Licensed stock photo", "stock-4411.jpg", 1, width=5000, height=3333,
                  photographer="Stock agency", warn_from="2020-12-01",
                  license=License(rights_exists=True, rights_information="Stock agency, editorial use only.",
                                  license_information="Licence 4411", lock_file=False,
                                  download_warning="The licence ended on 2020-12-31.",
                                  use_from="2019-01-01", use_to="2020-12-31")),
        MediaFile(109, "Product launch film", "launch.mp4", 8, width=1920, height=1080, length=94,
                  description="The launch film, 1080p."),
        MediaFile(-102, "Drönare över Lofoten", "drone-lofoten.mp4", 8, width=3840, height=2160, length=31),
        MediaFile(110, "Catalogue 2019", "catalogue-2019.pdf", 7, uploaded="2019-03-04T08:00:00"),
        MediaFile(111, "Team photo 2019", "team-2019.jpg", 7, uploaded="2019-06-20T15:45:00", width=3000,
                  height=2000),
        MediaFile(112, "Draft poster", "draft poster.png", -5, width=1000, height=1414),
        MediaFile(113, "Idea sketch", "idea-sketch.jpg", 9, width=800, height=600),
        MediaFile(114, "Erika's notes", "notes.pdf", 11, uploaded_by="Erika Editor"),
    ]
    return Library(folders, files + photos)
