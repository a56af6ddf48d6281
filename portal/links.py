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


def link(endpoint: str, **values: Any) -> str:
    """url_for(endpoint, **values), where values are either one id (an int) alone or no ids at all."""
    kept: dict[tuple[Any, ...], str] = current_app.extensions["portal_links"]
    if len(values) == 1:
        [(name, value)] = values.items()
        if isinstance(value, int):
            head = kept.get((endpoint, request.script_root, name))
            if head is None:
                zero: dict[str, Any] = {name: 0}
                head = _keep(kept, (endpoint, request.script_root, name), url_for(endpoint, **zero))
                if not head.endswith("/0"):
                    raise ValueError(f"link() takes {endpoint}'s {name} only as the URL's last segment, not {head}")
            return f"{head[:-1]}{value}"
    key = (endpoint, request.script_root, *values.items())
    url = kept.get(key)
    if url is None:
        if any(name.startswith("_") for name in values):
            raise ValueError("link() builds the same path for every host and scheme: use url_for for _external")
        if any(isinstance(value, int) for value in values.values()):
            raise ValueError(f"link() takes an id for {endpoint} alone, as the URL's last segment: use url_for")
        url = _keep(kept, key, url_for(endpoint, **values))
    return url


def _keep(kept: dict[tuple[Any, ...], str], key: tuple[Any, ...], url: str) -> str:
    if len(kept) >= MAX_KEPT:
        kept.clear()
    kept[key] = url
    return url
