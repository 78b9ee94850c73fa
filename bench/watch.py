"""Watch delivery latency (target: p99 <= 10 ms after commit).

One connection holds a watch on ConfigMaps of a namespace from the current
resourceVersion; another creates `count` ConfigMaps at a modest, steady rate.
For each ADDED event two latencies are taken on the same machine clock:

* from send: from just before the create request was written to the event's
  arrival (includes the create's own path through the API and store);
* after commit: from the object's `creationTimestamp`, which the store stamps
  inside the write transaction just before it commits, to the event's arrival.

The baseline is the create round-trip itself, measured on the same requests.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

from bench.harness import Daemon, Row, percentile
from bench.httpclient import Connection, run

NAMESPACE = "bench-watch"
PATH = f"/apis/cloudland/v1/namespaces/{NAMESPACE}/configmaps"
TIME_LIMIT = 30.0


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


async def _run(host: str, port: int, count: int, rate: float) -> tuple[
        list[float], list[float], list[float], int]:
    writer = await Connection.open(host, port)
    status, body = await writer.request("GET", PATH)
    if status != 200:
        raise RuntimeError(f"list {PATH}: HTTP {status}: {body[:200]!r}")
    rv = json.loads(body)["metadata"]["resourceVersion"]

    sent_at: dict[str, float] = {}
    from_send: list[float] = []
    from_commit: list[float] = []
    round_trips: list[float] = []
    bookmark = asyncio.get_running_loop().create_future()
    all_seen = asyncio.get_running_loop().create_future()

    def on_line(line: bytes) -> None:
        arrived, arrived_wall = time.perf_counter(), time.time()
        event = json.loads(line)
        if event["type"] == "BOOKMARK":
            if not bookmark.done():
                bookmark.set_result(None)
            return
        if event["type"] != "ADDED":
            return
        meta = event["object"]["metadata"]
        sent = sent_at.pop(meta["name"], None)
        if sent is None:
            return
        from_send.append(arrived - sent)
        from_commit.append(arrived_wall - _epoch(meta["creationTimestamp"]))
        if len(from_send) == count and not all_seen.done():
            all_seen.set_result(None)

    watcher = await Connection.open(host, port)
    watcher.stream(f"{PATH}?watch=true&resourceVersion={rv}", on_line)
    await asyncio.wait_for(bookmark, 10)

    interval = 1.0 / rate
    start = time.perf_counter()
    deadline = start + TIME_LIMIT
    try:
        for i in range(count):
            due = start + i * interval
            now = time.perf_counter()
            if now > deadline:
                break
            if due > now:
                await asyncio.sleep(due - now)
            name = f"w{i}"
            doc = json.dumps({"apiVersion": "cloudland/v1", "kind": "ConfigMap",
                              "metadata": {"name": name}, "data": {"i": str(i)}}).encode()
            sent = time.perf_counter()
            sent_at[name] = sent
            status, body = await writer.request("POST", PATH, doc)
            round_trips.append(time.perf_counter() - sent)
            if status != 201:
                raise RuntimeError(f"create {name}: HTTP {status}: {body[:200]!r}")
        try:
            await asyncio.wait_for(all_seen, 5)
        except TimeoutError:
            pass
    finally:
        writer.close()
        watcher.close()
    missing = len(round_trips) - len(from_send)
    return from_send, from_commit, round_trips, missing


def measure(server: Daemon, *, count: int = 1000, rate: float = 200.0) -> list[Row]:
    host, port = server.host_port
    send, commit, rtt, missing = run(_run(host, port, count, rate))
    note = f"{len(rtt)} creates at {rate:.0f}/s"
    if missing:
        note += f", {missing} events never arrived"
    label = "create round-trip"
    return [
        Row("watch delivery p50 after commit", percentile(commit, 50) * 1e3, "ms",
            percentile(rtt, 50) * 1e3, label, note=note),
        Row("watch delivery p99 after commit", percentile(commit, 99) * 1e3, "ms",
            percentile(rtt, 99) * 1e3, label, target=10.0, note=note),
        Row("watch delivery p99 from send", percentile(send, 99) * 1e3, "ms",
            percentile(rtt, 99) * 1e3, label, note=note),
    ]
