"""url_for for the links templates repeat on every page, built once instead of on every render.

url_for cost about as much as the rest of a file card, and a folder page has dozens of links: each
endpoint's URL is built once per script root and kept; an id, always the URL's last segment, is put
in after that. The frame, the home page and the library's loops use it; pages served rarely (errors,
the landing page) and links with a query or a page number use url_for.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from flask import Flask, request, url_for


def init_app(app: Flask) -> None:
    app.add_template_global(link)


def link(endpoint: str, **values: str | int) -> str:
    """url_for(endpoint, **values), at most one of them an id (an int)."""
    ids = [name for name, value in values.items() if isinstance(value, int)]
    if not ids:
        return _built(endpoint, request.script_root, tuple(values.items()))
    [name] = ids
    head = _built(endpoint, request.script_root, tuple((k, 0 if k == name else v) for k, v in values.items()))
    if not head.endswith("/0"):
        raise ValueError(f"link() takes {endpoint}'s {name} only as the URL's last segment, not as in {head}")
    return f"{head[:-1]}{values[name]}"


@lru_cache(maxsize=256)
def _built(endpoint: str, script_root: str, values: tuple[tuple[str, str | int], ...]) -> str:
    arguments: dict[str, Any] = dict(values)
    return url_for(endpoint, **arguments)
