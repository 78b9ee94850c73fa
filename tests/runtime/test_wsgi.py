"""WSGI on the event loop: the environ a PEP 3333 app expects, bodies, headers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from cloudland.runtime.wsgi import SyncWSGI


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    seen = {k: v for k, v in environ.items() if isinstance(v, str)}
    payload = json.dumps({"environ": seen, "body": body.decode()}).encode()
    start_response("201 Created", [("Content-Type", "application/json"), ("X-Echo", "yes")])
    return [payload]


def test_environ_body_and_headers() -> None:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=SyncWSGI(echo))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            return await client.post("/a%20b/c?x=1&y=2", content=b"hello",
                                     headers={"X-Thing": "1", "Content-Type": "text/plain"})

    response = asyncio.run(go())
    assert response.status_code == 201 and response.headers["x-echo"] == "yes"
    data = response.json()
    env = data["environ"]
    assert data["body"] == "hello"
    assert env["REQUEST_METHOD"] == "POST" and env["PATH_INFO"] == "/a b/c"
    assert env["QUERY_STRING"] == "x=1&y=2"
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "5"
    assert env["HTTP_X_THING"] == "1" and env["wsgi.url_scheme"] == "http"


def test_an_app_that_never_starts_a_response_is_an_error() -> None:
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return [b"no status"]

    async def go() -> None:
        transport = httpx.ASGITransport(app=SyncWSGI(broken), raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            await client.get("/")

    try:
        asyncio.run(go())
    except RuntimeError as exc:
        assert "start_response" in str(exc)
    else:
        raise AssertionError("a missing start_response went unnoticed")
