"""A reverse proxy on aiohttp: the Python baseline of the gateway bench.

    python aiohttp_proxy.py LISTEN_PORT UPSTREAM_URL

One shared ClientSession (pooled keep-alive connections to the upstream), the
body read whole and answered with its status and end-to-end headers; no access
log; uvloop when it is installed. This is the best Python proxy we measured, so
the gateway's ratio to it says what not writing the data plane in Python buys.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

from aiohttp import ClientSession, TCPConnector, web

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones aiohttp recomputes itself.
SKIP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
        "transfer-encoding", "upgrade", "content-length", "host"}


def handler(session: ClientSession,
            upstream: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in SKIP}
        body = await request.read() if request.body_exists else None
        async with session.request(request.method, upstream + request.path_qs,
                                   headers=headers, data=body) as resp:
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in SKIP}
            return web.Response(status=resp.status, body=payload, headers=out)
    return forward


async def serve(port: int, upstream: str) -> None:
    # limit=0: no cap on pooled connections, so 32 clients never queue for one.
    async with ClientSession(connector=TCPConnector(limit=0), auto_decompress=False) as session:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler(session, upstream))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        await asyncio.Event().wait()


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(port, upstream))
    else:
        uvloop.run(serve(port, upstream))


if __name__ == "__main__":
    main()
