"""Local servers for `make run`, the benchmarks and the tests: a free port, and waiting until one answers."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable


class NotUp(RuntimeError):
    """A server stopped at start, or did not answer in time; the message says which."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on just now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, process: subprocess.Popen[bytes] | None = None, seconds: float = 20,
                  cafile: str | None = None) -> None:
    """Wait until url answers at all (any status); raise NotUp if its process dies or it stays silent.

    cafile: the certificate to trust for an https URL served with a certificate made for a test.
    """
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    _wait(url, process, seconds, lambda: urllib.request.urlopen(url, timeout=1, context=context).close())  # noqa: S310


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, seconds: float = 20) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    _wait(f"port {port}", process, seconds, lambda: socket.create_connection(("127.0.0.1", port), timeout=0.5).close())


def _wait(what: str, process: subprocess.Popen[bytes] | None, seconds: float, probe: Callable[[], None]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise NotUp(f"the server for {what} stopped at start (exit code {process.returncode})")
        try:
            probe()
            return
        except urllib.error.HTTPError:
            return  # it answered, with an error status: it is up
        except OSError:
            time.sleep(0.05)
    raise NotUp(f"nothing answered at {what} within {seconds:.0f} s")
