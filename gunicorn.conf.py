"""gunicorn settings for the portal; each can be changed through the environment."""

import contextlib
import logging
import logging.config
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import NoReturn

# Metrics summed over the workers (prometheus_client's multiprocess mode, portal/metrics.py): each worker
# keeps its numbers in files in this folder, which outlive it. Set before anything imports prometheus_client.
# A folder made here is removed at exit (on_exit); remembered in the environment, as a HUP reads this file again.
# MEDIAFLOW_PORTAL_MADE_METRICS_FOLDER is this file's own note, not a setting.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mediaflow-portal-metrics-")
    os.environ["MEDIAFLOW_PORTAL_MADE_METRICS_FOLDER"] = os.environ["PROMETHEUS_MULTIPROC_DIR"]

# gunicorn reads this file before it changes directory: make the portal importable from anywhere.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from prometheus_client import multiprocess

from portal.config import (
    DEFAULTS,
    ConfigError,
    check_bind,
    check_metrics_port,
    check_workers,
    configure,
    settings_from_env,
)
from portal.logs import gunicorn_logging
from portal.metrics import serve_from_master
from portal.redis_target import check_at_start


def say(level: int, message: str) -> None:
    """A line of this file's own (a refusal, a warning at start) in LOG_FORMAT, through gunicorn's error log."""
    log = logging.getLogger("gunicorn.error")
    if not log.handlers:
        # A setting that cannot be read stops the start before gunicorn sets up its logging (logconfig_dict).
        # LOG_FORMAT then as settings_from_env reads it: it has loaded .env into the environment by then.
        logging.config.dictConfig(gunicorn_logging(os.environ.get("LOG_FORMAT") == "json"))
    log.log(level, message)


def refuse(server, message: str) -> NoReturn:  # type: ignore[no-untyped-def]
    """Stop gunicorn from one of its hooks with one line, as its own shutdown does: exit status 2.

    Arbiter.halt, gunicorn's own way out of its main loop (not among its documented settings), removes
    the pidfile and the listening sockets and runs on_exit; sys.exit from a hook would leave them behind.
    """
    say(logging.ERROR, f"Mediaflow Portal cannot start: {message}")
    server.halt(exit_status=2)
    sys.exit(2)  # not reached (halt exits): for the type checker


try:
    settings = DEFAULTS | settings_from_env()
except ConfigError as error:
    # Read before gunicorn starts its master: no pidfile or socket to clean up yet, only the metrics folder.
    say(logging.ERROR, f"Mediaflow Portal cannot start: {error}")
    # The metrics folder in use, only if this file made it: not whatever else the note might name.
    if os.environ["PROMETHEUS_MULTIPROC_DIR"] == os.environ.get("MEDIAFLOW_PORTAL_MADE_METRICS_FOLDER"):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    sys.exit(2)

bind = settings["GUNICORN_BIND"]
# gunicorn's control socket (gunicornc) has one path per user: two replicas on a host would take it from
# each other, and a command meant for one could reach the other.
control_socket_disable = True
workers = settings["GUNICORN_WORKERS"]
threads = settings["GUNICORN_THREADS"]
timeout = settings["GUNICORN_TIMEOUT"]
graceful_timeout = settings["GUNICORN_GRACEFUL_TIMEOUT"]
keepalive = 5

# TLS at gunicorn, for a deployment without a TLS-terminating proxy in front; both files or neither.
certfile = settings["GUNICORN_CERTFILE"]
keyfile = settings["GUNICORN_KEYFILE"]

# The error log goes to stderr, the access log to stdout; both through the portal's redacting filter, as JSON
# lines with LOG_FORMAT=json (portal/logs.py). The access log shows the path without its query string: a
# callback's query holds the authorization code and state.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s'
logconfig_dict = gunicorn_logging(settings["LOG_FORMAT"] == "json",
                                  (settings["MEDIAFLOW_CLIENT_SECRET"] or "", settings["SECRET_KEY"] or ""))

# After a USR2 upgrade, the new master binds the metrics port once the old one has let it go: it tries after 1 s,
# then twice as long each time, at most every 10 s.
RETRY_FIRST_SECONDS = 1.0
RETRY_LONGEST_SECONDS = 10.0

# Forwarded headers are the app's business (ProxyFix with TRUSTED_PROXY_COUNT), not gunicorn's.
forwarded_allow_ips = ""


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    # The worker's counts stay in its files and keep counting in /metrics; only its live gauges go.
    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    # A quick stop (the master's SIGQUIT to each worker, on Ctrl-C, SIGINT or SIGQUIT; a terminal's Ctrl-C also
    # reaches each worker as SIGINT) runs gunicorn's gthread handler, which shuts the thread pool down and raises
    # SystemExit inside the signal handler. Landing while the worker's main thread is inside the pool (taking a
    # connection), it can leave a lock held that the pool or its threads then wait for (CPython #121649): the
    # worker hangs until the master kills it after the graceful timeout, logging "Perhaps out of memory?". A
    # worker stops as on SIGTERM instead: it stops accepting, finishes its requests (a refresh cut off after
    # Mediaflow rotated the token would end the session), and exits from its own loop. Only a stop asked for
    # again leaves at once: a second Ctrl-C, or the master's SIGQUIT, which it sends only then (on_starting).
    # Counted by signal, not by order: Python runs the handlers of signals pending together by number, QUIT first.
    interrupts = 0

    def stop(signum, frame):  # type: ignore[no-untyped-def]
        nonlocal interrupts
        interrupts += signum == signal.SIGINT
        if signum == signal.SIGQUIT or interrupts > 1:
            for stream in (sys.stdout, sys.stderr):  # os._exit skips the flush at exit
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(0)
        worker.handle_exit(signum, frame)

    for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(signum, stop)


