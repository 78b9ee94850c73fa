"""Serving a `python.app` (WSGI or ASGI) in zygote-forked instances.

By default on the lean server (runtime/leanhttp.py, ~0.8 MiB less PSS per instance
than uvicorn's startup and first request); `python: {server: uvicorn}` runs
uvicorn's Server instead (WebSockets, proxy-header-aware logging, its full HTTP).
Either way uvicorn's Config builds the app (interface adapters, proxy headers).

Used only inside a zygote (runtime/zygote_main.py): `App(...)` imports the app,
builds and loads the uvicorn config and rehearses the server once, all in the
zygote; `App.run(listener)` is all an instance does after fork.  WSGI apps are
called on the event loop (`runtime/wsgi.SyncWSGI`, one request at a time like a
sync worker; `python: {wsgi: threads}` keeps uvicorn's thread-pool adapter), so
both kinds share one HTTP implementation (httptools, keep-alive, pipelining).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from cloudland.runtime import leanhttp
from cloudland.runtime.wsgi import SyncWSGI, answer_lifespan
from cloudland.runtime.zygote_main import MAX_TEXT, Refused, last_line

try:
    import uvloop

    LOOP_FACTORY: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
    LOOP_FACTORY = None

INTERFACES = ("auto", "asgi3", "asgi2", "wsgi")
SERVERS = ("lean", "uvicorn")
DEFAULT_SERVER = "lean"


def import_app(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise Refused("InvalidSpec", f"python.app: {ref!r} is not 'module:attribute', "
                      "e.g. 'main:app'")
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # the app's own import-time code may raise anything
        raise Refused("ImportError", f"python.app {ref!r}: {last_line(exc)}",
                      traceback.format_exc()[-MAX_TEXT:]) from None
    app: Any = module
    for part in attr.split("."):
        if not hasattr(app, part):
            raise Refused("ImportError", f"python.app {ref!r}: module {module_name!r} "
                          f"({getattr(module, '__file__', '?')}) has no attribute {attr!r}")
        app = getattr(app, part)
    if not callable(app):
        raise Refused("InvalidSpec", f"python.app {ref!r} is not callable (it is a "
                      f"{type(app).__name__}), so not a WSGI or ASGI application")
    return app


def detect_interface(app: Any) -> str:
    """"wsgi" if the app takes (environ, start_response) and is not a coroutine
    function; otherwise "auto", and uvicorn tells ASGI 3 from ASGI 2."""
    if inspect.isclass(app):
        return "auto"
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else app.__call__
    if inspect.iscoroutinefunction(call):
        return "auto"
    try:
        params = inspect.signature(call).parameters.values()
    except (TypeError, ValueError):
        return "auto"
    required = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.default is p.empty]
    return "wsgi" if len(required) == 2 else "auto"


class App:
    """`python: {app: "module:attr"}`, and optionally interface (asgi3, asgi2, wsgi;
    detected), host (127.0.0.1), lifespan (auto, on, off), access_log ("false" to
    drop the access log), rehearse ("false" to skip the rehearsal), wsgi ("sync", the
    default, or "threads" for uvicorn's thread-pool adapter) and server ("lean", the
    default, or "uvicorn")."""

    def __init__(self, spec: dict[str, str]) -> None:
        app = import_app(spec["app"])
        self.interface = spec.get("interface") or detect_interface(app)
        if self.interface not in INTERFACES:
            raise Refused("InvalidSpec", f"python.interface: {self.interface!r} is not one of "
                          f"{', '.join(INTERFACES)}")
        self.server = spec.get("server") or DEFAULT_SERVER
        if self.server not in SERVERS:
            raise Refused("InvalidSpec", f"python.server: {self.server!r} is not one of "
                          f"{', '.join(SERVERS)}")
        self.ref = spec["app"]
        self.host = spec.get("host", "127.0.0.1")
        self.access_log = spec.get("access_log", "true") != 'false'
        served, interface, lifespan = app, self.interface, spec.get("lifespan", "auto")
        if self.interface == "wsgi" and spec.get("wsgi", "sync") == "sync":
            # No thread pool per instance, and no lifespan task: WSGI has no lifespan.
            served, interface, lifespan = SyncWSGI(app), "asgi3", spec.get("lifespan", "off")
        self.config = uvicorn.Config(served, host=self.host, port=0,
                                     interface=interface,  # type: ignore[arg-type]
                                     lifespan=lifespan,  # type: ignore[arg-type]
                                     access_log=self.access_log)
        self.config.load()
        self.lifespan = lifespan
        if spec.get("rehearse", "true") != "false":
            if self.server == "lean":
                rehearse_lean(self.host, self.interface == "wsgi")
            else:
                rehearse(self.host, self.interface)

    def run(self, listener: socket.socket | None) -> None:
        """Serve on an already listening socket until SIGTERM/SIGINT (in the instance)."""
        assert listener is not None
        sys.argv = [self.ref]
        if self.server == "lean":
            # uvicorn's loaded app (interface adapters, proxy headers) on the lean server.
            leanhttp.serve(self.config.loaded_app, listener, access_log=self.access_log,
                           lifespan=self.lifespan, loop_factory=LOOP_FACTORY)
            return
        self.config.port = listener.getsockname()[1]
        server = Server(self.config)
        with asyncio.Runner(loop_factory=LOOP_FACTORY) as runner:
            runner.run(server.serve(sockets=[listener]))


class Server(uvicorn.Server):
    """uvicorn's server, waking once a second instead of ten times (500 idle instances
    would otherwise keep a fifth of a core busy); SIGTERM/SIGINT wake it at once."""

    _wake: asyncio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # uvicorn says where it runs only when it bound the socket itself
            logging.getLogger("uvicorn.error").info(
                "Uvicorn running on http://%s:%d (forked from a zygote)", self.config.host,
                self.config.port)

    def stop(self) -> None:
        self.should_exit = True
        if self._wake is not None:
            self._wake.set()

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        while not await self.on_tick(0):  # counter 0: refresh the Date header every tick
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._wake is not None:  # in a signal handler: only the thread-safe call is safe
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_soon_threadsafe(self._wake.set)


# -- rehearsal -------------------------------------------------------------------------------
# CPython 3.11 writes into a code object the first times it runs (warm-up counters,
# then inline caches while it specializes), and every such write copies a page into
# the instance.  Running the server machinery in the zygote first, on a dummy app,
# leaves those pages written once, shared by every instance: ~0.5 MiB less each.

async def _dummy(scope: dict[str, Any], receive: Callable[..., Any],
                 send: Callable[..., Any]) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _poke(port: int, host: str, requests: int) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # A blocking connect completes in the kernel's backlog; the loop's sock_connect
        # would resolve the address on libuv's thread pool, and a zygote has no threads.
        sock.connect((host, port))
        sock.setblocking(False)
        for _ in range(requests):
            await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nhost: zygote\r\n\r\n")
            data = b""
            while not data.endswith(b"\r\n\r\nok"):
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    return
                data += chunk


def _dummy_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("content-length", "2")])
    return [b"ok"]


def _dummy_config(host: str, wsgi: bool, *, lifespan: str) -> uvicorn.Config:
    """The rehearsal's app (the dummy ASGI one, or the dummy WSGI one on SyncWSGI), loaded."""
    config = uvicorn.Config(SyncWSGI(_dummy_wsgi) if wsgi else _dummy, host=host, port=0,
                            log_config=None, interface="asgi3",
                            lifespan=lifespan)  # type: ignore[arg-type]
    config.load()
    return config


