"""`make soak`: the portal as a company runs it, for a long while, watched for errors, lost sessions and growth.

Two replicas of the portal under gunicorn (2 workers each) on one Redis, and the emulator with a
client whose tokens live 30 s and rotate (a second refresh of one token would be reuse, and end the
session). People log in, then each comes back every few seconds, to either replica in turn, for a
steady rate in all: their home page, /session and the library's folder tree. Everything listens on
127.0.0.1 only. The report: requests served, errors, sessions kept, refreshes per token renewal
(exactly one is the target: the emulator's refresh grants against the renewals the sessions saw),
p50 and p99 latency, and each worker's resident memory at the start and the end. SIGTERM, SIGHUP or SIGINT
(Ctrl-C) stops the load and every server it started, and exits with 128 + the signal's number.

    python -m bench.soak [--seconds 600] [--sessions 200] [--rate SESSIONS/4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.run import SECRET, log_in, workers_of
from scripts.servers import NotUp, free_port, wait_for_http, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REPLICAS, WORKERS, THREADS = 2, "2", "4"
TOKEN_SECONDS = 30
# A worker whose resident memory grows this much over the run is reported as a missed target.
MAX_GROWTH = 0.10
CLIENT_SECRET = "soak-secret-0123456789"
# Bounds, so a typo cannot start an hour-long run or a flood: the soak is loopback only.
LIMITS = {"seconds": (10, 3600), "sessions": (1, 1000), "rate": (1.0, 500.0)}
# What each visit asks for, in turn: every other one /session, whose answer shows the token's last refresh.
PAGES = ("/session", "/", "/session", "/library")
LOAD_THREADS = 16
# SIGHUP too: a closed terminal or a dropped ssh session must not leave the servers running.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stopped(BaseException):
    """A stop signal arrived: unwinds the soak, so that every server it started is stopped on the way out.

    A BaseException, as KeyboardInterrupt is: an `except Exception` on the way must not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_on_signals() -> None:
    """Turn SIGTERM, SIGINT and SIGHUP into Stopped: their default would end this process at once, its servers left."""
    def raise_stopped(signum: int, frame: object) -> None:
        # From here on they wait: a second signal must not cut short the stopping of the servers.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        raise Stopped(signum)

    for number in STOP_SIGNALS:
        # Left ignored when ignored: `nohup make soak` asks for a soak that outlives the terminal.
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, raise_stopped)


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT wait while the block runs (in this thread, and in the threads it starts), then arrive."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def let_signals_through() -> None:
    """In a child before it runs its program: it inherits the held signals, and must stop on SIGTERM."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def spawn(children: list[subprocess.Popen[bytes]], command: list[str], cwd: Path, log: Path | None = None,
          **env: str) -> subprocess.Popen[bytes]:
    """Start a server and put it on children, the stop signals held meanwhile: one that arrives as it starts
    raises Stopped once the server is on the list, so that it is stopped with the others."""
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("MEDIAFLOW_", "SESSION_", "REDIS_", "GUNICORN_", "LOG_", "PROMETHEUS_",
                                                 "METRICS_", "ALLOWED_", "GATE_", "TRUSTED_", "LIBRARY_"))}
    environment.update(PYTHONPATH=str(ROOT), **env)
    with signals_held(), log.open("wb") if log else open(os.devnull, "wb") as out:
        # preexec_fn, which is unsafe beside other threads: the servers start before the load threads do.
        child = subprocess.Popen(command, cwd=cwd, env=environment, stdout=out, stderr=subprocess.STDOUT,
                                 preexec_fn=let_signals_through)
        children.append(child)
    return child


def stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    """Stop every child: SIGTERM, then SIGKILL after gunicorn's graceful stop (30 s at most)."""
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=40)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@dataclass
class Stack:
    emulator: str
    portals: list[str]
    masters: list[int]
    logs: list[Path]


