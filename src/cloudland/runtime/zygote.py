"""The Python fast path: instances forked from a warm per-Service zygote.

Owned by the runtime; the process driver calls `ZygotePool.spawn` for specs with
`python: {app | module | script}` instead of exec'ing an interpreter.  One zygote
per key (the spec's `zygote_key` plus what changes imports) imports the app once
(runtime/zygote_main.py) and forks instances of it.  Measured here (2 cores) for
a hello-world app: ~3 ms from `spawn` to a set-up, listening instance and ~4 MiB
PSS each, against ~30 ms and ~9 MiB for an exec; 500 spawned at once all answer
HTTP within ~1.6 s of the first spawn.

The zygote is the parent of its instances, so it reaps them and reports their
wait status here (`exit_status`).  Instances live in their own sessions: they
outlive their zygote, `close()` and CloudLand itself; the driver manages them by
pid/pgid/cgroup like any other process.  Talks to each zygote over a
SOCK_SEQPACKET socketpair, one message per record (protocol in zygote_main).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import signal
import socket
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudland.runtime import zygote_main
from cloudland.runtime.driver import ExitStatus, InstanceSpec, StartError

_MAX_REQUEST = 200_000  # a unix SEQPACKET record must fit the default socket buffer (208 KiB)
_IMPORT_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONNOUSERSITE",
               "PYTHONUSERBASE", "VIRTUAL_ENV")


def zygote_key(spec: InstanceSpec, python: str = sys.executable) -> str:
    """Instances with equal keys share a zygote.  An explicit `spec.zygote_key` (one per
    Service template, set by the controller) decides, qualified only by the app itself
    so that a reused key never serves another app; without one, everything that decides
    what gets imported: the app, the working directory, PYTHONPATH and the like.

    The first spec of a key starts the zygote: its env (minus PORT) is what the app
    sees at import time; each instance then gets its own env and working directory."""
    app = hashlib.sha256(json.dumps([spec.python, python], sort_keys=True).encode())
    if spec.zygote_key:
        return f"{spec.zygote_key}@{app.hexdigest()[:12]}"
    imports = {k: v for k, v in spec.env.items() if k in _IMPORT_ENV}
    app.update(json.dumps([spec.working_dir, imports], sort_keys=True).encode())
    return app.hexdigest()[:16]


def exit_status_of(status: int, message: str = "") -> ExitStatus:
    """An ExitStatus from a raw wait status."""
    if os.WIFSIGNALED(status):
        return ExitStatus(exit_code=None, signal=os.WTERMSIG(status), message=message)
    return ExitStatus(exit_code=os.waitstatus_to_exitcode(status), message=message)


def _seen(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # marks it retrieved: no "Future exception was never retrieved"


@dataclass
class _Spawn:
    forked: asyncio.Future[int]  # the pid, from the zygote
    setup: asyncio.Future[int]  # start ticks, from the instance once it is set up
    pid: int | None = None
    abandoned: bool = False


@dataclass
class _Zygote:
    key: str
    proc: asyncio.subprocess.Process
    sock: socket.socket
    log: Path
    pending: dict[int, _Spawn] = field(default_factory=dict)
    instances: set[int] = field(default_factory=set)  # forked and not yet reported exited
    reader: asyncio.Task[None] | None = None
    # asyncio allows one sock_sendall per socket at a time (a second one replaces the
    # first's writer callback, which then never completes).
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)
    alive: bool = True
    next_id: int = 0


class ZygotePool:
    def __init__(self, run_dir: Path, *, python: str = sys.executable,
                 start_timeout: float = 60.0, spawn_timeout: float = 10.0,
                 keep_exits: int = 4096) -> None:
        self.run_dir = Path(run_dir)
        self.python = python
        self.start_timeout = start_timeout
        self.spawn_timeout = spawn_timeout
        self._keep_exits = keep_exits
        self._zygotes: dict[str, _Zygote] = {}
        self._starting: dict[str, asyncio.Task[_Zygote]] = {}
        self._owner: dict[int, _Zygote] = {}  # live instance pid -> its zygote
        self._exits: OrderedDict[int, ExitStatus] = OrderedDict()
        self._waiters: dict[int, list[asyncio.Future[ExitStatus | None]]] = {}

    # -- the interface the process driver uses ------------------------------------------

    def key_for(self, spec: InstanceSpec) -> str:
        return zygote_key(spec, self.python)

    async def spawn(self, spec: InstanceSpec, *,
                    cgroup_procs: Sequence[Path] = ()) -> tuple[int, int]:
        """Fork one instance of `spec.python`; returns (pid, start_ticks) once the
        instance is in its session, cgroups, logs and (for apps) listening on its port.
        Raises StartError (ImportError, InvalidSpec, CommandNotFound, PortInUse, ...)."""
        if not spec.python:
            raise StartError("InvalidSpec", f"instance {spec.id}: no python spec to fork")
        if "app" in spec.python and spec.port is None:
            raise StartError("InvalidSpec", f"instance {spec.id}: python.app needs a port")
        zygote = await self._zygote(spec)
        zygote.next_id += 1
        req_id = zygote.next_id
        loop = asyncio.get_running_loop()
        pending = _Spawn(loop.create_future(), loop.create_future())
        for fut in (pending.forked, pending.setup):  # failures are raised by the await below,
            fut.add_done_callback(_seen)  # or matter to nobody once the spawn was given up
        zygote.pending[req_id] = pending
        request = zygote_main.SPAWN + zygote_main.REQUEST_ID.pack(req_id) + json.dumps({
            "log_dir": str(spec.log_dir), "env": spec.env, "working_dir": spec.working_dir,
            "port": spec.port, "cgroup_procs": [str(p) for p in cgroup_procs]}).encode()
        if len(request) > _MAX_REQUEST:
            del zygote.pending[req_id]
            raise StartError("InvalidSpec", f"instance {spec.id}: env, paths and cgroups take "
                             f"{len(request)} bytes; at most {_MAX_REQUEST} fit in a spawn")
        try:
            async with asyncio.timeout(self.spawn_timeout):
                async with zygote.sending:
                    await loop.sock_sendall(zygote.sock, request)
                pid = await pending.forked
                ticks = await pending.setup
        except TimeoutError:
            raise StartError("StartTimeout", f"instance {spec.id}: the zygote did not fork it "
                             f"within {self.spawn_timeout}s", hint=f"see {zygote.log}") from None
        finally:
            if pending.setup.done() or (pending.forked.done() and pending.pid is None):
                zygote.pending.pop(req_id, None)  # started, refused, or never forked
            else:
                pending.abandoned = True  # cancelled or timed out: nobody will own it
                self._abandon(zygote, req_id)
        return pid, ticks

    async def exit_status(self, pid: int, timeout: float | None = 5.0) -> ExitStatus | None:
        """The exit of an instance forked here, waiting up to `timeout` (None: no limit);
        None if it is still running, unknown, or its zygote died first."""
        if pid in self._exits:
            return self._exits[pid]
        if pid not in self._owner:
            return None
        waiter: asyncio.Future[ExitStatus | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(pid, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(pid, [])
            if waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[pid]

    def tracks(self, pid: int) -> bool:
        """True while a live zygote will report this pid's exit."""
        return pid in self._owner

    def zygote_pids(self) -> list[int]:
        return [z.proc.pid for z in self._zygotes.values() if z.alive]

    async def retire(self, key: str) -> None:
        """Stop the zygote for `key` (e.g. its Service was deleted or its template
        changed); its instances keep running."""
        task = self._starting.pop(key, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        zygote = self._zygotes.pop(key, None)
        if zygote is not None:
            await self._stop(zygote)

    async def retire_key(self, zygote_key: str) -> None:
        """Retire every zygote started for an explicit `spec.zygote_key`."""
        for key in [*self._zygotes, *self._starting]:
            if key.startswith(zygote_key + "@"):
                await self.retire(key)

    async def close(self) -> None:
        """Stop every zygote; the instances they forked keep running."""
        for key in list(self._starting) + list(self._zygotes):
            await self.retire(key)

    # -- zygotes ------------------------------------------------------------------------

    async def _zygote(self, spec: InstanceSpec) -> _Zygote:
        key = self.key_for(spec)
        zygote = self._zygotes.get(key)
        if zygote is not None and zygote.alive:
            return zygote
        task = self._starting.get(key)
        if task is None:
            task = asyncio.create_task(self._start(key, spec))
            self._starting[key] = task
            task.add_done_callback(lambda t: self._started(key, t))
        return await asyncio.shield(task)

    def _started(self, key: str, task: asyncio.Task[_Zygote]) -> None:
        if self._starting.get(key) is task:
            del self._starting[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter has already seen it

    async def _start(self, key: str, spec: InstanceSpec) -> _Zygote:
        assert spec.python is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = self.run_dir / f"zygote-{hashlib.sha256(key.encode()).hexdigest()[:12]}.log"
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in spec.env.items() if k != "PORT"}
        config = {"python": spec.python, "working_dir": spec.working_dir, "key": key}
        try:
            with open(log, "ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    self.python, *zygote_main.LAUNCH, str(theirs.fileno()), json.dumps(config),
                    stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                    pass_fds=(theirs.fileno(),), start_new_session=True, env=env,
                    cwd=spec.working_dir)
        except OSError as exc:
            ours.close()
            if isinstance(exc, FileNotFoundError) and exc.filename == self.python:
                raise StartError("CommandNotFound", f"cannot start a zygote: {self.python} "
                                 "does not exist") from None
            raise StartError("ZygoteFailed" if exc.errno not in (errno.ENOENT, errno.E2BIG)
                             else "InvalidSpec", f"cannot start a zygote: {exc.strerror} "
                             f"(working_dir {spec.working_dir}, env of {len(spec.env)} "
                             "variables)") from None
        finally:
            theirs.close()
        ours.setblocking(False)
        zygote = _Zygote(key, proc, ours, log)
        try:
            async with asyncio.timeout(self.start_timeout):
                first = await asyncio.get_running_loop().sock_recv(ours, zygote_main.MAX_RECORD)
        except BaseException as exc:
            await self._stop(zygote)
            if isinstance(exc, TimeoutError):
                raise StartError("StartTimeout", f"the app took over {self.start_timeout}s to "
                                 "import in its zygote", hint=f"see {log}") from None
            raise
        msg = json.loads(first) if first else {}
        if msg.get("op") != "ready":
            await self._stop(zygote)
            if msg.get("op") == "error":
                raise StartError(msg["reason"], msg["message"], hint=f"traceback in {log}")
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StartError("ZygoteFailed", f"the zygote exited before it was ready: {tail}",
                             hint=f"see {log}")
        if msg.get("threads", 1) > 1:
            with open(log, "a") as out:
                print(f"cloudland: warning: the app started {msg['threads'] - 1} thread(s) at "
                      "import; forking a threaded process is unsafe", file=out)
        zygote.reader = asyncio.create_task(self._read(zygote))
        self._zygotes[key] = zygote
        return zygote

    async def _read(self, zygote: _Zygote) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(zygote.sock, zygote_main.MAX_RECORD)
                if not data:
                    break
                self._handle(zygote, data)
        except (OSError, ValueError):
            pass
        finally:
            self._lost(zygote)

    def _handle(self, zygote: _Zygote, data: bytes) -> None:
        tag = data[:1]
        if tag == b"X":
            _, pid, status = zygote_main.EXITED.unpack(data)
            self._exited(zygote, pid, exit_status_of(status))
            return
        if tag == b"F":
            _, req_id, pid = zygote_main.FORKED.unpack(data)
            msg: dict[str, Any] = {"op": "forked", "pid": pid}
        elif tag == zygote_main.FORK_FAILED:
            req_id = zygote_main.REQUEST_ID.unpack_from(data, 1)[0]
            msg = {"op": "fork_failed", "message": data[9:].decode(errors="replace")}
        else:
            msg = json.loads(data)  # {"op": "setup", ...} from an instance
            req_id = msg.get("id", 0)
        pending = zygote.pending.get(req_id)
        if pending is None:
            return
        if msg["op"] == "forked":
            pid = pending.pid = msg["pid"]
            zygote.instances.add(pid)
            self._owner[pid] = zygote
            self._exits.pop(pid, None)  # a reused pid
            if not pending.forked.done():
                pending.forked.set_result(pid)
        elif msg["op"] == "fork_failed" and not pending.forked.done():
            pending.forked.set_exception(StartError("ForkFailed", msg["message"]))
        elif msg["op"] == "setup" and not pending.setup.done():
            if msg.get("ok"):
                pending.setup.set_result(int(msg["start_ticks"]))
            else:
                pending.setup.set_exception(StartError(msg["reason"], msg["message"]))
        if pending.abandoned:
            self._abandon(zygote, req_id)

    def _exited(self, zygote: _Zygote, pid: int, status: ExitStatus) -> None:
        zygote.instances.discard(pid)
        self._owner.pop(pid, None)
        self._exits[pid] = status
        while len(self._exits) > self._keep_exits:
            self._exits.popitem(last=False)
        for waiter in self._waiters.pop(pid, []):
            if not waiter.done():
                waiter.set_result(status)

    def _abandon(self, zygote: _Zygote, req_id: int) -> None:
        """A spawn nobody waits for any more: kill the instance once it is forked."""
        pending = zygote.pending[req_id]
        if pending.pid is not None:
            self._kill(pending.pid)
        if pending.pid is not None or pending.forked.done():
            del zygote.pending[req_id]

    @staticmethod
    def _kill(pid: int) -> None:
        """Kill an instance nobody owns: its group once it has its own session (it is
        still our zygote's child, unreaped, so the pid cannot have been reused)."""
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(OSError):
                kill(pid, signal.SIGKILL)

    def _lost(self, zygote: _Zygote) -> None:
        """The zygote is gone: its live instances run on, but nobody reports their exits."""
        zygote.alive = False
        if self._zygotes.get(zygote.key) is zygote:
            del self._zygotes[zygote.key]
        for pending in zygote.pending.values():
            if pending.pid is not None and not pending.setup.done():
                self._kill(pending.pid)  # its spawn fails: nobody would ever own it
            for fut in (pending.forked, pending.setup):
                if fut.done():
                    continue
                if pending.abandoned:
                    fut.cancel()  # nobody awaits it
                else:
                    fut.set_exception(StartError(
                        "ZygoteFailed", "the zygote exited during the spawn",
                        hint=f"see {zygote.log}"))
        zygote.pending.clear()
        for pid in zygote.instances:
            if self._owner.get(pid) is zygote:
                del self._owner[pid]
            for waiter in self._waiters.pop(pid, []):
                if not waiter.done():
                    waiter.set_result(None)
        zygote.instances.clear()

    async def _stop(self, zygote: _Zygote) -> None:
        # EOF tells the zygote to exit; only the zygote is killed if it does not, never
        # its group (an instance still in setup shares it for a few microseconds).
        if zygote.reader is not None:
            zygote.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await zygote.reader
        else:
            self._lost(zygote)
        zygote.sock.close()
        try:
            await asyncio.wait_for(zygote.proc.wait(), 2.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                zygote.proc.kill()
            await zygote.proc.wait()
