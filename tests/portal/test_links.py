"""links.link: the same URL as url_for, whatever the id, the script root or the endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, url_for

from portal.links import link

CASES = [
    ("pages.index", {}),
    ("library.search", {}),
    ("static", {"filename": "portal.css"}),
    ("library.file", {"file_id": 7}),
    ("library.file", {"file_id": -42}),
    ("library.file", {"file_id": 2**63 - 1}),
    ("library.folder", {"folder_id": 0}),
    ("library.folder", {"folder_id": -(2**63)}),
]


@pytest.mark.parametrize("script_root", ["", "/portal"])
@pytest.mark.parametrize(("endpoint", "values"), CASES)
def test_link_is_url_for(make_app: Callable[..., Flask], script_root: str, endpoint: str,
                         values: dict[str, Any]) -> None:
    app = make_app()
    with app.test_request_context("/", environ_overrides={"SCRIPT_NAME": script_root}):
        assert link(endpoint, **values) == url_for(endpoint, **values)
        assert link(endpoint, **values) == url_for(endpoint, **values)  # from what it kept


@pytest.mark.parametrize(("endpoint", "values", "message"), [
    ("library.download", {"file_id": 1, "format": "2"}, "last segment"),  # an id with a query
    ("library.download", {"file_id": 1}, "last segment"),  # an id that is not the last segment
    ("pages.index", {"_external": True}, "_external"),  # one host's URL kept for every host
])
def test_what_it_cannot_keep_is_refused(make_app: Callable[..., Flask], endpoint: str, values: dict[str, Any],
                                        message: str) -> None:
    app = make_app()
    with app.test_request_context("/"), pytest.raises(ValueError, match=message):
        link(endpoint, **values)


def test_one_app_under_two_script_roots_keeps_each_apart(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    for root in ["", "/portal", "", "/other"]:
        with app.test_request_context("/", environ_overrides={"SCRIPT_NAME": root}):
            assert link("library.file", file_id=3) == f"{root}/files/3"
            assert link("pages.index") == f"{root}/"