@contextmanager
def running_stack(work: Path) -> Iterator[Stack]:
    """Redis, the emulator and two portal replicas, on loopback; stopped afterwards."""
    if not shutil.which("redis-server"):
        sys.exit("soak: redis-server is missing (apt-get install redis-server)")
    redis_port, emulator_port = free_port(), free_port()
    portal_ports = [free_port() for _ in range(REPLICAS)]
    emulator = f"http://127.0.0.1:{emulator_port}"
    (work / "emulator.json").write_text(json.dumps({"clients": [{
        "id": "soak", "secret": CLIENT_SECRET, "expires_in": TOKEN_SECONDS, "rotate_refresh_tokens": True,
        "redirect_uris": [f"http://127.0.0.1:{port}/callback" for port in portal_ports]}]}))
    children: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        redis = spawn(children, ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(work)], work)
        wait_for_port(redis_port, redis)
        child = spawn(children, [sys.executable, "-m", "emulator", "--port", str(emulator_port),
                                 "--config", str(work / "emulator.json")], work)
        wait_for_http(f"{emulator}/_emulator/stats", child)
        masters = []
        for port in portal_ports:
            log = work / f"portal-{port}.log"
            child = spawn(children, [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "app:create_app()"],
                          work, log, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS=WORKERS,
                          GUNICORN_THREADS=THREADS, SESSION_BACKEND="redis",
                          REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", MEDIAFLOW_CLIENT_ID="soak",
                          MEDIAFLOW_CLIENT_SECRET=CLIENT_SECRET, SECRET_KEY=SECRET,
                          MEDIAFLOW_AUTHORIZE_URL=f"{emulator}/authorize",
                          MEDIAFLOW_TOKEN_URL=f"{emulator}/1/oauth2/token", MEDIAFLOW_API_BASE=f"{emulator}/1",
                          MEDIAFLOW_REDIRECT_URI=f"http://127.0.0.1:{port}/callback", SESSION_COOKIE_SECURE="false")
            wait_for_http(f"http://127.0.0.1:{port}/healthz", child)
            masters.append(child.pid)
            logs.append(log)
        yield Stack(emulator, [f"http://127.0.0.1:{port}" for port in portal_ports], masters, logs)
    except NotUp as error:
        sys.exit(f"soak: {error}")
    finally:
        try:
            # Held from here to the end: a second Ctrl-C would leave the rest running. (A signal that came just
            # before raises here, and the inner finally still stops them.)
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        finally:
            stop_children(children)


