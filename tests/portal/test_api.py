"""portal/api.py's connection to Mediaflow: the environment's proxy settings, read once, as requests reads them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import requests
from flask import Flask

from tests.support import Emulator, portal_login


class RecordingProxy(BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy that notes each URL and Proxy-Authorization it is asked for."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        self.forward()

    def do_POST(self) -> None:
        self.forward()

    def forward(self) -> None:
        self.seen.append((self.path, self.headers.get("Proxy-Authorization")))
        forwarded = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-authorization", "host")}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        direct = requests.Session()
        direct.trust_env = False  # the proxy itself goes straight to the emulator
        answer = direct.request(self.command, self.path, headers=forwarded, data=body, timeout=10,
                                allow_redirects=False)
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingProxy)
    RecordingProxy.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("environment", "through_proxy", "authorization"), [
    ({"HTTP_PROXY": "http://{proxy}"}, True, None),
    ({"HTTP_PROXY": "http://agent:s3cret@{proxy}"}, True, "Basic YWdlbnQ6czNjcmV0"),
    ({"ALL_PROXY": "http://{proxy}"}, True, None),
    ({"HTTP_PROXY": "http://{proxy}", "NO_PROXY": "127.0.0.1"}, False, None),
    ({}, False, None),
])
def test_api_calls_take_the_proxy_the_environment_names(
    make_app: Callable[..., Flask], emulator: Emulator, proxy: str, monkeypatch: pytest.MonkeyPatch,
    environment: dict[str, str], through_proxy: bool, authorization: str | None,
) -> None:
    names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value.format(proxy=proxy))
    client = make_app().test_client()
    # Read once, at start: the API calls below still take the proxy with the environment emptied.
    for name in names:
        monkeypatch.delenv(name, raising=False)
    portal_login(client)
    assert client.get("/library").status_code == 200
    tree_calls = [(url, auth) for url, auth in RecordingProxy.seen if url.startswith(f"{emulator.url}/1/foldertree")]
    assert tree_calls == ([(tree_calls[0][0], authorization)] if through_proxy else [])
