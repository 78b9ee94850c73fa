"""A lean HTTP/1.1 server for one ASGI 3 app, for zygote-forked instances.

uvicorn's startup (Config, logging, lifespan and server machinery) writes to
~450 pages of a forked instance and its first request ~250 more.  This server
is one asyncio.Protocol on the running loop with httptools' parser: everything
it needs is imported (and rehearsed, runtime/pyserve.py) in the zygote, and an
instance only creates its listening server and a few objects per connection.

Supported: HTTP/1.0 and 1.1, keep-alive (idle connections closed after 5 s),
pipelining (answered in order; reading pauses while a request waits), request
bodies (Content-Length or chunked, streamed to `receive`), responses with the
app's Content-Length, else Content-Length when the whole body comes in one
message, else chunked (1.1) or close-delimited (1.0); HEAD (no body written),
`Expect: 100-continue` (answered on the first `receive`), `Connection: close`,
a 500 when the app fails before responding, an ASGI lifespan ("auto", "on",
"off"), and a graceful stop on SIGTERM/SIGINT: stop accepting, close idle
connections, finish in-flight requests, run lifespan shutdown, then die of the
signal (as uvicorn does); a second signal exits at once.
Not supported: WebSockets and other upgrades (answered 400), HTTP/2, TLS,
proxy headers (use `server: uvicorn`), trailers.
"""

from __future__ import annotations

import asyncio
import http
import os
import signal
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

import httptools

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]

