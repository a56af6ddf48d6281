"""The portal's request class reads cookies the way Werkzeug does, from the one Cookie variable."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from portal.sessions import CookieRequest
from tests.support import portal_login


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


def test_the_session_cookie_is_found_among_other_cookies(client: Any) -> None:
    # In demo mode the emulator shares the host, so the browser sends its cookie to the portal too.
    portal_login(client)
    client.set_cookie("mediaflow_emulator", "x" * 40)
    client.set_cookie("theme", '"dark; blue"')
    page = client.get("/session")
    assert page.status_code == 200 and page.json["tokens"]["refresh_token_held"] is True
    assert "; " in page.request.headers["Cookie"]  # all three went in one Cookie header
