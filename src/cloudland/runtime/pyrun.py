"""Serve a Python web app named "module:attr" on $PORT: ASGI with uvicorn, WSGI threaded.

The process driver execs `python -m cloudland.runtime.pyrun --app mod:attr`
for `python: {app: ...}` instances when no zygote forks them; a zygote can
reuse `load_app` and `serve` after its fork.  ASGI vs WSGI is told from the
callable: a coroutine function (or an object whose `__call__` is one) or three
parameters (scope, receive, send) is ASGI; two (environ, start_response) WSGI.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import signal
import sys
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


def load_app(target: str) -> Any:
    """Import "package.module:attr.sub" and return the object."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"app '{target}' is not of the form 'module:attr'")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def is_asgi(app: Any) -> bool:
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - the bound method is what we inspect
    if not inspect.isfunction(app) and inspect.iscoroutinefunction(call):
        return True
    try:
        params = [p for p in inspect.signature(app).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return len(params) == 3


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # no access log per request: it would dominate the instance's stderr


def serve(app: Any, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, then return."""
    if is_asgi(app):
        import uvicorn

        uvicorn.run(app, host=host, port=port, interface="asgi3", lifespan="auto",
                    log_level="warning", access_log=False)
        return
    server = make_server(host, port, app, server_class=_ThreadingWSGIServer,
                         handler_class=_QuietHandler)

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cloudland.runtime.pyrun")
    parser.add_argument("--app", required=True, help="module:attr of a WSGI or ASGI app")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)
    serve(load_app(args.app), args.host, args.port)


if __name__ == "__main__":
    main()