KEEP_ALIVE = 5.0
HIGH_WATER = 1 << 16  # buffered request body above which reading pauses
MAX_HEAD = 1 << 16  # request line + headers: more is refused (as nginx's 431/414)
MAX_HEADERS = 100
STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in http.HTTPStatus}
PHRASES = {s.value: s.phrase for s in http.HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
BODYLESS = frozenset((204, 304))
_date_second = 0
_date_line = b""


def date_header() -> bytes:
    """The Date header line, formatted once a second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second, _date_line = now, f"date: {formatdate(now, usegmt=True)}\r\n".encode()
    return _date_line


def simple_response(status: int, text: bytes, *, close: bool = True) -> bytes:
    return b"".join((STATUS_LINES[status], date_header(),
                     b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
                     % len(text), b"connection: close\r\n" if close else b"", b"\r\n", text))


def log_error(message: str, exc: BaseException | None = None) -> None:
    text = f"ERROR:    {message}\n"
    if exc is not None:
        text += "".join(traceback.format_exception(exc))
    with _suppress_oserror():
        os.write(2, text.encode(errors="replace"))


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, OSError)


class Cycle:
    """One request and its response."""

    __slots__ = ("body", "buffered", "chunked", "complete", "disconnected", "expect",
                 "has_length", "head", "http10", "keep_alive", "more_body", "parts", "proto",
                 "scope", "started", "status", "waiter")

    def __init__(self, proto: HttpProtocol, scope: Scope, keep_alive: bool, expect: bool) -> None:
        self.proto = proto
        self.scope = scope
        self.body: list[bytes] = []
        self.buffered = 0
        self.more_body = True
        self.waiter: asyncio.Future[None] | None = None
        self.started = self.complete = self.chunked = self.disconnected = False
        self.keep_alive = keep_alive
        self.head = scope["method"] == "HEAD"
        self.http10 = scope["http_version"] == "1.0"
        self.status = 0
        self.parts: list[bytes] | None = None
        self.has_length = False
        self.expect = expect

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def receive(self) -> Message:
        proto = self.proto
        if self.expect:
            self.expect = False
            if self.more_body and not self.disconnected and not self.started:
                proto.transport.write(CONTINUE)
        while not self.body and self.more_body and not (self.disconnected or self.complete):
            self.waiter = proto.loop.create_future()
            await self.waiter
        if self.disconnected or self.complete:
            return {"type": "http.disconnect"}
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        if self.buffered >= HIGH_WATER and not proto.pipeline:
            proto.transport.resume_reading()
        self.buffered = 0
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: Message) -> None:
        proto = self.proto
        if proto.drain is not None:
            await proto.drain
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got "
                                   f"{kind!r}.")
            self.started = True
            self.status = status = int(message["status"])
            head = [STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status, date_header()]
            for name, value in message.get("headers", ()):
                lower = name.lower()
                if lower == b"content-length":
                    self.has_length = True
                elif lower == b"transfer-encoding":
                    self.chunked = self.has_length = b"chunked" in value.lower()
                elif lower == b"connection" and value.lower() == b"close":
                    self.keep_alive = False
                    continue  # added below
                head += (name, b": ", value, b"\r\n")
            self.parts = head
            return
        if self.complete:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} sent, after response "
                               "already completed.")
        if kind != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got {kind!r}.")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if not more:
            self.complete = True
            self.wake()
        if self.disconnected:
            return
        parts: list[bytes] | None = self.parts
        if parts is not None:  # the head goes out with the first body message
            self.parts = None
            bodyless = self.head or self.status in BODYLESS or self.status < 200
            if not self.has_length and not bodyless:
                if not more:
                    parts.append(b"content-length: %d\r\n" % len(body))
                elif self.http10:
                    self.keep_alive = False
                else:
                    parts.append(b"transfer-encoding: chunked\r\n")
                    self.chunked = True
            if not self.keep_alive or proto.server.stopping:
                parts.append(b"connection: close\r\n")
            elif self.http10:
                parts.append(b"connection: keep-alive\r\n")
            parts.append(b"\r\n")
            if bodyless:
                self.chunked = False
                self.head = True  # write no body from here on
            elif self.chunked:
                if body:
                    parts += (b"%x\r\n" % len(body), body, b"\r\n")
                if not more:
                    parts.append(b"0\r\n\r\n")
            else:
                parts.append(body)
            proto.transport.write(b"".join(parts))
        elif self.head:
            pass
        elif self.chunked:
            if body:
                proto.transport.write(b"%x\r\n%b\r\n%b" % (len(body), body,
                                                           b"" if more else b"0\r\n\r\n"))
            elif not more:
                proto.transport.write(b"0\r\n\r\n")
        elif body:
            proto.transport.write(body)


class HttpProtocol(asyncio.Protocol):
    """One connection: parses requests as they come, serves them one at a time."""

    __slots__ = ("active", "app", "client", "drain", "head_bytes", "headers", "local", "loop",
                 "parser", "parsing", "pipeline", "server", "timer", "transport", "url")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.app = server.app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.parsing: Cycle | None = None  # the request being read
        self.active: Cycle | None = None  # the request being served
        self.pipeline: deque[Cycle] = deque()  # read, waiting for `active` to finish
        self.timer: asyncio.TimerHandle | None = None
        self.drain: asyncio.Future[None] | None = None

    # -- transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.local = (str(sock[0]), int(sock[1])) if isinstance(sock, tuple) else None
        self.timer = self.loop.call_later(self.server.keep_alive, self.idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for cycle in (self.active, self.parsing, *self.pipeline):
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()
        self.pipeline.clear()
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)
        self.drain = None
        self.server.connection_gone()

    def pause_writing(self) -> None:
        if self.drain is None:
            self.drain = self.loop.create_future()

    def resume_writing(self) -> None:
        drain, self.drain = self.drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A WebSocket handshake was not dispatched (on_headers_complete); any other
            # upgrade (h2c) is answered as plain HTTP/1.1, and the connection then closed.
            last = self.pipeline[-1] if self.pipeline else self.active
            if last is None or last.scope["headers"] is not self.headers:
                self.refuse(b"Unsupported upgrade request.\n")
            else:
                last.keep_alive = False
        except httptools.HttpParserError:
            self.refuse(b"Invalid HTTP request received.\n")

    def refuse(self, text: bytes) -> None:
        if self.active is None:
            self.transport.write(simple_response(400, text))
        self.transport.close()

    def idle(self) -> None:
        self.timer = None
        if self.active is None:
            self.transport.close()

    # -- parser callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_HEAD:
            raise httptools.HttpParserError("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_HEAD or len(self.headers) > MAX_HEADERS:
            raise httptools.HttpParserError("request headers too large")

    def on_headers_complete(self) -> None:
        parser = self.parser
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        scope = {
            "type": "http", "asgi": ASGI_VERSION, "http_version": parser.get_http_version(),
            "server": self.local, "client": self.client, "scheme": "http",
            "method": parser.get_method().decode("ascii"), "root_path": "", "path": path,
            "raw_path": raw_path, "query_string": url.query or b"", "headers": self.headers,
            "state": self.server.state.copy(),
        }
        expect = False
        for name, value in self.headers:
            if name == b"expect" and value.lower() == b"100-continue":
                expect = True
            elif name == b"upgrade" and value.lower() == b"websocket" and parser.should_upgrade():
                return  # refused in data_received
        cycle = self.parsing = Cycle(self, scope, parser.should_keep_alive(), expect)
        if self.active is None:
            self.start(cycle)
        else:
            self.pipeline.append(cycle)
            self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is None or cycle.complete or cycle.disconnected:
            return
        cycle.body.append(body)
        cycle.buffered += len(body)
        if cycle.buffered >= HIGH_WATER:
            self.transport.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.parsing
        if cycle is not None:
            self.parsing = None
            cycle.more_body = False
            cycle.wake()

    # -- serving
    def start(self, cycle: Cycle) -> None:
        self.active = cycle
        self.loop.create_task(self.serve(cycle))

    async def serve(self, cycle: Cycle) -> None:
        try:
            await self.app(cycle.scope, cycle.receive, cycle.send)
        except BaseException as exc:
            log_error("Exception in ASGI application", exc)
            if not cycle.started and not cycle.disconnected:
                self.transport.write(simple_response(500, b"Internal Server Error"))
                cycle.status, cycle.complete, cycle.keep_alive = 500, True, False
            elif not cycle.complete:
                cycle.keep_alive = False
            if not isinstance(exc, Exception):
                self.done(cycle)
                raise
        else:
            if not cycle.started:
                log_error("ASGI callable returned without starting response.")
                if not cycle.disconnected:
                    self.transport.write(simple_response(500, b"Internal Server Error"))
                cycle.status, cycle.complete, cycle.keep_alive = 500, True, False
            elif not cycle.complete:
                log_error("ASGI callable returned without completing response.")
                cycle.keep_alive = False
        self.done(cycle)

    def done(self, cycle: Cycle) -> None:
        server = self.server
        if server.access_log:
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
            scope = cycle.scope
            query = scope["query_string"]
            target = scope["path"] + ("?" + query.decode("latin-1") if query else "")
            line = (f'INFO:     {client} - "{scope["method"]} {target} HTTP/'
                    f'{scope["http_version"]}" {cycle.status} {PHRASES.get(cycle.status, "")}\n')
            with _suppress_oserror():
                os.write(server.log_fd, line.encode(errors="replace"))
        self.active = None
        if cycle.disconnected:
            return
        if not cycle.keep_alive or not cycle.complete or server.stopping:
            self.transport.close()
            return
        if self.pipeline:
            self.start(self.pipeline.popleft())
            if not self.pipeline and (self.parsing is None or
                                      self.parsing.buffered < HIGH_WATER):
                self.transport.resume_reading()
            return
        self.transport.resume_reading()
        self.timer = self.loop.call_later(server.keep_alive, self.idle)


class Server:
    """Serves `app` on a listening socket until `stop()` (or SIGTERM/SIGINT)."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True, lifespan: str = "off",
                 keep_alive: float = KEEP_ALIVE) -> None:
        self.app = app
        self.access_log = access_log
        self.log_fd = 1  # the access log: one write per request
        self.lifespan = lifespan
        self.keep_alive = keep_alive
        self.state: dict[str, Any] = {}
        self.connections: set[HttpProtocol] = set()
        self.stopping = False
        self.signal = 0
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._stopped: asyncio.Future[None] | None = None
        self._idle: asyncio.Future[None] | None = None
        self._lifespan: Lifespan | None = None

    def protocol(self) -> HttpProtocol:
        return HttpProtocol(self)

    async def serve(self, sock: socket.socket, *, signals: bool = True,
                    announce: bytes = b"") -> bool:
        """False if the app's lifespan startup failed."""
        self.loop = loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        if self.lifespan != "off":
            self._lifespan = Lifespan(self)
            if not await self._lifespan.startup():
                return False
        server = await loop.create_server(self.protocol, sock=sock, backlog=2048)
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.handle_signal, sig)
        if announce:
            with _suppress_oserror():
                os.write(2, announce)
        try:
            await self._stopped
            server.close()  # no more accepting; the listening socket is closed
            for conn in list(self.connections):
                if conn.active is None:
                    conn.transport.close()
            if self.connections:
                self._idle = loop.create_future()
                await self._idle
            if self._lifespan is not None:
                await self._lifespan.shutdown()
        finally:
            if signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        return True

    def stop(self) -> None:
        self.stopping = True
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def handle_signal(self, sig: int) -> None:
        if self.stopping:  # a second signal: no more waiting
            os._exit(128 + sig)
        self.signal = sig
        self.stop()

    def connection_gone(self) -> None:
        if self._idle is not None and not self.connections and not self._idle.done():
            self._idle.set_result(None)


