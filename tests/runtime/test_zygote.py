"""The Python fast path: instances forked from a warm zygote (runtime/zygote.py).

Real zygotes, real forks, real HTTP: hello apps written to tmp_path, served on
ports found by binding port 0.  Every test kills what it started (instances by
process group, zygotes through close()) and checks /proc that it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import textwrap
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest

from cloudland.runtime.driver import InstanceSpec, StartError
from cloudland.runtime.ports import PortAllocator, free_port
from cloudland.runtime.zygote import ZygotePool

APPS = {
    "asgi_hello.py": '''
        import os
        with open(os.path.join(os.path.dirname(__file__), "imports.log"), "a") as f:
            f.write(f"asgi {os.getpid()}\\n")

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            print("asgi request", scope["path"], flush=True)
            body = f"asgi {os.environ.get('GREETING')} {os.environ['PORT']}".encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body})
    ''',
    "wsgi_hello.py": '''
        import os
        with open(os.path.join(os.path.dirname(__file__), "imports.log"), "a") as f:
            f.write(f"wsgi {os.getpid()}\\n")

        def app(environ, start_response):
            print("wsgi request", environ["PATH_INFO"], flush=True)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [f"wsgi {os.environ.get('GREETING')} {os.environ['PORT']}".encode()]
    ''',
    "exits_3.py": '''
        import os, sys
        print("cwd", os.getcwd(), "greeting", os.environ.get("GREETING"), flush=True)
        sys.exit(3)
    ''',
    "broken.py": '''
        import no_such_module_for_cloudland_tests
    ''',
    "not_an_app.py": '''
        app = 42
    ''',
}


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


def parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie is gone
    except FileNotFoundError:
        return True


async def wait_gone(pids: list[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(gone(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if not gone(p)]}"
        await asyncio.sleep(0.02)


async def get(port: int, timeout: float = 5.0) -> str:
    """GET / until it answers 200; returns the body."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            data = await reader.read()
            writer.close()
            head, _, body = data.partition(b"\r\n\r\n")
            if head.startswith(b"HTTP/1.1 200"):
                if b"transfer-encoding: chunked" in head.lower():
                    size, _, rest = body.partition(b"\r\n")
                    body = rest[:int(size, 16)]
                return body.decode()
        except OSError:
            pass
        assert time.monotonic() < deadline, f"port {port} did not answer in {timeout}s"
        await asyncio.sleep(0.02)


async def wait_for_file(path: Path, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}: {content!r}"
        await asyncio.sleep(0.02)


@pytest.fixture
def apps(tmp_path: Path) -> Path:
    root = tmp_path / "apps"
    root.mkdir()
    for name, source in APPS.items():
        (root / name).write_text(textwrap.dedent(source))
    return root


@contextlib.asynccontextmanager
async def pool_for(tmp_path: Path) -> AsyncIterator[tuple[ZygotePool, list[int]]]:
    """A pool and a list to put instance pids in; both are cleaned up and checked."""
    pool = ZygotePool(tmp_path / "run")
    pids: list[int] = []
    try:
        yield pool, pids
    finally:
        zygotes = pool.zygote_pids()
        pids += [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                 if parent(pid) in zygotes]  # also those a failing test did not get to see
        await pool.close()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        await wait_gone(pids + zygotes)


def spec(apps: Path, tmp_path: Path, name: str, python: dict[str, str], *,
         port: int | None = None, key: str | None = None) -> InstanceSpec:
    return InstanceSpec(id=name, log_dir=tmp_path / "logs" / name, python=python,
                        env={"GREETING": f"hi-{name}", "PATH": os.environ.get("PATH", "")},
                        working_dir=str(apps), port=port, zygote_key=key)


