"""The one test suite every runtime driver passes (after Nomad's driver harness).

A driver's test module subclasses `DriverSuite` and says how to build the
driver.  Tests start real processes; every one is stopped and destroyed in a
`finally`, waits are conditions with deadlines, and ports come from binding 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cloudland.runtime import procfs
from cloudland.runtime.driver import Driver, Handle, InstanceSpec, Limits, StartError
from cloudland.runtime.logs import read_lines
from cloudland.runtime.ports import free_port
from tests.conftest import wait_for

CGROUP_PARENT = "cloudland-test"

SERVER = """
import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""

# Ignores SIGTERM and leaves a grandchild in its own session (so not in the group).
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"],
    start_new_session=True)
print("grandchild", child.pid, flush=True)
time.sleep(300)
"""

WSGI_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from wsgi"]
"""

ASGI_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello from asgi"})
"""


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0,
                     what: str = "condition") -> Any:
    """conftest's wait_for, polled in a thread so the event loop keeps running."""
    return await asyncio.to_thread(wait_for, predicate, timeout, message=what)


async def http_get(port: int, path: str = "/", timeout: float = 10.0) -> bytes:
    """GET with urllib (in a thread), retrying until the server listens."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}{path}"

    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            return bytes(response.read())

    while True:
        try:
            return await asyncio.to_thread(get)
        except (ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


def gone(pid: int) -> bool:
    stat = procfs.read_stat(pid)
    return stat is None or stat.exited


def running_with(token: str) -> list[int]:
    """Live processes whose command line contains `token`."""
    found = []
    for pid in procfs.all_pids():
        with contextlib.suppress(OSError):
            if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes() and not gone(pid):
                found.append(pid)
    return found


def stdout_of(spec: InstanceSpec) -> str:
    return (spec.log_dir / "stdout.log").read_text()


class DriverSuite:
    """Subclasses set `make_driver`; each test runs its body on a fresh driver."""

    isolated = False  # the driver gives namespaces (sandbox)

    def make_driver(self, run_dir: Path) -> Driver:
        raise NotImplementedError

    # -- harness -------------------------------------------------------------------------
    def run(self, tmp_path: Path, body: Callable[[Driver], Awaitable[None]]) -> None:
        async def main() -> None:
            driver = self.make_driver(tmp_path / "run")
            try:
                await body(driver)
            finally:
                await driver.close()
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert not left, f"tasks left running: {left}"

        asyncio.run(main())

    def spec(self, tmp_path: Path, command: list[str] | None = None, **kw: Any) -> InstanceSpec:
        iid = f"t-{uuid.uuid4().hex[:10]}"
        return InstanceSpec(id=iid, log_dir=tmp_path / "logs" / iid, command=command, **kw)

    @contextlib.asynccontextmanager
    async def started(self, driver: Driver, spec: InstanceSpec) -> AsyncIterator[Handle]:
        handle = await driver.start(spec)
        try:
            yield handle
        finally:
            await driver.stop(handle, grace=0.2)
            await driver.destroy(handle)
            if handle.cgroup:
                assert not Path("/sys/fs/cgroup/unified", handle.cgroup).exists()
            if handle.extra.get("scratch"):  # the working dir the driver made for it
                assert not Path(handle.extra["scratch"]).exists()

    # -- running things ------------------------------------------------------------------
    def test_serves_http_on_port_with_env_and_working_dir(self, tmp_path: Path) -> None:
        (tmp_path / "server.py").write_text(SERVER)
        port = free_port()
        os.environ["CLOUDLAND_TEST_LEAK"] = "1"  # must not reach the instance

        async def body(driver: Driver) -> None:
            spec = self.spec(tmp_path, [sys.executable, "server.py"], port=port,
                             env={"GREETING": "hello"}, working_dir=str(tmp_path))
            async with self.started(driver, spec) as handle:
                seen = json.loads(await http_get(port))
                assert seen["cwd"] == str(tmp_path)
                assert seen["env"]["GREETING"] == "hello"
                assert seen["env"]["PORT"] == str(port)
                assert "CLOUDLAND_TEST_LEAK" not in seen["env"]
                assert {"PATH", "HOME", "LANG"} <= set(seen["env"])
                assert driver.inspect(handle).state == "running"
                await eventually(lambda: "listening" in stdout_of(spec), what="stdout")

        try:
            self.run(tmp_path, body)
        finally:
            del os.environ["CLOUDLAND_TEST_LEAK"]

    @pytest.mark.parametrize("kind", ["wsgi", "asgi"])
    def test_python_app_is_served(self, tmp_path: Path, kind: str) -> None:
        (tmp_path / f"{kind}app.py").write_text(WSGI_APP if kind == "wsgi" else ASGI_APP)
        port = free_port()

        async def body(driver: Driver) -> None:
            spec = self.spec(tmp_path, python={"app": f"{kind}app:app"}, port=port,
                             working_dir=str(tmp_path))
            async with self.started(driver, spec):
                assert await http_get(port) == f"hello from {kind}".encode()

        self.run(tmp_path, body)

    def test_logs_are_captured(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            spec = self.spec(tmp_path, ["sh", "-c", "echo to-out; echo to-err >&2"])
            async with self.started(driver, spec) as handle:
                status = await asyncio.wait_for(driver.wait(handle), 10)
                assert status.exit_code == 0 and status.reason == "Completed"
                assert (spec.log_dir / "stdout.log").read_text() == "to-out\n"
                assert (spec.log_dir / "stderr.log").read_text() == "to-err\n"
                lines = {(ln.stream, ln.text) for ln in read_lines(spec.log_dir)}
                assert lines == {("stdout", "to-out"), ("stderr", "to-err")}

        self.run(tmp_path, body)

    def test_wait_returns_the_exit_code(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            spec = self.spec(tmp_path, ["sh", "-c", "exit 3"])
            async with self.started(driver, spec) as handle:
                first, second = await asyncio.wait_for(
                    asyncio.gather(driver.wait(handle), driver.wait(handle)), 10)
                assert first == second
                assert first.exit_code == 3 and first.reason == "Error"
                state = driver.inspect(handle)
                assert state.state == "exited" and state.exit == first

        self.run(tmp_path, body)

    # -- stopping ------------------------------------------------------------------------
    def test_stop_is_graceful_first(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            spec = self.spec(tmp_path, [sys.executable, "-c",
                                        "import signal, sys, time\n"
                                        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
                                        "print('up', flush=True)\n"
                                        "time.sleep(300)"])
            async with self.started(driver, spec) as handle:
                await eventually(lambda: "up" in stdout_of(spec), what="the app to start")
                status = await driver.stop(handle, grace=10)
                assert status is not None and status.exit_code == 7
                assert await driver.stop(handle, grace=0.1) == status  # idempotent

        self.run(tmp_path, body)

    def test_stop_kills_after_grace_and_takes_the_whole_tree(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            spec = self.spec(tmp_path, [sys.executable, "-c", STUBBORN])
            async with self.started(driver, spec) as handle:
                line = await eventually(lambda: "grandchild" in stdout_of(spec),
                                        what="the grandchild")
                assert line
                tree = self._tree(handle.pid)
                assert len(tree) >= 2, tree
                started = time.monotonic()
                status = await driver.stop(handle, grace=0.3)
                assert time.monotonic() - started >= 0.3
                assert status is not None and status.signal == signal.SIGKILL
                assert not status.oom_killed and status.reason == "SignalKill"
                assert gone(handle.pid)
                if not driver.capabilities().cgroups:
                    for pid in tree:  # it escaped the group kill, as expected here
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    pytest.skip("no writable cgroup here: a detached grandchild escapes "
                                "process-group kills")
                await eventually(lambda: all(gone(p) for p in tree), timeout=5,
                                 what=f"the whole tree {tree} to be gone")

        self.run(tmp_path, body)

    @staticmethod
    def _tree(pid: int) -> list[int]:
        """pid and its descendants, from /proc (works across pid namespaces)."""
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            for task in Path(f"/proc/{p}/task").glob("*/children"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in task.read_text().split()]
        return out

    def test_stop_of_an_exited_instance_is_fine(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            spec = self.spec(tmp_path, ["true"])
            async with self.started(driver, spec) as handle:
                await asyncio.wait_for(driver.wait(handle), 10)
                status = await driver.stop(handle, grace=0.1)
                assert status is not None and status.exit_code == 0

        self.run(tmp_path, body)

    def test_a_restart_with_the_same_id_starts_clean(self, tmp_path: Path) -> None:
        token = f"300.{uuid.uuid4().int % 10**8:08d}"  # finds the leftover in /proc

        async def body(driver: Driver) -> None:
            first = self.spec(tmp_path, ["sh", "-c", f"sleep {token} & echo started"])
            handle = await driver.start(first)
            try:
                assert (await asyncio.wait_for(driver.wait(handle), 10)).exit_code == 0
                if not self.isolated:  # (a pid namespace dies with its first process)
                    assert running_with(token), "the leftover should outlive its parent"
                second = replace(first, log_dir=tmp_path / "logs" / f"{first.id}-again",
                                 command=["sleep", "300"])
                async with self.started(driver, second):
                    assert not running_with(token)
                    with pytest.raises(StartError) as err:
                        await driver.start(second)
                    assert "already running" in err.value.message
            finally:
                await driver.stop(handle, grace=0.1)
                await driver.destroy(handle)

        self.run(tmp_path, body)

    # -- restart of CloudLand ------------------------------------------------------------
    def test_recover_reattaches_from_a_new_driver(self, tmp_path: Path) -> None:
        async def body(first: Driver) -> None:
            spec = self.spec(tmp_path, ["sleep", "300"])
            handle = await first.start(spec)
            second = self.make_driver(tmp_path / "run")
            try:
                await first.close()  # CloudLand "restarts": the old driver is gone
                persisted = Handle.from_dict(json.loads(json.dumps(handle.to_dict())))
                assert await second.recover(persisted)
                assert second.inspect(persisted).state == "running"
                waiter = asyncio.ensure_future(second.wait(persisted))
                await asyncio.sleep(0)
                assert not waiter.done()
                os.kill(handle.pid, signal.SIGKILL)  # dies on its own, not through stop()
                status = await asyncio.wait_for(waiter, 10)
                assert status.signal == signal.SIGKILL or status.exit_code is None
                assert not await second.recover(persisted)
            finally:
                await second.stop(handle, grace=0.1)
                await second.destroy(handle)
                await second.close()

        self.run(tmp_path, body)

    def test_recover_refuses_a_reused_pid(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            spec = self.spec(tmp_path, ["sleep", "300"])
            async with self.started(driver, spec) as handle:
                fake = Handle.from_dict({**handle.to_dict(),
                                         "start_ticks": handle.start_ticks + 1})
                other = self.make_driver(tmp_path / "run")
                try:
                    assert not await other.recover(fake)
                    assert other.inspect(fake).state == "exited"
                finally:
                    await other.close()
                assert driver.inspect(handle).state == "running"

        self.run(tmp_path, body)

    # -- bad input -----------------------------------------------------------------------
    def test_command_not_found(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            with pytest.raises(StartError) as err:
                await driver.start(self.spec(tmp_path, ["nginxx", "-g", "daemon off;"]))
            assert err.value.reason == "CommandNotFound"
            assert "'nginxx' not found on PATH" in err.value.message
            assert err.value.hint

        self.run(tmp_path, body)

    def test_port_in_use(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            with socket.socket() as holder:
                holder.bind(("127.0.0.1", 0))
                holder.listen()
                port = holder.getsockname()[1]
                with pytest.raises(StartError) as err:
                    await driver.start(self.spec(tmp_path, ["sleep", "1"], port=port))
            assert err.value.reason == "PortInUse"
            assert str(port) in err.value.message

        self.run(tmp_path, body)

    def test_missing_working_dir(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            with pytest.raises(StartError) as err:
                await driver.start(self.spec(tmp_path, ["true"],
                                             working_dir=str(tmp_path / "nope")))
            assert err.value.reason == "WorkingDirNotFound"
            assert "nope" in err.value.message

        self.run(tmp_path, body)

    # -- resources -----------------------------------------------------------------------
    def test_memory_limit_exceeded_is_oom_killed(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            if not driver.capabilities().memory_limit:
                pytest.skip(f"memory cgroups not writable: {driver.capabilities().note}")
            spec = self.spec(tmp_path, [sys.executable, "-c", "x = b'x' * (256 << 20)"],
                             limits=Limits(memory_bytes=64 << 20))
            async with self.started(driver, spec) as handle:
                status = await asyncio.wait_for(driver.wait(handle), 20)
                assert status.oom_killed, status
                assert status.reason == "OOMKilled"
                assert "64 MiB" in status.message

        self.run(tmp_path, body)

    def test_inspect_reports_cpu_and_memory(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            spec = self.spec(tmp_path, [sys.executable, "-c",
                                        "import time\n"
                                        "x = b'x' * (32 << 20)\n"
                                        "end = time.process_time() + 0.2\n"
                                        "while time.process_time() < end: pass\n"
                                        "print('busy done', flush=True)\n"
                                        "time.sleep(300)"])
            async with self.started(driver, spec) as handle:
                await eventually(lambda: "busy done" in stdout_of(spec), what="the busy loop")
                state = driver.inspect(handle)
                assert state.state == "running" and state.pid == handle.pid
                assert state.cpu_seconds is not None and state.cpu_seconds >= 0.15
                assert state.memory_bytes is not None and state.memory_bytes >= 30 << 20

        self.run(tmp_path, body)