def rss_kib(pid: int) -> int:
    """A process's resident memory, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class Person:
    cookie: str
    # The distinct times /session said the token set was last refreshed: one per renewal.
    refreshed: set[float] = field(default_factory=set)
    visits: int = 0


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    by_page: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    late: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def visit(browser: requests.Session, stack: Stack, person: Person, tally: Tally) -> None:
    page = PAGES[person.visits % len(PAGES)]
    portal = stack.portals[person.visits % len(stack.portals)]
    person.visits += 1
    started = time.perf_counter()
    try:
        answer = browser.get(portal + page, headers={"Cookie": f"mediaflow_portal={person.cookie}"},
                             allow_redirects=False, timeout=30)
        status = str(answer.status_code)
    except requests.RequestException as error:
        answer, status = None, error.__class__.__name__
    elapsed = (time.perf_counter() - started) * 1000
    with tally.lock:
        tally.latencies_ms.append(elapsed)
        tally.by_page.setdefault(page, []).append(elapsed)
        if status != "200":
            tally.errors[f"{page} {status}"] += 1
    if answer is not None and status == "200" and page == "/session":
        refreshed = answer.json()["tokens"]["last_refreshed"]
        if refreshed is not None:
            person.refreshed.add(refreshed)


def steady_load(stack: Stack, people: list[Person], rate: float, until: float, tally: Tally) -> None:
    """Each person comes back every len(people)/rate seconds, their visits spread evenly over that period."""
    period = len(people) / rate
    start = time.monotonic()
    # Set when the soak is stopped early: the threads end after their current visit, not at `until`.
    stopping = threading.Event()

    def run(mine: list[tuple[int, Person]]) -> None:
        browser = requests.Session()  # one keep-alive connection per replica and thread; cookies sent by hand
        schedule = sorted((start + index * period / len(people), index, person) for index, person in mine)
        while schedule and not stopping.is_set():
            due, index, person = schedule.pop(0)
            if due >= until:
                continue
            wait = due - time.monotonic()
            if wait > 0:
                if stopping.wait(wait):
                    break
            elif wait < -1:
                with tally.lock:
                    tally.late += 1
            visit(browser, stack, person, tally)
            schedule.append((due + period, index, person))
            schedule.sort(key=lambda item: item[0])
        browser.close()

    threads = [threading.Thread(target=run, args=(list(enumerate(people))[number::LOAD_THREADS],))
               for number in range(LOAD_THREADS)]
    try:
        # Started with the stop signals held, which they keep: a signal goes to the main thread, and while that one
        # holds them (stopping the servers), nowhere.
        with signals_held():
            for thread in threads:
                thread.start()
        for thread in threads:
            thread.join()
    finally:
        stopping.set()


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(share * 1000) - 1]


def bounded(name: str, value: float) -> float:
    low, high = LIMITS[name]
    if not low <= value <= high:
        sys.exit(f"soak: --{name} must be between {low:g} and {high:g}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=600, help="how long the steady load runs (default 600)")
    parser.add_argument("--sessions", type=int, default=200, help="people logged in (default 200)")
    parser.add_argument("--rate", type=float, help="requests per second in all (default: sessions / 4)")
    args = parser.parse_args(argv)
    seconds = int(bounded("seconds", args.seconds))
    sessions = int(bounded("sessions", args.sessions))
    # At least one request a second in all, however few the sessions.
    rate = bounded("rate", args.rate or max(sessions / 4, 1.0))
    stop_on_signals()
    work = Path(tempfile.mkdtemp(prefix="portal-soak-"))
    try:
        with running_stack(work) as stack:
            missed = report(stack, seconds, sessions, rate)
    except Stopped as stopped:
        print(f"\nsoak: stopped by {stopped}; every server it started is stopped", flush=True)
        sys.exit(128 + stopped.signum)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if missed:
        sys.exit(f"\nsoak: missed: {', '.join(missed)}")
    print("\nsoak: every target met")


def report(stack: Stack, seconds: int, sessions: int, rate: float) -> list[str]:
    """Run the soak and print its report; return the targets it missed."""
    print(f"soak: {sessions} sessions, {REPLICAS} replicas of {WORKERS} workers ({THREADS} threads), tokens of "
          f"{TOKEN_SECONDS} s that rotate, {rate:g} requests/s for {seconds} s", flush=True)
    people = []
    for number in range(sessions):
        browser = log_in(stack.portals[number % REPLICAS])
        people.append(Person(browser.cookies["mediaflow_portal"]))
        browser.close()
    # One round of visits, so every worker has started its connections and caches: the start's memory.
    warm = Tally()
    steady_load(stack, people, rate, time.monotonic() + sessions / rate, warm)
    workers = {pid: master for master in stack.masters for pid in workers_of(master)}
    rss_start = {pid: rss_kib(pid) for pid in workers}
    requests.post(f"{stack.emulator}/_emulator/reset", timeout=5).raise_for_status()
    renewals_before = sum(len(person.refreshed) for person in people)

    tally = Tally()
    started = time.monotonic()
    steady_load(stack, people, rate, started + seconds, tally)
    elapsed = time.monotonic() - started
    # Each person's last look, which also shows a renewal the load's last visits made.
    final = Tally()
    with requests.Session() as browser:
        for person in people:
            person.visits = 0  # /session, on the first replica
            visit(browser, stack, person, final)
    kept = sessions - sum(final.errors.values())
    rss_end = {pid: rss_kib(pid) for pid in workers if Path(f"/proc/{pid}").exists()}
    stats = requests.get(f"{stack.emulator}/_emulator/stats", timeout=5).json()
    grants = stats["token"].get("refresh_token", {})
    renewals = sum(len(person.refreshed) for person in people) - renewals_before
    log_errors = sum(1 for log in stack.logs for line in log.read_text(errors="replace").splitlines()
                     if "ERROR" in line or "Traceback" in line)

    served = len(tally.latencies_ms)
    print(f"\nsteady load: {served} requests in {elapsed:.0f} s ({served / elapsed:.1f}/s), "
          f"{sum(tally.errors.values())} errors{f' {dict(tally.errors)}' if tally.errors else ''}, "
          f"{tally.late} sent over 1 s late")
    print(f"latency: p50 {percentile(tally.latencies_ms, 0.5):.1f} ms, p99 {percentile(tally.latencies_ms, 0.99):.1f} "
          f"ms, max {max(tally.latencies_ms):.1f} ms; " + "; ".join(
              f"{page} p50 {percentile(times, 0.5):.1f}, p99 {percentile(times, 0.99):.1f} ms"
              for page, times in sorted(tally.by_page.items())))
    print(f"sessions kept: {kept} of {sessions}{f' {dict(final.errors)}' if final.errors else ''}")
    print(f"refreshes: the emulator granted {grants.get('ok', 0)} (failed {grants.get('failed', 0)}, reuse "
          f"detected {stats['reuse_detected']}); the sessions saw {renewals} renewals "
          f"({renewals / sessions:.1f} each, one per {elapsed * sessions / max(renewals, 1):.1f} s); "
          f"refreshes per renewal {grants.get('ok', 0) / max(renewals, 1):.3f} (target 1.000)")
    print(f"portal log lines with ERROR or a traceback: {log_errors}")
    print("\nworker        RSS at start   RSS at end   growth")
    for pid, master in sorted(workers.items(), key=lambda item: (item[1], item[0])):
        end = rss_end.get(pid)
        replica = stack.masters.index(master) + 1
        growth = f"{(end - rss_start[pid]) / rss_start[pid] * 100:+.1f} %" if end else "(gone: restarted)"
        print(f"replica {replica} {pid:<7} {rss_start[pid] / 1024:>8.1f} MiB {end / 1024 if end else 0:>8.1f} MiB"
              f"   {growth}")
    worst_growth = max(((rss_end[pid] - rss_start[pid]) / rss_start[pid] for pid in rss_end), default=0.0)
    missed = {"errors": sum(tally.errors.values()) > 0 or log_errors > 0, "sessions lost": kept < sessions,
              "refresh-token reuse": stats["reuse_detected"] > 0, "a worker restarted": len(rss_end) < len(workers),
              f"RSS growth of {MAX_GROWTH:.0%} or more": worst_growth >= MAX_GROWTH}
    return [target for target, failed in missed.items() if failed]


if __name__ == "__main__":
    main()
