"""Processes for the services bench: liveness, PSS, and the plain-exec baseline.

The baseline is what running the app 500 times costs without CloudLand: the
interpreter exec'd once per instance (`python serve_hello.py`, wsgiref serving
the same WSGI app on its own $PORT), one after another, each waited for until it
answers a GET.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import ROOT, median
from cloudland.runtime.ports import free_port

HELLO_SOURCE = ROOT / "examples" / "hello" / "app.py"
SERVE = '''\
"""The exec baseline: the hello app on wsgiref, on $PORT, until killed."""
import os
from wsgiref.simple_server import WSGIRequestHandler, make_server

from hello import app


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


make_server("127.0.0.1", int(os.environ["PORT"]), app, handler_class=Quiet).serve_forever()
'''


def write_app(where: Path) -> None:
    """examples/hello/app.py as `hello.py` (`python: {app: "hello:app"}`), and the
    baseline's server script beside it."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "hello.py").write_text(HELLO_SOURCE.read_text())
    (where / "serve_hello.py").write_text(SERVE)


# ---- processes ----------------------------------------------------------------------------


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time), or None if the pid is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def alive(pid: int, ticks: int | None = None) -> bool:
    """True while `pid` runs (not a zombie) and, given `ticks`, is still the same process."""
    now = start_ticks(pid)
    return now is not None and (ticks is None or ticks == now)


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return int(raw[raw.rindex(b")") + 2:].split()[1])


def pss_kib(pid: int) -> int | None:
    """Pss of one process from /proc/PID/smaps_rollup, in KiB (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def answers(port: int, deadline: float) -> bool:
    """GET / until it answers 200 (connection refused: not listening yet)."""
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
                head = b""
                while b"\r\n" not in head:
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    head += chunk
                if head.split(b" ", 2)[1:2] == [b"200"]:
                    return True
        except OSError:
            pass
        time.sleep(0.001)
    return False


@dataclass
class ExecBaseline:
    count: int = 0
    spawn_s: list[float] = field(default_factory=list)  # each exec until it answered
    total_s: float = float("nan")  # all of them, one after another
    pss_kib: float = float("nan")  # mean over the running instances
    stop_s: float = float("nan")  # SIGTERM to all, until all were reaped

    @property
    def per_exec_s(self) -> float:
        return median(self.spawn_s) if self.spawn_s else float("nan")


def exec_baseline(workdir: Path, count: int, *, timeout: float = 30.0) -> ExecBaseline:
    """`count` sequential execs of the app, each waited for until it answers; then the
    mean PSS while all run; then SIGTERM to all and wait."""
    out = ExecBaseline()
    procs: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDLAND")}
    deadline = time.perf_counter() + timeout
    used: set[int] = set()
    try:
        began = time.perf_counter()
        for _ in range(count):
            port = free_port()
            while port in used:
                port = free_port()
            used.add(port)
            start = time.perf_counter()
            procs.append(subprocess.Popen(
                [sys.executable, "serve_hello.py"], cwd=workdir, env={**env, "PORT": str(port)},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
            if not answers(port, deadline):
                raise RuntimeError(f"exec baseline: instance on port {port} never answered")
            out.spawn_s.append(time.perf_counter() - start)
        out.total_s = time.perf_counter() - began
        out.count = len(procs)
        sizes = [s for p in procs if (s := pss_kib(p.pid)) is not None]
        out.pss_kib = sum(sizes) / len(sizes) if sizes else float("nan")
        start = time.perf_counter()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(10)
        out.stop_s = time.perf_counter() - start
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait(5)
    return out
