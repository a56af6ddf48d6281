"""gunicorn settings for the portal; each can be changed through the environment."""

import logging
import os

from portal.logs import redact_logger

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5

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
