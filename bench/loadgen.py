"""Steady HTTP load spread over a Service's endpoints, as a gateway would send it.

`Load` follows a Service through a watch (NDJSON, `?watch=true`) and keeps its
ready endpoints (`status.endpoints`).  It sends GET / at a fixed rate (open
loop: a slow answer does not slow the sender), round-robin over the current
endpoints, on keep-alive connections pooled per endpoint; an endpoint that
leaves the list has its idle connections closed.  A request whose connection is
refused, reset or closed before an answer (an endpoint that just went away) is
retried once on another endpoint picked at random, as Envoy's `retry_on:
connect-failure,reset` with the previous_hosts predicate would do; those
retries are counted apart from failures.  Anything else (a second failure, a
timeout, a status other than 200) is a failure.

Counters are kept per phase (`phase`), so one run gives the baseline (load
without a rollout) and the rollout window side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.httpclient import Connection, HTTPError

REQUEST_TIMEOUT = 5.0


class Retryable(Exception):
    """Connect failure or reset: the request never reached an app that could answer."""


@dataclass
class Phase:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    retried: int = 0
    # connect failures/resets on an endpoint still listed in status.endpoints at that
    # moment: the instance went away before the Service stopped advertising it
    while_listed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


class Load:
    def __init__(self, host: str, port: int, watch_path: str, name: str, rate: float) -> None:
        self.api = (host, port)
        self.watch_path = watch_path
        self.name = name
        self.rate = rate
        self.endpoints: list[str] = []
        self.phases: dict[str, Phase] = {}
        self.phase = "warm-up"
        self.pools: dict[str, list[Connection]] = {}
        self.on_status: Callable[[dict[str, Any]], None] | None = None
        self.min_endpoints: int | None = None
        self._next = 0
        self.refused_at: dict[str, float] = {}  # first connect failure/reset while listed
        self.delisted_at: dict[str, float] = {}  # when the watch said it left
        self._random = random.Random(42)
        self._watch: Connection | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._seen_first = asyncio.Event()

    # ---- the watch -------------------------------------------------------------------------

    async def watch(self) -> None:
        self._watch = await Connection.open(*self.api)
        self._watch.stream(self.watch_path, self._on_line)
        await asyncio.wait_for(self._seen_first.wait(), 10)

    def _on_line(self, line: bytes) -> None:
        event = orjson.loads(line)
        obj = event.get("object") or {}
        if event.get("type") not in ("ADDED", "MODIFIED") or \
                obj.get("metadata", {}).get("name") != self.name:
            return
        status = obj.get("status") or {}
        endpoints = list(status.get("endpoints") or [])
        gone = set(self.endpoints) - set(endpoints)
        self.endpoints = endpoints
        now = time.perf_counter()
        for ep in gone:
            self.delisted_at[ep] = now
        if self.phase == "rollout":
            n = len(endpoints)
            self.min_endpoints = n if self.min_endpoints is None else min(self.min_endpoints, n)
        for ep in gone:  # as a proxy drains a host that left: idle connections go
            for conn in self.pools.pop(ep, []):
                conn.close()
        if self.on_status is not None:
            self.on_status(obj)
        self._seen_first.set()

    # ---- requests --------------------------------------------------------------------------

    async def _get(self, endpoint: str) -> int:
        pool = self.pools.setdefault(endpoint, [])
        conn = None
        while pool:
            candidate = pool.pop()
            if not candidate.closed.done():
                conn = candidate
                break
        if conn is None:
            host, _, port = endpoint.rpartition(":")
            try:
                conn = await Connection.open(host, int(port))
            except OSError as exc:  # refused: nobody listens there any more
                raise Retryable(f"connect: {type(exc).__name__}") from None
        try:
            status, _ = await asyncio.wait_for(conn.request("GET", "/"), REQUEST_TIMEOUT)
        except HTTPError as exc:  # reset or closed before the answer
            conn.close()
            raise Retryable(f"{exc}"[:60]) from None
        except BaseException:
            conn.close()
            raise
        if endpoint in self.endpoints and not conn.closed.done():
            self.pools.setdefault(endpoint, []).append(conn)
        else:
            conn.close()
        return status

    def _pick(self) -> str | None:
        eps = self.endpoints
        if not eps:
            return None
        self._next += 1
        return eps[self._next % len(eps)]

    def _other(self, avoid: str) -> str | None:
        """A random endpoint but `avoid`, as Envoy picks a retry's host (previous_hosts)."""
        others = [ep for ep in self.endpoints if ep != avoid]
        return self._random.choice(others) if others else None

    def _note_refusal(self, phase: Phase, endpoint: str) -> None:
        if endpoint in self.endpoints:
            phase.while_listed += 1
            self.refused_at.setdefault(endpoint, time.perf_counter())

    def listed_after_refusal(self) -> list[float]:
        """For each endpoint that refused while listed: seconds until it was de-listed."""
        return [self.delisted_at[ep] - at for ep, at in self.refused_at.items()
                if ep in self.delisted_at and self.delisted_at[ep] >= at]

    async def _one(self, phase: Phase) -> None:
        sent = time.perf_counter()
        endpoint = self._pick()
        if endpoint is None:
            phase.failed += 1
            phase.errors["no endpoints"] += 1
            return
        try:
            try:
                status = await self._get(endpoint)
            except Retryable as first:
                phase.retried += 1
                self._note_refusal(phase, endpoint)
                phase.errors[f"retried: {first}"] += 1
                other = self._other(endpoint)
                if other is None:
                    raise
                try:
                    status = await self._get(other)
                except Retryable:
                    self._note_refusal(phase, other)
                    raise
        except (Retryable, HTTPError, OSError, TimeoutError) as exc:
            phase.failed += 1
            phase.errors[f"failed: {type(exc).__name__}: {exc}"[:80]] += 1
            return
        if status == 200:
            phase.ok += 1
            phase.latencies.append(time.perf_counter() - sent)
        else:
            phase.failed += 1
            phase.errors[f"failed: HTTP {status}"] += 1

    async def run(self) -> None:
        """Send at `rate` per second until `stop()`."""
        interval = 1.0 / self.rate
        start = time.perf_counter()
        k = 0
        while not self._stop.is_set():
            now = time.perf_counter()
            while start + k * interval <= now:
                phase = self.phases.setdefault(self.phase, Phase())
                phase.sent += 1
                task = asyncio.create_task(self._one(phase))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                k += 1
            await asyncio.sleep(max(0.0, start + k * interval - time.perf_counter()))

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        self._stop.set()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=REQUEST_TIMEOUT + 1)
        for task in self._inflight:
            task.cancel()
        if self._watch is not None:
            self._watch.close()
        for pool in self.pools.values():
            for conn in pool:
                with contextlib.suppress(Exception):
                    conn.close()
        self.pools.clear()
