"""The gateway under load and faults: rolling updates drop nothing, a killed Envoy comes
back on the same address, and the endpoints Envoy routes to follow readiness.

Real `cloudland up` (gateway on port 0, see tests/conftest.py), real Envoy, real
instances, real HTTP over keep-alive connections; every wait is a condition with a
deadline (tests.conftest.wait_for), never a bare sleep.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from cloudland.client import Client
from tests.conftest import Running, wait_for
from tests.test_services import alive, pids, ready_count, service, status

# Answers "<VERSION> <PORT>" so a response names its revision and its instance; the
# readiness endpoint fails while a file named after the instance's port exists in $FLAGS.
APP = '''
import os

def app(environ, start_response):
    port = os.environ.get("PORT", "")
    if environ.get("PATH_INFO") == "/healthz":
        if os.path.exists(os.path.join(os.environ["FLAGS"], "unready-" + port)):
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"unready"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    body = (os.environ.get("VERSION", "v1") + " " + port).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
'''


def route(name: str, host: str, backend: str) -> dict[str, Any]:
    return {"apiVersion": "cloudland/v1", "kind": "Route", "metadata": {"name": name},
            "spec": {"hosts": [host], "rules": [{"backends": [{"name": backend}]}]}}


def app_spec(tmp_path: Path, replicas: int, version: str = "v1", *,
             failure_threshold: int = 3) -> dict[str, Any]:
    (tmp_path / "gw_app.py").write_text(APP)
    flags = tmp_path / "flags"
    flags.mkdir(exist_ok=True)
    return {"replicas": replicas, "workingDir": str(tmp_path),
            "python": {"app": "gw_app:app"},
            "env": [{"name": "VERSION", "value": version},
                    {"name": "FLAGS", "value": str(flags)}],
            "readinessProbe": {"httpGet": {"path": "/healthz"}, "periodSeconds": 1,
                               "failureThreshold": failure_threshold},
            "terminationGracePeriodSeconds": 5}


def through_gateway(gateway: str, host: str) -> tuple[int, str]:
    """One request on a fresh connection: (status, body), or (0, error) if it failed."""
    try:
        r = httpx.get(gateway + "/", headers={"Host": host}, timeout=5)
    except httpx.HTTPError as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    return r.status_code, r.text


@dataclass
class LoadStats:
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Load:
    """`clients` threads, each on its own keep-alive HTTP/1.1 connection to the gateway,
    sending GETs back to back until stopped; every non-2xx answer or connection error
    is a failure."""

    def __init__(self, gateway: str, host: str, clients: int = 8) -> None:
        parts = urlsplit(gateway)
        self.addr = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.host = host
        self.stats = LoadStats()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True, name=f"load-{i}")
                         for i in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def snapshot(self) -> tuple[int, int, Counter[str]]:
        with self.stats.lock:
            return self.stats.ok, sum(self.stats.failures.values()), Counter(self.stats.versions)

    def _client(self) -> None:
        conn = http.client.HTTPConnection(*self.addr, timeout=10)
        try:
            while not self._stop.is_set():
                try:
                    conn.request("GET", "/", headers={"Host": self.host})
                    resp = conn.getresponse()
                    body = resp.read().decode(errors="replace")
                except (OSError, http.client.HTTPException) as exc:
                    with self.stats.lock:
                        self.stats.failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
                    conn.close()  # http.client reconnects on the next request
                    continue
                if resp.will_close:
                    conn.close()
                with self.stats.lock:
                    if 200 <= resp.status < 300:
                        self.stats.ok += 1
                        self.stats.versions[body.split(" ")[0]] += 1
                    else:
                        self.stats.failures[f"HTTP {resp.status}: {body[:80]}"] += 1
        finally:
            conn.close()


@pytest.mark.timeout(120)
def test_a_rolling_update_of_20_replicas_under_load_fails_no_request(
        cloudland: Running, tmp_path: Path) -> None:
    gateway = cloudland.state["gateway"]
    host = "roll.localhost"
    with Client(cloudland.api) as client:
        client.apply([service("roll", app_spec(tmp_path, 20, "v1")),
                      route("roll", host, "roll")])
        wait_for(lambda: ready_count(client, "roll", 20), timeout=40, message="20 ready")
        wait_for(lambda: len(status(client, "roll").get("endpoints", [])) == 20,
                 message="20 endpoints")
        wait_for(lambda: through_gateway(gateway, host)[1].startswith("v1 "), timeout=10,
                 message="the Route to serve v1")
        old = set(pids(client, "roll"))
        with Load(gateway, host) as load:
            wait_for(lambda: load.snapshot()[0] >= 200, timeout=10,
                     message="load to flow before the rollout")
            client.apply([service("roll", app_spec(tmp_path, 20, "v2"))])

            def rolled_out() -> bool:
                obj = client.get("Service", "default", "roll")
                st = obj.get("status") or {}
                ready = {c["type"]: c["status"] for c in st.get("conditions", [])}.get("Ready")
                return (st.get("observedGeneration") == obj["metadata"]["generation"]
                        and st.get("updatedReplicas") == 20 == st.get("replicas")
                        and st.get("readyReplicas") == 20 and ready == "True"
                        and not old & set(pids(client, "roll")))

            wait_for(rolled_out, timeout=40, interval=0.05, message="the rollout to complete")
            # Once the old instances are gone from the endpoints, only v2 answers: wait
            # until a batch of requests made after that point saw no v1 at all.
            wait_for(lambda: all(not alive(p) for p in old), timeout=20,
                     message="old instances to exit")
            # (answers already on their way when they exited are read in the first batch)
            _, _, gone = load.snapshot()
            wait_for(lambda: load.snapshot()[2]["v2"] - gone["v2"] >= 100, timeout=10,
                     message="v2 answers after the old instances exited")
            _, _, before = load.snapshot()
            wait_for(lambda: load.snapshot()[2]["v2"] - before["v2"] >= 400, timeout=10,
                     message="more v2 answers after the rollout")
            _, _, after = load.snapshot()
        ok, failed, versions = load.snapshot()
        assert failed == 0, f"{failed} failed requests of {ok + failed}: " \
                            f"{dict(load.stats.failures)}"
        assert versions["v1"] > 0 and versions["v2"] > 0, versions
        assert after["v1"] == before["v1"], "v1 answered after its instances were gone"
        assert ok >= 600, f"too little load to mean anything: {ok} requests"
        # and from now on only the new version answers, on fresh connections too
        for _ in range(20):
            code, body = through_gateway(gateway, host)
            assert code == 200 and body.startswith("v2 "), (code, body)


@pytest.mark.timeout(90)
def test_a_killed_envoy_is_restarted_on_the_same_address(cloudland: Running,
                                                          tmp_path: Path) -> None:
    gateway = cloudland.state["gateway"]
    host = "back.localhost"
    with Client(cloudland.api) as client:
        client.apply([service("back", app_spec(tmp_path, 1)), route("back", host, "back")])
        wait_for(lambda: ready_count(client, "back", 1), timeout=30, message="ready")
    wait_for(lambda: through_gateway(gateway, host)[0] == 200, timeout=10,
             message="traffic through the gateway")
    before = cloudland.cli("status", "-o", "json").json()["parts"]["gateway"]
    assert before["healthy"] and before["restarts"] == 0
    pid = int(before["pid"])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), message="Envoy to die")

    def restarted() -> dict[str, Any] | None:
        part = cloudland.cli("status", "-o", "json").json()["parts"]["gateway"]
        ok = part.get("healthy") and part.get("pid") not in (None, pid) \
            and part.get("restarts", 0) >= 1
        return part if ok else None

    part = wait_for(restarted, timeout=30, interval=0.05, message="Envoy to be restarted")
    assert alive(int(part["pid"]))
    assert cloudland.state["gateway"] == gateway  # the same address as before
    _, body = wait_for(lambda: (r := through_gateway(gateway, host))[0] == 200 and r,
                       timeout=10, message="traffic through the restarted Envoy")
    assert body.startswith("v1 ")
    # Config changes still reach the new Envoy.
    with Client(cloudland.api) as client:
        client.apply([route("back2", "back2.localhost", "back")])
    wait_for(lambda: through_gateway(gateway, "back2.localhost")[0] == 200, timeout=10,
             message="a new Route served by the restarted Envoy")


@pytest.mark.timeout(120)
def test_gateway_endpoints_follow_scaling_and_readiness(cloudland: Running,
                                                        tmp_path: Path) -> None:
    gateway = cloudland.state["gateway"]
    host = "ready.localhost"
    flags = tmp_path / "flags"

    def ports_answering(n: int = 40) -> Counter[str]:
        """Which instance ports answered `n` requests on one keep-alive connection."""
        seen: Counter[str] = Counter()
        with httpx.Client(base_url=gateway, headers={"Host": host}, timeout=5) as http:
            for _ in range(n):
                r = http.get("/")
                assert r.status_code == 200, (r.status_code, r.text)
                seen[r.text.split(" ")[1]] += 1
        return seen

    with Client(cloudland.api) as client:
        client.apply([service("ready", app_spec(tmp_path, 1, failure_threshold=1)),
                      route("ready", host, "ready")])
        wait_for(lambda: ready_count(client, "ready", 1), timeout=30, message="1 ready")
        first = status(client, "ready")["endpoints"][0].rsplit(":", 1)[1]
        wait_for(lambda: through_gateway(gateway, host) == (200, f"v1 {first}"), timeout=10,
                 message="the first instance to serve through the gateway")

        # Scale 1 -> 2: the new instance gets traffic once it is ready.
        client.patch("Service", "default", "ready", {"spec": {"replicas": 2}})
        wait_for(lambda: ready_count(client, "ready", 2), timeout=30, message="2 ready")
        ports = {ep.rsplit(":", 1)[1] for ep in status(client, "ready")["endpoints"]}
        assert first in ports and len(ports) == 2
        (second,) = ports - {first}
        wait_for(lambda: set(ports_answering()) == {first, second}, timeout=10,
                 message="both instances to get traffic through the gateway")

        # The second instance turns unready: it leaves the endpoints and the gateway
        # stops sending it traffic, though it still runs and answers directly.
        victim = int(second)
        (flags / f"unready-{second}").touch()
        wait_for(lambda: status(client, "ready").get("endpoints") == [f"127.0.0.1:{first}"],
                 timeout=10, message="the unready instance to leave the endpoints")
        wait_for(lambda: set(ports_answering()) == {first}, timeout=10,
                 message="the gateway to stop sending traffic to the unready instance")
        for _ in range(3):  # and it stays that way
            assert set(ports_answering()) == {first}
        direct = httpx.get(f"http://127.0.0.1:{victim}/", timeout=5)
        assert direct.status_code == 200 and direct.text == f"v1 {second}"
        st = status(client, "ready")
        assert st["readyReplicas"] == 1 and st["replicas"] == 2

        # Ready again: back in the endpoints, back in the gateway's rotation.
        (flags / f"unready-{second}").unlink()
        wait_for(lambda: ready_count(client, "ready", 2), timeout=10, message="ready again")
        wait_for(lambda: set(ports_answering()) == {first, second}, timeout=10,
                 message="traffic to the instance that is ready again")
