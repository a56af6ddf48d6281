"""`make run`: serve the portal on 127.0.0.1:5000, with the emulator when no client id is set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from dotenv import load_dotenv

from scripts.servers import NotUp, wait_for_http

ROOT = Path(__file__).resolve().parent.parent


def wait_until_up(url: str, process: subprocess.Popen[bytes], seconds: float = 15) -> None:
    """Wait until url answers; stop with one line if its process dies or it stays silent."""
    try:
        wait_for_http(url, process, seconds)
    except NotUp as error:
        sys.exit(f"{str(error).capitalize()}; see the lines above.")


def stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl-C and SIGTERM stop both servers, even when started from a shell that ignored SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    load_dotenv(ROOT / ".env")
    python = sys.executable
    emulator = None
    if not os.environ.get("MEDIAFLOW_CLIENT_ID"):
        url = os.environ.get("MEDIAFLOW_EMULATOR_URL", "http://127.0.0.1:5001").rstrip("/")
        port = url.rsplit(":", 1)[-1]
        print(f"Demo mode: no MEDIAFLOW_CLIENT_ID is set, so the local Mediaflow emulator runs on {url}.")
        print("Sign in there as demo / demo. Set MEDIAFLOW_CLIENT_ID in .env to use the real Mediaflow.")
        emulator = subprocess.Popen([python, "-m", "emulator", "--port", port], cwd=ROOT)
        wait_until_up(f"{url}/_emulator/stats", emulator)
    print("Mediaflow Portal on http://127.0.0.1:5000 — press Ctrl-C to stop.", flush=True)
    portal = subprocess.Popen([python, "-m", "flask", "--app", "app", "run", "--host", "127.0.0.1", "--port", "5000"],
                              cwd=ROOT)
    try:
        return portal.wait()
    except KeyboardInterrupt:
        print("\nStopping.", flush=True)
        return 0
    finally:
        for child in (portal, emulator):
            if child is not None and child.poll() is None:
                child.terminate()
                child.wait()


if __name__ == "__main__":
    sys.exit(main())
