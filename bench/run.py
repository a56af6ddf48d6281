"""`make bench`: what the portal costs on top of a bare Flask route, measured on loopback.

Starts Redis, the emulator, the portal under gunicorn (filesystem and Redis backends), a bare Flask
app and a minimal Flask-Dance app, all with the same gunicorn settings, and nginx in front of the
bare app with and without auth_request to the portal's /auth; drives load with wrk from a second
process; prints one table. See docs/BENCHMARKS.md for a recorded run.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgspec
import redis
import requests

from scripts.servers import NotUp, free_port, wait_for_http

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# One worker for every app: wrk opens its connections once, and the kernel hands most of them to
# whichever of several workers wakes first, so with two workers a run measured that luck instead of
# the app (one worker serving alone halves the throughput). The threads are gunicorn.conf.py's default.
WORKERS, THREADS = "1", "4"
WRK_SECONDS, WRK_CONNECTIONS, ROUNDS = 5, 16, 7
SECRET = "bench-secret-key-0123456789-abcdefghijklmnop"


def wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    try:
        wait_for_http(url, process)
    except NotUp as error:
        sys.exit(f"bench: {error}")


@dataclass
class Stack:
    work: Path
    redis_url: str
    emulator: str
    urls: dict[str, str]
    # gunicorn's master process per app, to find its workers.
    masters: dict[str, int]


@contextmanager
def running_stack() -> Iterator[Stack]:
    """Start Redis, the emulator and four gunicorn apps; stop them all afterwards."""
    for tool in ("wrk", "redis-server", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (apt-get install wrk redis-server nginx)")
    work = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    names = ("redis", "emulator", "filesystem", "redis-portal", "redis-uncached", "redis-large", "rotating", "bare",
             "dance", "nginx", "nginx-gate")
    ports = {name: free_port() for name in names}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    callbacks = [f"{urls[n]}/callback" for n in ("filesystem", "redis-portal", "redis-uncached", "redis-large",
                                                 "rotating")]
    config = {"clients": [
        {"id": "bench", "secret": "bench-secret-0123456789", "redirect_uris": callbacks},
        {"id": "bench-rotating", "secret": "bench-secret-0123456789", "redirect_uris": callbacks,
         "expires_in": 4, "rotate_refresh_tokens": True},
        {"id": "dance", "secret": "bench-secret-0123456789", "expires_in": 4, "rotate_refresh_tokens": True,
         "redirect_uris": [f"{urls['dance']}/login/mediaflow/authorized"]},
    ]}
    (work / "emulator.json").write_text(json.dumps(config))
    children: list[subprocess.Popen[bytes]] = []
    masters: dict[str, int] = {}

    def spawn(command: list[str], **env: str) -> subprocess.Popen[bytes]:
        environment = {k: v for k, v in os.environ.items()
                       if not k.startswith(("MEDIAFLOW_", "SESSION_", "REDIS_", "GUNICORN_", "LOG_"))}
        environment.update(PYTHONPATH=str(ROOT), **env)
        child = subprocess.Popen(command, cwd=work, env=environment, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        children.append(child)
        return child

    def gunicorn(name: str, app: str, **env: str) -> None:
        child = spawn([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), app],
                      GUNICORN_BIND=f"127.0.0.1:{ports[name]}", GUNICORN_WORKERS=WORKERS, GUNICORN_THREADS=THREADS,
                      SESSION_FILESYSTEM_ALLOW_WORKERS="true", **env)
        wait_for(f"{urls[name]}/session", child)
        masters[name] = child.pid

    try:
        server = spawn(["redis-server", "--port", str(ports["redis"]), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", str(work)])
        redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
        for _ in range(100):
            try:
                redis.Redis.from_url(redis_url).ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        emulator = spawn([sys.executable, "-m", "emulator", "--port", str(ports["emulator"]),
                          "--config", str(work / "emulator.json")])
        wait_for(f"{urls['emulator']}/_emulator/stats", emulator)
        portal = {"MEDIAFLOW_CLIENT_SECRET": "bench-secret-0123456789", "SECRET_KEY": SECRET,
                  "MEDIAFLOW_AUTHORIZE_URL": f"{urls['emulator']}/authorize",
                  "MEDIAFLOW_TOKEN_URL": f"{urls['emulator']}/1/oauth2/token",
                  "MEDIAFLOW_API_BASE": f"{urls['emulator']}/1", "SESSION_COOKIE_SECURE": "false"}
        gunicorn("filesystem", "app:create_app()", SESSION_BACKEND="filesystem", SESSION_FILE_DIR=str(work / "fs"),
                 MEDIAFLOW_CLIENT_ID="bench", MEDIAFLOW_REDIRECT_URI=f"{urls['filesystem']}/callback", **portal)
        gunicorn("redis-portal", "app:create_app()", SESSION_BACKEND="redis", REDIS_URL=redis_url,
                 MEDIAFLOW_CLIENT_ID="bench", MEDIAFLOW_REDIRECT_URI=f"{urls['redis-portal']}/callback", **portal)
        # The same, reading Redis on every request: what the per-worker session cache saves.
        gunicorn("redis-uncached", "app:create_app()", SESSION_BACKEND="redis", REDIS_URL=redis_url,
                 SESSION_REDIS_CACHE="false", MEDIAFLOW_CLIENT_ID="bench",
                 MEDIAFLOW_REDIRECT_URI=f"{urls['redis-uncached']}/callback", **portal)
        # The same server, another database: the one that will hold 100,000 sessions.
        gunicorn("redis-large", "app:create_app()", SESSION_BACKEND="redis", REDIS_URL=redis_url[:-1] + "1",
                 MEDIAFLOW_CLIENT_ID="bench", MEDIAFLOW_REDIRECT_URI=f"{urls['redis-large']}/callback", **portal)
        # Tokens that live 4 s and rotate, for the refresh-under-load case.
        gunicorn("rotating", "app:create_app()", SESSION_BACKEND="redis", REDIS_URL=redis_url,
                 MEDIAFLOW_CLIENT_ID="bench-rotating", MEDIAFLOW_REDIRECT_URI=f"{urls['rotating']}/callback", **portal)
        gunicorn("bare", "bench.bare_app:create_app()")
        gunicorn("dance", "bench.flask_dance_app:create_app()", SECRET_KEY=SECRET, MEDIAFLOW_CLIENT_ID="dance",
                 MEDIAFLOW_CLIENT_SECRET="bench-secret-0123456789", MEDIAFLOW_EMULATOR_URL=urls["emulator"],
                 OAUTHLIB_INSECURE_TRANSPORT="1")
        # nginx in front of the bare route: plainly, and with auth_request to the Redis portal's /auth,
        # as in README's "Protecting other apps" (without TLS, which would cost the same in both).
        prefix = work / "nginx"
        prefix.mkdir()
        (prefix / "nginx.conf").write_text(nginx_config(prefix, ports, urls))
        proxy = spawn([shutil.which("nginx") or "nginx", "-c", str(prefix / "nginx.conf"), "-p", f"{prefix}/",
                       "-e", str(prefix / "error.log"), "-g", "daemon off;"])
        wait_for(f"{urls['nginx']}/session", proxy)
        masters["nginx"] = proxy.pid
        assert server.poll() is None
        yield Stack(work, redis_url, urls["emulator"], urls, masters)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait()
        shutil.rmtree(work, ignore_errors=True)


def nginx_config(prefix: Path, ports: dict[str, int], urls: dict[str, str]) -> str:
    """One worker, like the apps; the gate server uses the README's auth_request directives."""
    # As root, nginx's workers would run as an unprivileged user that cannot enter the 0700 temp folder.
    user = "user root;" if os.geteuid() == 0 else ""
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                            "scgi"))
    return f"""{user}
worker_processes 1;
pid {prefix / "nginx.pid"};
events {{ worker_connections 1024; }}
http {{
    access_log {prefix / "access.log"};
{temp}
    upstream bare {{ server 127.0.0.1:{ports["bare"]}; keepalive 16; }}
    upstream gate_portal {{ server 127.0.0.1:{ports["redis-portal"]}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{ports["nginx"]};
        location / {{
            proxy_pass http://bare;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen 127.0.0.1:{ports["nginx-gate"]};
        location = /_portal_auth {{
            internal;
            proxy_pass http://gate_portal/auth;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host 127.0.0.1;
        }}
        location / {{
            auth_request /_portal_auth;
            auth_request_set $auth_user $upstream_http_x_auth_request_user;
            auth_request_set $auth_email $upstream_http_x_auth_request_email;
            auth_request_set $auth_name $upstream_http_x_auth_request_name;
            auth_request_set $auth_customer $upstream_http_x_auth_request_customer_id;
            proxy_pass http://bare;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Auth-Request-User $auth_user;
            proxy_set_header X-Auth-Request-Email $auth_email;
            proxy_set_header X-Auth-Request-Name $auth_name;
            proxy_set_header X-Auth-Request-Customer-Id $auth_customer;
        }}
    }}
}}
"""


