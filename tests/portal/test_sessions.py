"""The portal's request class reads cookies the way Werkzeug does, from the one Cookie variable."""

from __future__ import annotations

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from portal.sessions import CookieRequest


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "mediaflow_portal=abc",
        "mediaflow_portal=abc; theme=dark",
        'a="quoted value"; b=2',
        "a=1; a=2",
        "junk; mediaflow_portal=abc;;",
        "x=%E2%9C%93; mediaflow_portal=",
    ],
    ids=["absent", "empty", "one", "two", "quoted", "repeated", "junk", "encoded-and-empty"],
)
def test_cookies_are_read_as_werkzeug_reads_them(header: str | None) -> None:
    environ = EnvironBuilder(headers={"Cookie": header} if header is not None else {}).get_environ()
    expected = Request(environ).cookies
    got = CookieRequest(environ).cookies
    assert list(got.items(multi=True)) == list(expected.items(multi=True))
    assert type(got) is type(expected)