def empty_metrics_folder(folder: str) -> None:
    """Start counting from zero: the files of an earlier run in this folder would be added to this one's."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.unlink(os.path.join(folder, name))


def on_starting(server):  # type: ignore[no-untyped-def]
    # SIGINT and SIGQUIT to the master (Ctrl-C; `docker kill -s INT`; `docker run` without -t) start the same stop
    # as SIGTERM, so that asking again is heard: gunicorn's graceful stop turns a second SIGINT or SIGQUIT into
    # its quick one, whose SIGQUIT makes each worker leave at once (post_worker_init). gunicorn's own quick stop
    # listens for nothing more, and would SIGQUIT a worker that SIGTTOU had stopped and that holds requests.
    server.handle_int = server.handle_quit = server.handle_term
    # Checked here, before gunicorn opens its sockets: a setting the app would refuse makes every worker
    # exit at boot, and gunicorn would boot them again and again instead of stopping with one line.
    config = dict(settings)
    try:
        configure(config, os.path.join(os.path.dirname(os.path.abspath(__file__)), "instance"))
        check_workers(server.cfg.workers)
        check_bind(server.cfg.bind)
        check_metrics_port(config["METRICS_PORT"], server.cfg.bind)
        # gunicorn itself would accept a certfile alone (key inside) or fail later on a keyfile alone.
        if bool(certfile) != bool(keyfile):
            raise ConfigError("GUNICORN_CERTFILE and GUNICORN_KEYFILE go together: set both to serve https, "
                              "or neither")
    except ConfigError as error:
        refuse(server, str(error))
    empty_metrics_folder(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    # Not a refusal: Redis may come up after the portal. A wrong CA or Sentinel name is named here, once.
    problem = check_at_start(config)
    if problem:
        say(logging.WARNING, f"Mediaflow Portal: the session store does not answer at start ({problem}); pages "
                             "answer 503 and /readyz says why until it does")


def when_ready(server):  # type: ignore[no-untyped-def]
    # Here, once gunicorn listens and before it forks a worker: the workers inherit the socket, but never accept.
    port, host = settings["METRICS_PORT"], settings["METRICS_BIND_HOST"]
    if not port:
        return
    try:
        serve_from_master(host, port)
    except OSError as error:
        # master_pid is set in a master that USR2 started beside the old one (reexec_pid, in on_exit, is set in the
        # old one once it started a new one): Arbiter attributes that gunicorn does not document.
        if server.master_pid:
            # The old master keeps the port until it stops: serve it from here as soon as it is free.
            server.log.error("The metrics port %s:%s is taken (%s), by the master this one replaces: served from "
                             "here once that one stops", host, port, error.strerror)
            serve_metrics_when_free(server, host, port)
            return
        refuse(server, f"METRICS_PORT={port} on METRICS_BIND_HOST={host}: {error.strerror}")
    server.log.info("Metrics of every worker at http://%s:%s/metrics", f"[{host}]" if ":" in host else host, port)


def serve_metrics_when_free(server, host: str, port: int) -> None:  # type: ignore[no-untyped-def]
    """Try the metrics port again in a thread until it is free: after RETRY_FIRST_SECONDS, then twice as long each
    time, at most RETRY_LONGEST_SECONDS apart."""
    def retry() -> None:
        wait = RETRY_FIRST_SECONDS
        while True:
            time.sleep(wait)
            try:
                serve_from_master(host, port)
            except OSError:
                wait = min(wait * 2, RETRY_LONGEST_SECONDS)
                continue
            server.log.info("Metrics of every worker at http://%s:%s/metrics", f"[{host}]" if ":" in host else host,
                            port)
            return

    threading.Thread(target=retry, name="metrics-port", daemon=True).start()


def on_exit(server):  # type: ignore[no-untyped-def]
    # Not one that a new master started by USR2 counts in (reexec_pid: see when_ready).
    if not server.reexec_pid:
        remove_metrics_folder()


def remove_metrics_folder() -> None:
    """Remove the metrics folder if this file made it (on_exit): never one the operator named."""
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    if folder == os.environ.get("MEDIAFLOW_PORTAL_MADE_METRICS_FOLDER"):
        shutil.rmtree(folder, ignore_errors=True)
