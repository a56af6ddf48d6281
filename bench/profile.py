"""`make profile`: where an authenticated request's time goes, by pyinstrument, in-process."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
from pyinstrument import Profiler

from app import create_app
from bench.run import SECRET, running_stack, sign_in


def main(requests_to_profile: int = 3000) -> None:
    with running_stack() as stack:
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
            assert client.get("/session").status_code == 200
            profiler = Profiler(interval=0.0005)
            started = time.perf_counter()
            with profiler:
                for _ in range(requests_to_profile):
                    client.get("/session")
            elapsed = (time.perf_counter() - started) / requests_to_profile * 1000
            print(f"\n=== {backend} backend: {elapsed:.3f} ms per request in-process ===")
            print(profiler.output_text(unicode=False, color=False, show_all=False, timeline=False)[:6000])
            requests.post(f"{stack.emulator}/_emulator/reset", timeout=5)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
