"""python -m emulator [--host 127.0.0.1] [--port 5001] [--config FILE] [--public-url URL]"""

from __future__ import annotations

import argparse
import sys

from werkzeug.serving import WSGIRequestHandler, run_simple

from . import create_app
from .config import ConfigError, default_config, load_config


class KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1, so a client's connection stays open between calls, as Mediaflow's does."""

    protocol_version = "HTTP/1.1"


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
    print(f"Mediaflow emulator on http://{args.host}:{args.port} ({config.source}); "
          f"users: {', '.join(u.username for u in config.users)}", flush=True)
    try:
        run_simple(args.host, args.port, create_app(config, args.public_url), threaded=True,
                   request_handler=KeepAliveHandler)
    except OSError as error:
        print(f"emulator: cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