class Lifespan:
    """ASGI lifespan: "auto" tolerates an app that does not speak it, "on" does not."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.failed = False
        self.unsupported = False
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.server.state}
        try:
            await self.server.app(scope, self.inbox.get, self.send)
        except BaseException as exc:
            if not self.started.is_set() and self.server.lifespan == "auto":
                self.unsupported = True
                with _suppress_oserror():
                    os.write(2, b"INFO:     ASGI 'lifespan' protocol appears unsupported.\n")
            else:
                self.failed = True
                log_error("Exception in 'lifespan' protocol", exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self.started.set()
            self.finished.set()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind in ("lifespan.startup.failed", "lifespan.shutdown.failed"):
            self.failed = True
            if message.get("message"):
                log_error(message["message"])
        if kind.startswith("lifespan.startup."):
            self.started.set()
        elif kind.startswith("lifespan.shutdown."):
            self.finished.set()

    async def startup(self) -> bool:
        os.write(2, b"INFO:     Waiting for application startup.\n")
        self.task = asyncio.get_running_loop().create_task(self.run())
        await self.inbox.put({"type": "lifespan.startup"})
        await self.started.wait()
        if self.failed:
            log_error("Application startup failed. Exiting.")
            return False
        if not self.unsupported:
            os.write(2, b"INFO:     Application startup complete.\n")
        return True

    async def shutdown(self) -> None:
        if self.unsupported or self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.finished.wait()


def serve(app: ASGIApp, sock: socket.socket, *, access_log: bool = True,
          lifespan: str = "off",
          loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then die of that signal; exit 3 if lifespan
    startup fails (as uvicorn does)."""
    server = Server(app, access_log=access_log, lifespan=lifespan)
    host, port = sock.getsockname()[:2]
    announce = f"INFO:     Serving on http://{host}:{port} (lean, forked from a zygote)\n"
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        ok = loop.run_until_complete(server.serve(sock, announce=announce.encode()))
    finally:
        loop.close()
    sys.stdout.flush()
    sys.stderr.flush()
    if not ok:
        sys.exit(3)
    if server.signal:
        signal.signal(server.signal, signal.SIG_DFL)
        signal.raise_signal(server.signal)
