"""python -m emulator [--host 127.0.0.1] [--port 5001] [--config FILE] [--public-url URL]"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from . import create_app
from .config import ConfigError, default_config, load_config


class Server(BaseApplication):
    """gunicorn, in one process with threads: the emulator's state lives in that process's memory.

    Not Werkzeug's development server, which closes the connection after every answer: Mediaflow keeps
    its connections open, and a portal page timed against the emulator should not pay a connect per call.
    """

    def __init__(self, app: Flask, bind: str) -> None:
        self.application, self.bind = app, bind
        super().__init__()

    def load_config(self) -> None:
        # Only these: gunicorn's own config file and GUNICORN_CMD_ARGS belong to the portal, not to this;
        # nor does the control socket, one path per user that the portal's gunicorn would have to share.
        for name, value in {"bind": self.bind, "workers": 1, "worker_class": "gthread", "threads": 64,
                            "keepalive": 5, "graceful_timeout": 2, "loglevel": "warning",
                            "accesslog": None, "control_socket_disable": True}.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        return self.application


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator", description="Run the local Mediaflow emulator.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5001, help="port to listen on (default 5001)")
    parser.add_argument("--config", metavar="FILE", help="JSON file with clients and users")
    parser.add_argument("--public-url", metavar="URL",
                        help="the emulator as browsers reach it, for preview and download URLs (default: as asked)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else default_config()
    except ConfigError as error:
        print(f"emulator: {error}", file=sys.stderr)
        return 2
    # Tried here first: gunicorn would retry a port in use for five seconds, then stop with its own lines.
    try:
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((args.host, args.port))
    except OSError as error:
        print(f"emulator: cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 2
    print(f"Mediaflow emulator on http://{args.host}:{args.port} ({config.source}); "
          f"users: {', '.join(u.username for u in config.users)}", flush=True)
    host = f"[{args.host}]" if ":" in args.host else args.host
    Server(create_app(config, args.public_url), f"{host}:{args.port}").run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
