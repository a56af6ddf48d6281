"""gunicorn settings for the portal; each can be changed through the environment."""

import logging
import os
import sys

# gunicorn reads this file before it changes directory: make the portal importable from anywhere.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from portal.config import ConfigError, check_bind, check_workers
from portal.logs import redact_logger

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5

# TLS at gunicorn, for a deployment without a TLS-terminating proxy in front; both files or neither.
certfile = os.environ.get("GUNICORN_CERTFILE") or None
keyfile = os.environ.get("GUNICORN_KEYFILE") or None

# Logs go to stdout. The access log shows the path without its query string: a callback's
# query holds the authorization code and state.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s'

# Forwarded headers are the app's business (ProxyFix with TRUSTED_PROXY_COUNT), not gunicorn's.
forwarded_allow_ips = ""


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    for name in ("gunicorn.error", "gunicorn.access"):
        redact_logger(logging.getLogger(name))


def on_starting(server):  # type: ignore[no-untyped-def]
    # Checked here, where the worker count and the bind addresses are known, before gunicorn opens its
    # sockets; the app checks everything else itself.
    try:
        check_workers(server.cfg.workers)
        check_bind(server.cfg.bind)
        # gunicorn itself would accept a certfile alone (key inside) or fail later on a keyfile alone.
        if bool(certfile) != bool(keyfile):
            raise ConfigError("GUNICORN_CERTFILE and GUNICORN_KEYFILE go together: set both to serve https, "
                              "or neither")
    except ConfigError as error:
        print(f"Mediaflow Portal cannot start: {error}", file=sys.stderr)
        sys.exit(2)