def _listeners(host: str, count: int) -> list[socket.socket]:
    """`count` listening sockets on free ports of `host`."""
    out = []
    for _ in range(count):
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        listener.bind((host, 0))
        listener.listen(8)
        out.append(listener)
    return out


async def _stage(host: str, servers: int, wsgi: bool) -> None:
    config = _dummy_config(host, wsgi, lifespan="on")
    running = []
    for listener in _listeners(host, servers):
        server = Server(config)
        task = asyncio.create_task(server.serve(sockets=[listener]))
        running.append((server, task, listener.getsockname()[1]))
    for server, _, port in running:
        while not server.started:
            await asyncio.sleep(0.001)
        for _ in range(2):
            await _poke(port, host, 2)
        server.stop()
    await asyncio.gather(*(task for _, task, _ in running))
    app = config.loaded_app
    while app is not None:  # the WSGI middleware's thread pool: a zygote keeps no threads
        executor = getattr(app, "executor", None)
        if executor is not None:
            executor.shutdown(wait=True)
        app = getattr(app, "app", None)


def rehearse(host: str, interface: str, rounds: int = 10) -> None:
    """Start, use and stop the server machinery `rounds` times, quietly, in the zygote.
    Best effort: a failure here only costs memory later."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    streams = [h for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
               for h in logging.getLogger(name).handlers if isinstance(h, logging.StreamHandler)]
    with open(os.devnull, "w") as devnull:
        previous = [h.setStream(devnull) for h in streams]
        try:
            for i in range(rounds):  # each round its own loop: Runner and loop code warm too
                with asyncio.Runner(loop_factory=LOOP_FACTORY) as runner:
                    runner.run(asyncio.wait_for(_stage(host, rounds, interface == "wsgi"), 5)
                               if i == 0
                               else asyncio.sleep(0))
        except Exception as exc:  # the zygote's log (its stderr; the handlers are muted)
            print(f"cloudland zygote: rehearsal failed ({last_line(exc)}); instances will "
                  "use more memory", file=sys.stderr, flush=True)
        finally:
            for handler, stream in zip(streams, previous, strict=True):
                if stream is not None:
                    handler.setStream(stream)
            for sig, previous_handler in handlers.items():
                with contextlib.suppress(TypeError, ValueError):
                    signal.signal(sig, previous_handler)


# -- rehearsing the lean server --------------------------------------------------------------

_LEAN_REQUESTS = (
    b"GET / HTTP/1.1\r\nhost: zygote\r\n\r\n",
    b"GET /a%20b?x=1 HTTP/1.1\r\nhost: zygote\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: zygote\r\ncontent-length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nhost: zygote\r\ntransfer-encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nhost: zygote\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: zygote\r\nconnection: close\r\n\r\n",
)


async def _lean_poke(port: int, host: str) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.connect((host, port))  # blocking: no resolver thread (see _poke)
        sock.setblocking(False)
        await loop.sock_sendall(sock, b"".join(_LEAN_REQUESTS))
        while await loop.sock_recv(sock, 65536):  # until the server closes (last request)
            pass


async def _lean_stage(host: str, servers: int, wsgi: bool, log_fd: int) -> None:
    config = _dummy_config(host, wsgi, lifespan="off")
    running = []
    for listener in _listeners(host, servers):
        server = leanhttp.Server(config.loaded_app)
        server.log_fd = log_fd
        task = asyncio.create_task(server.serve(listener, signals=False))
        running.append((server, task, listener.getsockname()[1]))
    await asyncio.sleep(0)
    for server, _, port in running:
        for _ in range(2):
            await _lean_poke(port, host)
        server.stop()
    await asyncio.gather(*(task for _, task, _ in running))


def rehearse_lean(host: str, wsgi: bool, rounds: int = 10) -> None:
    """`rehearse` for the lean server: serve a dummy app on it a few times, quietly."""
    with open(os.devnull, "w") as devnull:
        try:
            for i in range(rounds):
                loop = LOOP_FACTORY() if LOOP_FACTORY is not None else asyncio.new_event_loop()
                try:
                    loop.run_until_complete(
                        asyncio.wait_for(_lean_stage(host, rounds, wsgi, devnull.fileno()), 5)
                        if i == 0 else asyncio.sleep(0))
                finally:
                    loop.close()
        except Exception as exc:
            print(f"cloudland zygote: rehearsal failed ({last_line(exc)}); instances will "
                  "use more memory", file=sys.stderr, flush=True)
        finally:
            asyncio.set_event_loop(None)
