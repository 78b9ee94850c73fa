"""API mutation latency under 50 concurrent clients (target: p99 <= 20 ms).

Each client owns one keep-alive connection and runs closed-loop: it creates a
ConfigMap, merge-patches it, creates the next, and so on, until the clients
together have made `total` mutations.  The baseline is the same clients doing
GET /readyz: the floor of the HTTP stack (uvicorn + Starlette routing), with
no validation or store.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench.harness import Daemon, Row, percentile
from bench.httpclient import Connection, run

PREFIX = "/apis/cloudland/v1/namespaces/bench-api/configmaps"
TIME_LIMIT = 60.0


def _configmap(name: str, n: int) -> bytes:
    return json.dumps({"apiVersion": "cloudland/v1", "kind": "ConfigMap",
                       "metadata": {"name": name, "labels": {"bench": "api"}},
                       "data": {"n": str(n), "payload": "x" * 64}}).encode()


async def _clients(host: str, port: int, clients: int, total: int,
                   mutate: bool, rate: float | None = None) -> tuple[list[float], float, int]:
    """Latencies (s) of every request, the wall time, and the count of non-2xx answers.

    Closed loop (each client sends as soon as its last answer came) unless `rate`
    gives each client a fixed schedule of `rate` requests per second (open loop:
    latency without the queueing a saturated server adds)."""
    conns = [await Connection.open(host, port) for _ in range(clients)]
    per_client = total // clients
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + TIME_LIMIT
    start_gate = asyncio.Event()

    async def one(index: int, conn: Connection) -> None:
        nonlocal errors
        # Warm the connection and, for mutations, the create and patch paths (the
        # first request of each route pays one-off costs that are not steady state).
        for _ in range(5):
            await conn.request("GET", "/readyz")
        if mutate:
            await conn.request("POST", PREFIX, _configmap(f"warm{index}", 0))
            await conn.request("PATCH", f"{PREFIX}/warm{index}", b'{"data":{"n":"1"}}',
                               "application/merge-patch+json")
        await start_gate.wait()
        name = ""
        began = time.perf_counter() + (index / clients) / rate if rate else 0.0
        for k in range(per_client):
            if time.perf_counter() > deadline:
                return
            if rate:
                await asyncio.sleep(max(0.0, began + k / rate - time.perf_counter()))
            if not mutate:
                method, path, body, ctype = "GET", "/readyz", b"", "application/json"
            elif k % 2 == 0:
                name = f"c{index}-{k}"
                method, path, body, ctype = "POST", PREFIX, _configmap(name, k), \
                    "application/json"
            else:
                method, path, ctype = "PATCH", f"{PREFIX}/{name}", \
                    "application/merge-patch+json"
                body = json.dumps({"data": {"n": str(k)}}).encode()
            sent = time.perf_counter()
            status, _ = await conn.request(method, path, body, ctype)
            latencies.append(time.perf_counter() - sent)
            if status >= 300:
                errors += 1

    tasks = [asyncio.ensure_future(one(i, c)) for i, c in enumerate(conns)]
    await asyncio.sleep(0.2)
    began = time.perf_counter()
    start_gate.set()
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), TIME_LIMIT + 10)
    finally:
        wall = time.perf_counter() - began
        for conn in conns:
            conn.close()
    return latencies, wall, errors


def in_process(total: int) -> float:
    """Seconds per mutation for ResourceService + Store alone: no HTTP, no controllers."""
    from cloudland.api.service import ResourceService
    from cloudland.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="cloudland-bench-store-"))
    store = Store(tmp / "store.db")
    try:
        service = ResourceService(store)
        half = total // 2
        docs = [json.loads(_configmap(f"p{i}", i)) for i in range(half)]
        start = time.perf_counter()
        for i, doc in enumerate(docs):
            service.create(doc, kind="ConfigMap", namespace="bench-api")
            service.patch({"data": {"n": str(i)}}, kind="ConfigMap", namespace="bench-api",
                          name=f"p{i}")
        return (time.perf_counter() - start) / (2 * half)
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def measure(server: Daemon, *, clients: int = 50, total: int = 5000) -> list[Row]:
    host, port = server.host_port
    base, base_wall, _ = run(_clients(host, port, clients, total, mutate=False))
    lat, wall, errors = run(_clients(host, port, clients, total, mutate=True))
    steady, _, _ = run(_clients(host, port, clients, 3000, mutate=True, rate=20.0))
    note = f"{clients} clients, {len(lat)} mutations (create/merge-patch)"
    if errors:
        note += f", {errors} non-2xx"
    label = "GET /readyz, same clients"
    return [
        Row("API mutation p50", percentile(lat, 50) * 1e3, "ms",
            percentile(base, 50) * 1e3, label, note=note),
        Row("API mutation p99", percentile(lat, 99) * 1e3, "ms",
            percentile(base, 99) * 1e3, label, target=20.0, note=note),
        Row("API mutation p99 at 1,000/s offered", percentile(steady, 99) * 1e3, "ms",
            percentile(base, 99) * 1e3, label,
            note=f"{clients} clients x 20 req/s each (open loop), {len(steady)} mutations"),
        Row("API mutation throughput", len(lat) / wall, "req/s",
            len(base) / base_wall, label, note=note),
        Row("  service + store per mutation", in_process(total) * 1e3, "ms",
            wall / max(len(lat), 1) * 1e3, "server wall per mutation (1/throughput)",
            note="in process, no HTTP, no controllers"),
    ]
