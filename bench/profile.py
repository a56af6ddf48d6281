"""`make profile`: where an authenticated request's time goes, in-process, timed and then by pyinstrument."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask
from pyinstrument import Profiler
from werkzeug.test import EnvironBuilder

from app import create_app
from bench import bare_app
from bench.run import SECRET, running_stack, sign_in


def timed(app: Flask, cookie: str | None, blocks: int = 9, size: int = 1000) -> float:
    """Microseconds per GET /session through the WSGI app itself, no server or test client: the best block."""
    headers = [("Cookie", cookie)] if cookie else []
    environ = EnvironBuilder(path="/session", headers=headers).get_environ()
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], object]:
        statuses.append(status)
        return lambda _: None

    best = float("inf")
    for _ in range(blocks):
        started = time.perf_counter()
        for _ in range(size):
            b"".join(app(dict(environ, **{"wsgi.input": io.BytesIO()}), start_response))
        best = min(best, (time.perf_counter() - started) / size * 1e6)
    assert set(statuses) == {"200 OK"}, set(statuses)
    return best


def main(requests_to_profile: int = 3000) -> None:
    with running_stack() as stack:
        print(f"\n=== bare route: {timed(bare_app.create_app(), None):.0f} µs per request, in-process ===")
        for backend in ("redis", "filesystem"):
            app = create_app({
                "SECRET_KEY": SECRET, "MEDIAFLOW_CLIENT_ID": "bench",
                "MEDIAFLOW_CLIENT_SECRET": "bench-secret-0123456789",
                "MEDIAFLOW_AUTHORIZE_URL": f"{stack.emulator}/authorize",
                "MEDIAFLOW_TOKEN_URL": f"{stack.emulator}/1/oauth2/token", "MEDIAFLOW_API_BASE": f"{stack.emulator}/1",
                "MEDIAFLOW_REDIRECT_URI": f"{stack.urls['redis-portal']}/callback", "SESSION_COOKIE_SECURE": False,
                "SESSION_BACKEND": backend, "REDIS_URL": stack.redis_url,
                "SESSION_FILE_DIR": str(Path(stack.work) / "profile"),
            })
            client = app.test_client()
            callback = urlsplit(sign_in(client.get("/login").headers["Location"]))
            client.get(f"{callback.path}?{callback.query}")
            cookie = client.get_cookie("mediaflow_portal")
            assert cookie is not None and client.get("/session").status_code == 200
            print(f"\n=== {backend} backend: {timed(app, f'mediaflow_portal={cookie.value}'):.0f} µs per request, "
                  "in-process; where it goes, by pyinstrument (through Flask's test client): ===")
            profiler = Profiler(interval=0.0005)
            with profiler:
                for _ in range(requests_to_profile):
                    client.get("/session")
            print(profiler.output_text(unicode=False, color=False, show_all=False, timeline=False)[:6000])
            requests.post(f"{stack.emulator}/_emulator/reset", timeout=5)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
