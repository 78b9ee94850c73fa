"""The lean HTTP/1.1 server (runtime/leanhttp.py) over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from cloudland.runtime import leanhttp

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            scope["state"]["lifespan"] = message["type"]
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/boom":
        raise ValueError("boom")
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    info = {"method": scope["method"], "path": path, "query": scope["query_string"].decode(),
            "body": body.decode(), "http_version": scope["http_version"],
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "state": scope["state"].get("lifespan")}
    payload = json.dumps(info).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def run(test: Callable[[int], Coroutine[Any, Any, None]], lifespan: str = "off") -> None:
    async def main() -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        server = leanhttp.Server(app, lifespan=lifespan)
        server.log_fd = os.open(os.devnull, os.O_WRONLY)
        serving = asyncio.create_task(server.serve(listener, signals=False))
        try:
            await asyncio.sleep(0.01)
            await asyncio.wait_for(test(port), 10)
        finally:
            server.stop()
            assert await asyncio.wait_for(serving, 5)
            os.close(server.log_fd)

    asyncio.run(main())


async def exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await reader.read()
    writer.close()
    return data


def split(data: bytes) -> list[tuple[bytes, bytes]]:
    """(head, body) of each Content-Length response in data."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        out.append((head, rest[:length]))
        data = rest[length:]
    return out


def test_get_and_post_with_a_body() -> None:
    async def check(port: int) -> None:
        data = await exchange(port, b"GET /a%20b?x=1 HTTP/1.1\r\nhost: t\r\nX-Thing: 1\r\n"
                                    b"connection: close\r\n\r\n")
        [(head, body)] = split(data)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\ndate: " in head
        assert b"connection: close" in head
        info = json.loads(body)
        assert info["method"] == "GET" and info["path"] == "/a b" and info["query"] == "x=1"
        assert info["headers"]["x-thing"] == "1" and info["http_version"] == "1.1"

        data = await exchange(port, b"POST /p HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n"
                                    b"connection: close\r\n\r\nhello")
        assert json.loads(split(data)[0][1])["body"] == "hello"

    run(check)


def test_chunked_request_body() -> None:
    async def check(port: int) -> None:
        data = await exchange(port, b"POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked"
                                    b"\r\nconnection: close\r\n\r\n5\r\nhello\r\n6\r\n world"
                                    b"\r\n0\r\n\r\n")
        assert json.loads(split(data)[0][1])["body"] == "hello world"

    run(check)


def test_keep_alive_and_pipelining_answer_in_order() -> None:
    async def check(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /first HTTP/1.1\r\nhost: t\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert json.loads(await reader.readexactly(length))["path"] == "/first"
        # The same connection again, now with three pipelined requests, one with a body.
        writer.write(b"GET /second HTTP/1.1\r\nhost: t\r\n\r\n"
                     b"POST /third HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\nabc"
                     b"GET /fourth HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        responses = split(await reader.read())
        writer.close()
        assert [json.loads(body)["path"] for _, body in responses] == [
            "/second", "/third", "/fourth"]
        assert json.loads(responses[1][1])["body"] == "abc"

    run(check)


def test_streamed_response_is_chunked_and_head_has_no_body() -> None:
    async def check(port: int) -> None:
        data = await exchange(port, b"GET /stream HTTP/1.1\r\nhost: t\r\n"
                                    b"connection: close\r\n\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head
        assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"

        data = await exchange(port, b"HEAD / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: " in head
        assert body == b""

        # HTTP/1.0 without keep-alive: the server closes after the response.
        data = await exchange(port, b"GET /old HTTP/1.0\r\n\r\n")
        assert json.loads(split(data)[0][1])["http_version"] == "1.0"

    run(check)


def test_an_app_that_raises_is_a_500() -> None:
    async def check(port: int) -> None:
        data = await exchange(port, b"GET /boom HTTP/1.1\r\nhost: t\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
        assert data.endswith(b"Internal Server Error")
        data = await exchange(port, b"NOT HTTP\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 400")

    run(check)


def test_lifespan_state_reaches_requests() -> None:
    async def check(port: int) -> None:
        data = await exchange(port, b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        assert json.loads(split(data)[0][1])["state"] == "lifespan.startup"

    run(check, lifespan="on")


SLOW_SERVER = """
    import asyncio, socket, sys
    import uvloop
    from cloudland.runtime import leanhttp

    async def app(scope, receive, send):
        await receive()
        await asyncio.sleep(0.5)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"finished"})

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(listener.getsockname()[1], flush=True)
    leanhttp.serve(app, listener, loop_factory=uvloop.new_event_loop)
"""


def test_sigterm_stops_accepting_and_finishes_in_flight_requests() -> None:
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SLOW_SERVER)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            time.sleep(0.1)  # the request is in flight
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)
            try:  # no more accepting
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                raise AssertionError("a stopping server accepted a connection")
            except ConnectionRefusedError:
                pass
            data = b""
            while chunk := client.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"finished")
        assert b"connection: close" in data
        assert proc.wait(5) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_upgrades_websocket_refused_h2c_served_as_http11() -> None:
    async def check(port: int) -> None:
        data = await exchange(port, b"GET /ws HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\n"
                                    b"upgrade: websocket\r\nsec-websocket-version: 13\r\n"
                                    b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 400")
        data = await exchange(port, b"GET /h2 HTTP/1.1\r\nhost: t\r\nconnection: Upgrade, "
                                    b"HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AA\r\n\r\n")
        assert json.loads(split(data)[0][1])["path"] == "/h2"

    run(check)


def test_expect_100_continue() -> None:
    async def check(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\nexpect: 100-continue"
                     b"\r\nconnection: close\r\n\r\n")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hi")
        assert json.loads(split(await reader.read())[0][1])["body"] == "hi"
        writer.close()

    run(check)


def test_oversized_request_heads_are_refused() -> None:
    """Headers are bounded: a client cannot make an instance buffer without limit."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def go() -> bytes:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        server = leanhttp.Server(app, access_log=False)
        task = asyncio.create_task(server.serve(listener, signals=False))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n" + b"x-big: " + b"a" * 70_000 + b"\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        server.stop()
        await asyncio.wait_for(task, 5)
        return answer

    assert asyncio.run(go()).startswith(b"HTTP/1.1 400")
