"""A deliberately cheap HTTP/1.1 client: one keep-alive connection, one request at a time.

The machine has two cores shared by the server and the load generator, so the
client must cost far less than the server or the numbers measure the client.
aiohttp is not a CloudLand dependency and httpx's async pool costs more than
the server's handler (see DESIGN.md), so this is an asyncio Protocol over
uvloop with httptools (already installed with uvicorn) parsing responses,
including chunked watch streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import httptools


class HTTPError(Exception):
    pass


class Connection(asyncio.Protocol):
    """One TCP connection. `request` for ordinary calls; `stream` for a watch."""

    def __init__(self, host: str) -> None:
        self._host = host.encode()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._on_line: Callable[[bytes], None] | None = None
        self._partial = b""
        self._closing = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: cls(f"{host}:{port}"), host, port)
        return conn

    # ---- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HTTPError(f"bad response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(HTTPError(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    # ---- httptools callbacks ---------------------------------------------------

    def on_body(self, body: bytes) -> None:
        if self._on_line is None:
            self._body.append(body)
            return
        data = self._partial + body
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            if line:
                self._on_line(line)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        body, self._body = b"".join(self._body), []
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), body))

    # ---- use ---------------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if self._closing:  # we hung up ourselves, e.g. on a watch: nobody awaits this
            waiter.cancel()
        else:
            waiter.set_exception(exc)

    def send(self, method: str, path: str, body: bytes = b"",
             content_type: str = "application/json") -> asyncio.Future[tuple[int, bytes]]:
        """Write one request; the future completes with (status, body)."""
        if self._transport is None or self._transport.is_closing():
            raise HTTPError("connection is closed")
        if self._waiter is not None:
            raise HTTPError("one request at a time on a connection")
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self._host.decode()}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(head.encode() + body)
        return self._waiter

    async def request(self, method: str, path: str, body: bytes = b"",
                      content_type: str = "application/json") -> tuple[int, bytes]:
        return await self.send(method, path, body, content_type)

    def stream(self, path: str, on_line: Callable[[bytes], None]) -> asyncio.Future[Any]:
        """GET a streaming (NDJSON) response, calling `on_line` for each line as it arrives."""
        self._on_line = on_line
        return self.send("GET", path)

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it is, with uvicorn[standard]): the cheapest client loop."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def run(coro: Any) -> Any:
    loop = new_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
