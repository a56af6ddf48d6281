"""`make bench` (last part): 3,000 /login from one browser cookie, on both session backends.

A session keeps at most three pending logins, so the record and the time of a /login must not grow
with the count. Measured in-process (Flask's test client; /login does not call Mediaflow), so the
figure is the portal's own work. See docs/BENCHMARKS.md.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from app import create_app
from bench.run import SECRET
from scripts.servers import free_port, wait_for_port

LOGINS, WINDOW = 3000, 200


def flood(backend: str, folder: Path, redis_url: str) -> tuple[float, float, int]:
    """Median µs of the first and the last WINDOW logins, and the record's size in bytes at the end."""
    app = create_app({
        "SECRET_KEY": SECRET, "MEDIAFLOW_CLIENT_ID": "bench", "MEDIAFLOW_CLIENT_SECRET": "bench-secret",
        "MEDIAFLOW_AUTHORIZE_URL": "http://127.0.0.1:9/authorize", "MEDIAFLOW_TOKEN_URL": "http://127.0.0.1:9/token",
        "MEDIAFLOW_API_BASE": "http://127.0.0.1:9/1", "SESSION_COOKIE_SECURE": False, "SESSION_BACKEND": backend,
        "SESSION_FILE_DIR": str(folder / backend), "REDIS_URL": redis_url,
    })
    client = app.test_client()
    times = []
    for _ in range(LOGINS):
        started = time.perf_counter()
        client.get("/login")
        times.append((time.perf_counter() - started) * 1e6)
    cookie = client.get_cookie("mediaflow_portal")
    assert cookie is not None
    sid = cookie.value
    if backend == "redis":
        size = int(app.config["SESSION_REDIS"].strlen(f"mediaflow:session:{sid}"))
    else:
        size = max(path.stat().st_size for path in (folder / backend / "sessions").iterdir())
    return statistics.median(times[:WINDOW]), statistics.median(times[-WINDOW:]), size


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL)
        try:
            wait_for_port(port, redis)
            print(f"\n{LOGINS:,} /login from one cookie (median of the first and last {WINDOW})")
            print(f"{'backend':<12}{'first':>10}{'last':>10}{'last/first':>12}{'record':>10}")
            for backend in ("filesystem", "redis"):
                first, last, size = flood(backend, Path(work), f"redis://127.0.0.1:{port}/0")
                print(f"{backend:<12}{first:>8.0f}µs{last:>8.0f}µs{last / first:>12.2f}{size:>8} B")
        finally:
            redis.terminate()
            redis.wait()


if __name__ == "__main__":
    main()
