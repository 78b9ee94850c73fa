"""The zygote: one Python process that imported an app once and forks its instances.

`ZygotePool` (runtime/zygote.py) starts it as `python LAUNCH... FD CONFIG` in its
own session, with the instance environment (minus PORT) and the working
directory of the Service.  It imports the app (or, for a module or script, the
installed libraries it imports), `gc.freeze()`s, answers `ready`, then serves
spawn requests on the SOCK_SEQPACKET socket FD until the pool closes it.  Each
spawn is a bare `os.fork()`; the child turns itself into the instance
(`_become_instance`) and runs it, so per instance there is no exec, no import and
as little private memory as CPython allows (~3.5 MiB for an idle uvicorn app; most
of it is pages the child's own reference counting copies).  The zygote stays
single-threaded, is the parent of every instance it forked, reaps them and reports
their wait status.  The child, not the zygote, reports that it is set up (in its
session, cgroups and logs, and for an app listening), or why not.

It imports only the standard library (and runtime/pyserve.py, with uvicorn, for
`python.app`), so a zygote costs no more than the app needs.

Protocol: one message per SEQPACKET record; hot ones binary (see "serving" below),
the rest one JSON object.
  pool -> zygote   SPAWN + id + {"log_dir", "env", "working_dir", "port", "cgroup_procs"}
  zygote -> pool   {"op": "ready", "pid", "threads", "ms"} once, or
                   {"op": "error", "reason", "message", "detail"} and exit;
                   FORKED (id, pid) | FORK_FAILED + id + message;
                   EXITED (pid, raw wait status) for every instance it reaps
  instance -> pool {"op": "setup", "id", "pid", "start_ticks", "ok": true} once set up,
                   or {..., "ok": false, "reason", "message"} and exit(SETUP_FAILED)
EOF on the socket stops the zygote; its instances keep running.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import gc
import importlib
import importlib.util
import json
import os
import runpy
import select
import signal
import socket
import struct
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudland.runtime.pyserve import App

# `-P`: the working directory is not on sys.path until load() puts it there, so an app
# directory cannot shadow cloudland itself.
LAUNCH = ["-P", "-c", "import sys; from cloudland.runtime.zygote_main import main; "
          "sys.exit(main(sys.argv))"]
SETUP_FAILED = 125  # exit code of an instance that failed before running app code
MAX_RECORD = 1 << 18  # above the largest record a unix SEQPACKET socket takes by default
MAX_TEXT = 16_000


class Refused(Exception):
    """A zygote cannot serve this spec; `reason` becomes a StartError reason."""

    def __init__(self, reason: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.reason, self.message, self.detail = reason, message, detail


def last_line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


class Main:
    """`python.module` or `python.script`: run as `__main__` in the instance, as
    `python -m module` / `python path` would."""

    def __init__(self, spec: dict[str, str], working_dir: str) -> None:
        self.module = spec.get("module")
        self.script = spec.get("script")
        origin: str | None
        if self.module:
            try:
                found = importlib.util.find_spec(self.module)
            except BaseException as exc:
                raise Refused("ImportError", f"python.module {self.module!r}: "
                              f"{last_line(exc)}", traceback.format_exc()[-MAX_TEXT:]) from None
            if found is None:
                raise Refused("ImportError", f"python.module {self.module!r}: ModuleNotFoundError:"
                              f" No module named {self.module!r}")
            origin = found.origin
            local = [working_dir]
        elif self.script:
            self.script = os.path.join(working_dir, self.script)
            if not os.path.exists(self.script):
                raise Refused("CommandNotFound", f"python.script: {self.script} does not exist")
            origin = self.script
            # `python path/app.py` puts the script's directory first on sys.path.
            sys.path[0] = os.path.dirname(os.path.abspath(self.script))
            local = [sys.path[0], working_dir]
        else:
            raise Refused("InvalidSpec", "python: expected one of 'app', 'module' or 'script'")
        if spec.get("preload", "libraries") != "none" and origin and origin.endswith(".py"):
            _preload_libraries(origin, local)

    host = None

    def run(self, listener: socket.socket | None) -> None:
        if self.module:
            sys.argv = [self.module]
            runpy.run_module(self.module, run_name="__main__", alter_sys=True)
        else:
            assert self.script is not None
            sys.argv = [self.script]  # run_path sets argv[0] to the path anyway
            runpy.run_path(self.script, run_name="__main__")


def _preload_libraries(path: str, local_dirs: list[str]) -> None:
    """Import the installed (non-local) modules a module or script imports at top level,
    so instances find them already loaded.  Local modules are left to each instance:
    they may read per-instance state (PORT) at import time."""
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return  # the instance will report it
    names: list[str] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.If | ast.Try):
            todo += [*node.body, *node.orelse, *getattr(node, "finalbody", [])]
            todo += [s for h in getattr(node, "handlers", []) for s in h.body]
    roots = tuple(os.path.abspath(d) + os.sep for d in local_dirs)
    for name in dict.fromkeys(names):
        if name == "__future__" or name.partition(".")[0] == "__main__":
            continue
        try:
            top = importlib.util.find_spec(name.partition(".")[0])
            if top is None or not top.origin or os.path.abspath(top.origin).startswith(roots):
                continue
            importlib.import_module(name)
        except Exception:  # a library that fails here fails again, visibly, in the instance
            continue


def load(config: dict[str, Any]) -> App | Main:
    spec = config.get("python") or {}
    working_dir = config.get("working_dir") or os.getcwd()
    sys.path.insert(0, working_dir)  # as `python -m` and `uvicorn` have it
    if "app" in spec:
        from cloudland.runtime.pyserve import App

        return App(spec)
    return Main(spec, working_dir)


# -- serving (the zygote's loop) -------------------------------------------------------------
# Between two forks the zygote touches as little memory as it can: after a fork every
# page it writes is a copy-on-write fault (~3 us each here).  With JSON and a /proc read
# per spawn it took ~190 faults and 1.2 ms of CPU per fork; now ~57 and 0.75 ms.  So the
# hot records are a tag byte and fixed fields: the zygote copies the request id into a
# preallocated reply and never parses the request (the child does), and it keeps its
# garbage collector off (the child turns it back on).

SPAWN = b"S"  # + u64 id + the instance as JSON                     pool -> zygote
FORKED = struct.Struct("=cQi")  # b"F", id, pid                      zygote -> pool
EXITED = struct.Struct("=cii")  # b"X", pid, raw wait status         zygote -> pool
FORK_FAILED = b"E"  # + u64 id + message                            zygote -> pool
REQUEST_ID = struct.Struct("=Q")  # what follows the tag in S, F and E


def _send(ctl: socket.socket, msg: dict[str, Any]) -> None:
    ctl.send(json.dumps(msg).encode())


def _own_start_ticks() -> int:
    with open("/proc/self/stat", "rb") as f:
        raw = f.read()
    return int(raw[raw.rindex(b")") + 2:].split()[19])  # field 22 of proc(5)


class Zygote:
    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def serve(self) -> bytes | None:
        """Fork instances until EOF (returns None); in a child, returns its spawn request."""
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        poller = select.poll()
        poller.register(self.ctl, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        request = bytearray(MAX_RECORD)
        view = memoryview(request)
        reply = bytearray(FORKED.size)
        reply[0:1] = b"F"
        while True:
            for fd, _ in poller.poll():
                if fd == self.wake_r:
                    self.reap()
                    continue
                size = self.ctl.recv_into(request)
                if not size:
                    self.reap()
                    return None
                if view[0:1] != SPAWN:
                    continue
                try:
                    pid = os.fork()
                except OSError as exc:
                    self.ctl.send(FORK_FAILED + view[1:9] + f"fork: {exc.strerror}".encode())
                    continue
                if pid == 0:
                    return bytes(view[:size])
                reply[1:9] = view[1:9]
                struct.pack_into("=i", reply, 9, pid)
                self.ctl.send(reply)

    def reap(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 512):
                pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            with contextlib.suppress(OSError):  # the pool is gone: keep reaping
                self.ctl.send(EXITED.pack(b"X", pid, status))

    def close_in_child(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self.wake_r)
        os.close(self.wake_w)


# -- becoming an instance (in the forked child) ---------------------------------------------

def _become_instance(target: App | Main, inst: dict[str, Any]) -> socket.socket | None:
    """Everything between fork and app code; raises Refused on failure."""
    os.setsid()
    pid = os.getpid()
    for path in inst.get("cgroup_procs") or ():
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, str(pid).encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise Refused("CgroupFailed", f"cannot join cgroup ({path}): {exc.strerror}") from None
    log_dir = inst["log_dir"]
    try:
        os.makedirs(log_dir, exist_ok=True)
        for target_fd, name in ((1, "stdout.log"), (2, "stderr.log")):
            fd = os.open(os.path.join(log_dir, name),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.dup2(fd, target_fd)
            os.close(fd)
    except OSError as exc:
        raise Refused("LogsUnavailable", f"cannot open logs in {log_dir}: {exc}") from None
    env = dict(inst.get("env") or {})
    if inst.get("port") is not None:
        env["PORT"] = str(inst["port"])
    os.environ.clear()
    os.environ.update(env)
    if inst.get("working_dir"):
        try:
            os.chdir(inst["working_dir"])
        except OSError as exc:
            raise Refused("InvalidSpec", f"working_dir {inst['working_dir']}: {exc.strerror}"
                          ) from None
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # what a fresh interpreter has
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    if env.get("PYTHONUNBUFFERED"):  # too late for the interpreter to read: lines, then
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if target.host is None:
        return None  # a module or script binds its own port, if any
    if inst.get("port") is None:
        raise Refused("InvalidSpec", "python.app needs a port to serve on")
    # Bound and listening before the event loop exists: clients queue in the backlog
    # from here on, and a port in use is reported as a start error, not a crash.
    listener = socket.socket(socket.AF_INET6 if ":" in target.host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((target.host, int(inst["port"])))
    except OSError as exc:
        listener.close()
        reason = "PortInUse" if exc.errno == errno.EADDRINUSE else "BindFailed"
        raise Refused(reason, f"cannot listen on {target.host}:{inst['port']}: {exc.strerror}"
                      ) from None
    listener.listen(2048)
    return listener


def run_instance(target: App | Main, request: bytes, ctl: socket.socket) -> None:
    gc.enable()
    req_id = REQUEST_ID.unpack_from(request, 1)[0]
    reply: dict[str, Any] = {"op": "setup", "id": req_id, "pid": os.getpid(),
                             "start_ticks": _own_start_ticks()}
    try:
        listener = _become_instance(target, json.loads(request[1 + REQUEST_ID.size:]))
    except Refused as exc:
        try:
            _send(ctl, {**reply, "ok": False, "reason": exc.reason, "message": exc.message})
            print(f"cloudland: instance setup failed: {exc.reason}: {exc.message}",
                  file=sys.stderr, flush=True)
        finally:
            os._exit(SETUP_FAILED)
    _send(ctl, {**reply, "ok": True})
    ctl.close()
    target.run(listener)


def main(argv: list[str]) -> int:
    gc.disable()  # no collections while importing: fewer holes for instances to copy
    started = time.monotonic()
    ctl = socket.socket(fileno=int(argv[1]))
    try:
        target = load(json.loads(argv[2]))
    except Refused as exc:
        print(f"cloudland zygote: {exc.reason}: {exc.message}\n{exc.detail}", file=sys.stderr)
        _send(ctl, {"op": "error", "reason": exc.reason, "message": exc.message[:MAX_TEXT],
                    "detail": exc.detail})
        return 1
    gc.freeze()  # and no collections in the zygote: they would write to what it shares
    zygote = Zygote(ctl)
    _send(ctl, {"op": "ready", "pid": os.getpid(), "threads": len(os.listdir("/proc/self/task")),
                "ms": round((time.monotonic() - started) * 1000, 1)})
    request = zygote.serve()
    if request is None:
        return 0
    zygote.close_in_child()
    del zygote
    run_instance(target, request, ctl)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