def sign_in(authorize_url: str) -> str:
    answer = requests.post(authorize_url, data={"username": "demo", "password": "demo", "action": "allow"},
                           allow_redirects=False, timeout=10)
    return str(answer.headers["Location"])


def log_in(portal: str, login_path: str = "/login") -> requests.Session:
    browser = requests.Session()
    login = browser.get(portal + login_path, allow_redirects=False, timeout=10)
    browser.get(sign_in(login.headers["Location"]), timeout=10).raise_for_status()
    return browser


def cookie_header(browser: requests.Session) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in browser.cookies)


def wrk(url: str, cookie: str | None = None) -> dict[str, float]:
    """Requests per second and latency percentiles from wrk, run as its own process."""
    command = ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s", "--latency", url]
    if cookie:
        command[1:1] = ["-H", f"Cookie: {cookie}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        sys.exit(f"bench: wrk saw errors on {url}:\n{output}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {"rps": rps, "p50": percentile("50"), "p99": percentile("99"), "requests": count}


def workers_of(master: int) -> list[int]:
    """gunicorn's worker processes: the children of its master."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                children.append(int(entry.name))
    return children


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(url: str, cookie: str | None, master: int) -> dict[str, float]:
    """wrk against one app, and the CPU its worker used per request."""
    workers = workers_of(master)
    before = [cpu_seconds(pid) for pid in workers]
    result = wrk(url, cookie)
    used = sum(cpu_seconds(pid) - start for pid, start in zip(workers, before, strict=True))
    result["cpu_us"] = used / result["requests"] * 1e6
    return result


def emulator_stats(stack: Stack) -> dict[str, Any]:
    return dict(requests.get(f"{stack.emulator}/_emulator/stats", timeout=5).json())


def reset(stack: Stack) -> None:
    requests.post(f"{stack.emulator}/_emulator/reset", timeout=5)


def all_at_once(url: str, cookie: str, count: int) -> list[tuple[int, float]]:
    """`count` requests with one cookie, released together; (status, milliseconds) each."""
    gate = threading.Barrier(count)

    def one(_: int) -> tuple[int, float]:
        gate.wait()
        started = time.perf_counter()
        status = requests.get(url, headers={"Cookie": cookie}, timeout=60).status_code
        return status, (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def login_round_trip(stack: Stack, rounds: int = 30) -> dict[str, float]:
    """/login → authorize → callback → /, over HTTP; the emulator's own time counted apart."""
    portal = stack.urls["redis-portal"]
    totals = []
    reset(stack)
    for _ in range(rounds):
        browser = requests.Session()
        started = time.perf_counter()
        login = browser.get(f"{portal}/login", allow_redirects=False, timeout=10)
        authorize = browser.get(login.headers["Location"], timeout=10)
        authorize.raise_for_status()
        callback = sign_in(login.headers["Location"])
        home = browser.get(callback, timeout=10)
        assert "Welcome" in home.text
        totals.append((time.perf_counter() - started) * 1000)
    emulator_ms = sum(emulator_stats(stack)["busy_ms"].values()) / rounds
    total = statistics.mean(totals)
    return {"total": total, "emulator": emulator_ms, "portal": total - emulator_ms}


def refresh_under_load(stack: Stack, url: str, login: Callable[[], requests.Session], rounds: int = 3
                       ) -> dict[str, float]:
    """64 parallel requests right after expiry, against 64 with a fresh token; refreshes counted."""
    fresh, expired, refreshes, failures = [], [], [], []
    for _ in range(rounds):
        browser = login()
        logged_in_at = time.monotonic()
        cookie = cookie_header(browser)
        all_at_once(url, cookie, 64)  # the worker has read the session once: the baseline is the steady state
        fresh += [ms for status, ms in all_at_once(url, cookie, 64) if status == 200]
        time.sleep(max(0.0, 4.3 - (time.monotonic() - logged_in_at)))
        reset(stack)
        results = all_at_once(url, cookie, 64)
        expired += [ms for _, ms in results]
        failures.append(sum(1 for status, _ in results if status != 200))
        token = emulator_stats(stack)["token"].get("refresh_token", {})
        refreshes.append(token.get("ok", 0) + token.get("failed", 0))
    return {"refreshes": statistics.mean(refreshes), "failed_requests": statistics.mean(failures),
            "p50": statistics.median(expired), "max": max(expired),
            "fresh_p50": statistics.median(fresh), "fresh_max": max(fresh)}


def warm_folder_page(stack: Stack, folder_id: int = 6, rounds: int = 200) -> dict[str, float]:
    """A folder page after the first view, one request at a time on one kept-open connection: Mediaflow
    calls per view, and the page's median time against the emulator's own time for its one call (the
    issue's measure) and against the same call made straight to the emulator by the same lean client."""
    portal = stack.urls["redis-portal"]
    browser = log_in(portal)
    page = f"/library/folders/{folder_id}"
    requests.get(portal + page, headers={"Cookie": cookie_header(browser)}, timeout=10).raise_for_status()
    # http.client rather than requests: requests' own time per call (about a millisecond here) is
    # the client's, not the portal's, and would be counted in the page.
    pages = timed_on(portal, page, {"Cookie": cookie_header(browser)}, rounds, stack)
    stats = emulator_stats(stack)
    path = f"/1/folder/{folder_id}/files"
    calls = sum(stats["api"].values())
    # The page's one call, made directly with a token of the same user: what Mediaflow itself costs a client.
    token = requests.post(f"{stack.emulator}/1/oauth2/token", timeout=10, data={
        "grant_type": "password", "username": "demo", "password": "demo", "client_id": "bench",
        "client_secret": "bench-secret-0123456789"}).json()["access_token"]
    query = urlencode({"fields": "id,name,filename,filesize,type,thumbpreview,uploaded,gdprstatus",
                       "type": "any", "sort": "filename", "order": "asc", "per_page": "24", "page": "1"})
    calls_direct = timed_on(stack.emulator, f"{path}?{query}", {"Authorization": f"Bearer {token}"}, rounds, stack)
    own = emulator_stats(stack)
    return {"calls_per_view": calls / rounds, "page_ms": statistics.median(pages),
            "direct_ms": statistics.median(calls_direct),
            "emulator_ms": own["api_busy_ms"][path] / own["api"][path]}


def timed_on(base: str, path: str, headers: dict[str, str], rounds: int, stack: Stack) -> list[float]:
    """Milliseconds for each of `rounds` GETs one after another on one connection; the emulator's stats reset first."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    reset(stack)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            sys.exit(f"bench: {base}{path} answered {answer.status}")
        times.append((time.perf_counter() - started) * 1000)
    connection.close()
    return times


def fill_sessions(redis_url: str, total: int) -> None:
    """Add logged-in sessions (session record + token set) to a Redis database until it holds `total`."""
    client = redis.Redis.from_url(redis_url)
    have = len(client.keys("mediaflow:session:*"))
    encoder = msgspec.msgpack.Encoder()
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for number in range(have, total):
        key = f"bench{number:038d}"  # the form of the portal's keys (43 characters), or it would drop the record
        pipe.set(f"mediaflow:session:{key}", encoder.encode(
            {"tokens_key": key, "user": {"id": 1, "name": "Demo User"}, "login_at": now, "seen_at": now,
             "_permanent": True}), ex=3600)
        pipe.set(f"mediaflow:tokens:{key}", json.dumps(
            {"access_token": "a" * 42, "refresh_token": "r" * 48, "expires_at": now + 3600, "lifetime": 3600,
             "refreshed_at": None, "retry_at": 0.0, "failures": 0}), ex=3600)
        if number % 5000 == 0:
            pipe.execute()
    pipe.execute()
    client.close()


@dataclass
class Target:
    url: str
    cookie: str | None
    master: int


def interleaved(targets: dict[str, Target]) -> dict[str, list[dict[str, float]]]:
    """ROUNDS rounds of every target in turn, so drift on a shared machine hits all of them alike."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for _ in range(ROUNDS):
        for name, target in targets.items():
            results[name].append(measured(target.url, target.cookie, target.master))
    return results


def summary(runs: list[dict[str, float]], bare: list[dict[str, float]] | None = None) -> tuple[str, str]:
    median = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99", "cpu_us")}
    text = (f"{median['rps']:.0f} req/s, p50 {median['p50']:.2f} ms, p99 {median['p99']:.2f} ms, "
            f"CPU {median['cpu_us']:.0f} µs/req")
    if bare is None:
        return text, "1.00"
    return text, f"{statistics.median(r['rps'] / b['rps'] for r, b in zip(runs, bare, strict=True)):.2f}"


def main() -> None:
    rows: list[tuple[str, str, str]] = []
    with running_stack() as stack:
        print("bench: measuring (about 5 minutes)…", flush=True)
        fill_sessions(stack.redis_url, 100)
        fill_sessions(stack.redis_url[:-1] + "1", 100_000)

        def dance_login() -> requests.Session:
            return log_in(stack.urls["dance"], "/login/mediaflow")

        def page(name: str, login: Callable[[], requests.Session] | None = None) -> Target:
            browser = login() if login else log_in(stack.urls[name])
            return Target(f"{stack.urls[name]}/session", cookie_header(browser), stack.masters[name])

        redis_page = page("redis-portal")
        runs = interleaved({
            "bare": Target(f"{stack.urls['bare']}/session", None, stack.masters["bare"]),
            "filesystem": page("filesystem"),
            "redis": redis_page,
            "redis-large": page("redis-large"),
            "redis-uncached": page("redis-uncached"),
            "dance": page("dance", dance_login),
            # The gate: the portal's /auth against a bare route that answers the same empty 202.
            "auth": Target(f"{stack.urls['redis-portal']}/auth", redis_page.cookie, redis_page.master),
            "bare-auth": Target(f"{stack.urls['bare']}/auth", None, stack.masters["bare"]),
            # The media library's home page: the user's name from the session, no call to Mediaflow.
            "home": Target(f"{stack.urls['redis-portal']}/", redis_page.cookie, redis_page.master),
        })
        bare = runs["bare"]
        rows.append(("1 throughput: bare Flask route", *summary(bare)))
        rows.append(("1 throughput: portal, filesystem backend", *summary(runs["filesystem"], bare)))
        rows.append(("1 throughput: portal, Redis backend", *summary(runs["redis"], bare)))
        rows.append(("1 throughput: portal, Redis, SESSION_REDIS_CACHE=false", *summary(runs["redis-uncached"], bare)))

        login = login_round_trip(stack)
        rows.append(("2 login round trip (mean of 30)", f"{login['total']:.1f} ms: portal {login['portal']:.1f} ms, "
                     f"emulator {login['emulator']:.1f} ms", ""))

        refresh = refresh_under_load(stack, f"{stack.urls['rotating']}/session",
                                     lambda: log_in(stack.urls["rotating"]))
        rows.append(("3 refresh under load: portal, 64 parallel", f"{refresh['refreshes']:.0f} refresh(es), "
                     f"{refresh['failed_requests']:.0f} failed; p50 {refresh['p50']:.1f} ms, "
                     f"max {refresh['max']:.1f} ms (fresh token: {refresh['fresh_p50']:.1f}, "
                     f"{refresh['fresh_max']:.1f} ms)", "target: 1"))

        scale = statistics.median(large["rps"] / small["rps"]
                                  for small, large in zip(runs["redis"], runs["redis-large"], strict=True))
        rows.append(("4 scale: Redis, 100 → 100,000 sessions", f"{summary(runs['redis'])[0].split(',')[0]} → "
                     f"{summary(runs['redis-large'])[0].split(',')[0]}", f"{scale:.2f}"))

        rows.append(("5 Flask-Dance: throughput", *summary(runs["dance"], bare)))
        dance_refresh = refresh_under_load(stack, f"{stack.urls['dance']}/me", dance_login)
        rows.append(("5 Flask-Dance: refresh under load, 64 parallel", f"{dance_refresh['refreshes']:.0f} "
                     f"refresh(es), {dance_refresh['failed_requests']:.0f} failed", ""))

        rows.append(("6 gate: /auth, Redis backend (vs bare 202)", *summary(runs["auth"], runs["bare-auth"])))
        rows.append(("6 gate: /auth, Redis backend (vs bare page)", *summary(runs["auth"], bare)))

        rows.append(("8 library: home page, Redis backend", *summary(runs["home"], bare)))
        rows.append(folder_row(warm_folder_page(stack)))

        # What nginx's auth_request adds to each request of a protected app: the same upstream, with and without.
        proxied = interleaved({
            "bare": Target(f"{stack.urls['bare']}/session", None, stack.masters["bare"]),
            "nginx": Target(f"{stack.urls['nginx']}/session", None, stack.masters["nginx"]),
            "nginx-gate": Target(f"{stack.urls['nginx-gate']}/session", redis_page.cookie, stack.masters["nginx"]),
        })
        rows.append(("7 nginx → bare route", *summary(proxied["nginx"], proxied["bare"])))
        rows.append(("7 nginx + auth_request → bare route", *summary(proxied["nginx-gate"], proxied["bare"])))
        pairs = list(zip(proxied["nginx-gate"], proxied["nginx"], strict=True))
        added = statistics.median(gated["p50"] - plain["p50"] for gated, plain in pairs)
        gate_ratio = statistics.median(gated["rps"] / plain["rps"] for gated, plain in pairs)
        rows.append(("7 auth_request's cost per protected request",
                     f"p50 +{added:.2f} ms; throughput {gate_ratio:.2f} of nginx without auth_request "
                     "(CPU above: nginx's worker only)", f"{gate_ratio:.2f}"))
    print_table(rows)


def main_targets() -> None:
    """Only the rows with a speed target: the Redis-backed page, /auth and the home page against their bare
    routes, and the warm folder page against the emulator's own time."""
    with running_stack() as stack:
        print("bench: measuring the rows with a speed target (about 3 minutes)…", flush=True)
        redis_page = Target(f"{stack.urls['redis-portal']}/session",
                            cookie_header(log_in(stack.urls["redis-portal"])), stack.masters["redis-portal"])
        runs = interleaved({
            "bare": Target(f"{stack.urls['bare']}/session", None, stack.masters["bare"]),
            "redis": redis_page,
            "auth": Target(f"{stack.urls['redis-portal']}/auth", redis_page.cookie, redis_page.master),
            "bare-auth": Target(f"{stack.urls['bare']}/auth", None, stack.masters["bare"]),
            "home": Target(f"{stack.urls['redis-portal']}/", redis_page.cookie, redis_page.master),
        })
        folder = warm_folder_page(stack)
    print_table([("1 throughput: bare Flask route", *summary(runs["bare"])),
                 ("1 throughput: portal, Redis backend", *summary(runs["redis"], runs["bare"])),
                 ("6 gate: bare route answering 202", *summary(runs["bare-auth"])),
                 ("6 gate: /auth, Redis backend (vs bare 202)", *summary(runs["auth"], runs["bare-auth"])),
                 ("8 library: home page, Redis backend", *summary(runs["home"], runs["bare"])),
                 folder_row(folder)])


def folder_row(folder: dict[str, float]) -> tuple[str, str, str]:
    return ("8 library: warm folder page (24 files), one at a time",
            f"{folder['calls_per_view']:.2f} Mediaflow call(s) per view; median {folder['page_ms']:.2f} ms, "
            f"the emulator's own time for the call {folder['emulator_ms']:.2f} ms: "
            f"+{folder['page_ms'] - folder['emulator_ms']:.2f} ms "
            f"(the call made directly: {folder['direct_ms']:.2f} ms)",
            "target: +5 ms")


def print_table(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"\nworkers={WORKERS} threads={THREADS}; wrk -t1 -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s, "
          f"{ROUNDS} interleaved rounds, medians; ratios are per round, against the bare route; "
          "CPU is the worker's user and system time per request\n")
    print(f"{'case':<{width}}  {'result':<92}  ratio")
    for case, outcome, ratio in rows:
        print(f"{case:<{width}}  {outcome:<92}  {ratio}")


if __name__ == "__main__":
    # `python -m bench.run --targets`: only the rows with a speed target, for a quick check (not a recorded run).
    if "--targets" in sys.argv[1:]:
        main_targets()
    else:
        main()