def test_asgi_and_wsgi_apps_are_imported_once_and_forked(apps: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with pool_for(tmp_path) as (pool, pids):
            for kind in ("asgi", "wsgi"):
                ports = {}
                for i in range(3):
                    port = free_port()
                    s = spec(apps, tmp_path, f"{kind}-{i}", {"app": f"{kind}_hello:app"},
                             port=port, key=kind)
                    pid, ticks = await pool.spawn(s)
                    pids.append(pid)
                    ports[s.id] = port
                    with open(f"/proc/{pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    assert int(fields[19]) == ticks  # field 22: start time
                    assert int(fields[1]) in pool.zygote_pids()  # its parent: the zygote
                    assert os.getsid(pid) == pid and os.getpgid(pid) == pid
                for name, port in ports.items():
                    assert await get(port) == f"{kind} hi-{name} {port}"
                    log_dir = tmp_path / "logs" / name
                    await wait_for_file(log_dir / "stdout.log", f"{kind} request /")
                    # WSGI instances run without a lifespan task; both on the lean server.
                    started = {"asgi": "Application startup complete", "wsgi": "(lean, forked"}
                    assert started[kind] in (log_dir / "stderr.log").read_text()
            assert len(pool.zygote_pids()) == 2
            imports = (apps / "imports.log").read_text().splitlines()
            assert sorted(line.split()[0] for line in imports) == ["asgi", "wsgi"]
            assert {int(line.split()[1]) for line in imports} == set(pool.zygote_pids())

    run(main())


def test_exit_status_of_killed_and_exiting_instances(apps: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with pool_for(tmp_path) as (pool, pids):
            port = free_port()
            pid, _ = await pool.spawn(spec(apps, tmp_path, "web", {"app": "asgi_hello:app"},
                                           port=port))
            pids.append(pid)
            await get(port)
            assert await pool.exit_status(pid, timeout=0.05) is None  # still running
            os.kill(pid, signal.SIGKILL)
            status = await pool.exit_status(pid)
            assert status is not None and status.signal == signal.SIGKILL
            assert status.exit_code is None and status.reason == "SignalKill"

            job = spec(apps, tmp_path, "job", {"module": "exits_3"})
            pid, _ = await pool.spawn(job)
            pids.append(pid)
            status = await pool.exit_status(pid)
            assert status is not None and status.exit_code == 3 and status.reason == "Error"
            assert (await wait_for_file(job.log_dir / "stdout.log", "greeting")).split() == [
                "cwd", str(apps), "greeting", "hi-job"]

    run(main())


def test_import_errors_and_bad_specs_are_start_errors(apps: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with pool_for(tmp_path) as (pool, _):
            cases = [({"app": "broken:app"}, "ImportError",
                      "No module named 'no_such_module_for_cloudland_tests'"),
                     ({"app": "asgi_hello:nope"}, "ImportError", "has no attribute 'nope'"),
                     ({"app": "not_an_app:app"}, "InvalidSpec", "is not callable (it is a int)"),
                     ({"app": "no_colon"}, "InvalidSpec", "is not 'module:attribute'"),
                     ({"module": "no_such_module_x"}, "ImportError", "No module named"),
                     ({"script": "missing.py"}, "CommandNotFound", "missing.py does not exist"),
                     ({"app": "asgi_hello:app", "server": "gunicorn"}, "InvalidSpec",
                      "python.server: 'gunicorn' is not one of lean, uvicorn")]
            for python, reason, message in cases:
                with pytest.raises(StartError) as caught:
                    await pool.spawn(spec(apps, tmp_path, "bad", python, port=free_port()))
                assert caught.value.reason == reason, caught.value
                assert message in caught.value.message
            assert pool.zygote_pids() == []  # a zygote that cannot serve does not stay

    run(main())


def test_port_in_use_is_reported_by_the_forked_child(apps: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with pool_for(tmp_path) as (pool, _):
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                with pytest.raises(StartError) as caught:
                    await pool.spawn(spec(apps, tmp_path, "web", {"app": "asgi_hello:app"},
                                          port=taken.getsockname()[1]))
            assert caught.value.reason == "PortInUse"

    run(main())


def test_instances_outlive_close_and_their_zygote(apps: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with pool_for(tmp_path) as (pool, pids):
            first, second = free_port(), free_port()
            pid, _ = await pool.spawn(spec(apps, tmp_path, "a", {"app": "wsgi_hello:app"},
                                           port=first))
            pids.append(pid)
            [zygote] = pool.zygote_pids()
            os.kill(zygote, signal.SIGKILL)  # the zygote dies: its instance runs on
            await wait_gone([zygote])
            assert await get(first)
            assert await pool.exit_status(pid) is None  # nobody can report it any more
            pid, _ = await pool.spawn(spec(apps, tmp_path, "b", {"app": "wsgi_hello:app"},
                                           port=second))  # a new zygote
            pids.append(pid)
            assert pool.zygote_pids() not in ([], [zygote])
            zygotes = pool.zygote_pids()
            await pool.close()
            await wait_gone(zygotes)
            assert await get(first) and await get(second)

    run(main())


def test_concurrent_spawns_pipeline_through_one_zygote(apps: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with pool_for(tmp_path) as (pool, pids):
            allocator = PortAllocator()  # 20 draws of port 0 can repeat; the allocator won't
            ports = [allocator.allocate() for _ in range(20)]
            specs = [spec(apps, tmp_path, f"web-{i}", {"app": "asgi_hello:app"}, port=port,
                          key="web") for i, port in enumerate(ports)]
            # Big requests fill the socket buffer, so that sends have to wait their turn.
            specs = [dataclasses.replace(s, env={**s.env, "BIG": "x" * 30_000}) for s in specs]
            started = await asyncio.gather(*(pool.spawn(s) for s in specs))
            pids.extend(pid for pid, _ in started)
            assert len(set(pids)) == 20 and len(pool.zygote_pids()) == 1
            bodies = await asyncio.gather(*(get(port) for port in ports))
            assert bodies == [f"asgi hi-web-{i} {port}" for i, port in enumerate(ports)]

    run(main())


def test_uvicorn_stays_selectable(apps: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with pool_for(tmp_path) as (pool, pids):
            for kind in ("asgi", "wsgi"):
                port = free_port()
                s = spec(apps, tmp_path, f"uv-{kind}", {"app": f"{kind}_hello:app",
                                                        "server": "uvicorn"}, port=port)
                pid, _ = await pool.spawn(s)
                pids.append(pid)
                assert await get(port) == f"{kind} hi-uv-{kind} {port}"
                await wait_for_file(s.log_dir / "stderr.log", "Uvicorn running")
                os.kill(pid, signal.SIGTERM)
                status = await pool.exit_status(pid)
                assert status is not None and status.signal == signal.SIGTERM

    run(main())


def test_lean_instances_stop_gracefully_and_log_requests(apps: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with pool_for(tmp_path) as (pool, pids):
            port = free_port()
            s = spec(apps, tmp_path, "lean", {"app": "wsgi_hello:app"}, port=port)
            pid, _ = await pool.spawn(s)
            pids.append(pid)
            assert await get(port) == f"wsgi hi-lean {port}"
            await wait_for_file(s.log_dir / "stdout.log", '"GET / HTTP/1.1" 200 OK')
            os.kill(pid, signal.SIGTERM)
            status = await pool.exit_status(pid)
            assert status is not None and status.signal == signal.SIGTERM

    run(main())


def test_allocated_ports_avoid_the_ephemeral_range() -> None:
    """Outgoing connections take their local ports from the kernel's ephemeral range,
    so instance ports drawn there could be taken between draw and bind."""
    from cloudland.runtime.ports import quiet_range

    low, high = quiet_range()
    allocator = PortAllocator()
    ports = [allocator.allocate() for _ in range(200)]
    assert len(set(ports)) == 200 and all(low <= p <= high for p in ports)
