"""url_for for the links templates repeat on every page, built once instead of on every render.

url_for cost about as much as the rest of a file card, and a folder page has dozens of links: each
endpoint's URL is built once per app and script root and kept; an id, always the URL's last segment,
is put in after that. The frame, the home page and the library's loops use it; pages served rarely
(errors, the landing page) and links with a query or a page number use url_for.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, request, url_for

# More would mean script roots the portal does not have: start again rather than grow.
MAX_KEPT = 256


def init_app(app: Flask) -> None:
    app.extensions["portal_links"] = {}
    app.add_template_global(link)


def link(endpoint: str, **values: str | int) -> str:
    """url_for(endpoint, **values), at most one of them an id (an int)."""
    ids = [name for name, value in values.items() if isinstance(value, int)]
    if not ids:
        return _built(endpoint, values)
    [name] = ids
    head = _built(endpoint, {**values, name: 0})
    if not head.endswith("/0"):
        raise ValueError(f"link() takes {endpoint}'s {name} only as the URL's last segment, not as in {head}")
    return f"{head[:-1]}{values[name]}"


def _built(endpoint: str, values: dict[str, Any]) -> str:
    kept: dict[tuple[Any, ...], str] = current_app.extensions["portal_links"]
    key = (endpoint, request.script_root, *values.items())
    url = kept.get(key)
    if url is None:
        if len(kept) >= MAX_KEPT:
            kept.clear()
        url = kept[key] = url_for(endpoint, **values)
    return url
