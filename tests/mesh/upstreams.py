"""A small HTTP/1.1 upstream for tests that put a real Envoy in front of Python servers.

`Upstream(name)` listens on 127.0.0.1:0 in a thread (keep-alive, one thread per
connection) and answers every method with JSON naming itself plus the request it
saw (method, path, headers). What it does next can be changed at any time:

- `fail(n, status=503)`: answer the next `n` requests with `status`;
- `always(status)`: answer every request with `status` (None: back to 200);
- `delay`: seconds to wait before answering (`reset()` cuts it short);
- `hold()` / `release()`: park requests until released (a gate, no timing);

and it counts what it saw: `count`, `in_flight`, `max_in_flight`, `seen` (the
requests, in order). `reset()` clears all of it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Upstream:
    """An HTTP server on 127.0.0.1:0 in a thread that says who it is."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._gate = threading.Event()
        self._gate.set()
        self._wake = threading.Event()  # set: cut every delay short
        self.delay = 0.0
        self._fail_left = 0
        self._fail_status = 503
        self._always: int | None = None
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.seen: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the apps behind Envoy
            # Headers and body go out as separate writes: without this, Nagle's
            # algorithm meets delayed ACKs and every response waits ~40 ms.
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                status = upstream._enter(self)
                try:
                    upstream._gate.wait(30.0)
                    if upstream.delay:
                        upstream._wake.wait(upstream.delay)
                    body = json.dumps({"name": upstream.name, "method": self.command,
                                       "path": self.path,
                                       "headers": {k.lower(): v
                                                   for k, v in self.headers.items()}}).encode()
                    try:
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(body)))
                        self.send_header("X-Upstream", upstream.name)
                        self.end_headers()
                        self.wfile.write(body)
                    except OSError:  # Envoy gave up on this request (a timeout)
                        self.close_connection = True
                finally:
                    upstream._leave()

            do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"upstream-{name}", daemon=True)
        self._thread.start()

    # ---- behaviour ---------------------------------------------------------------

    def fail(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._fail_left, self._fail_status = n, status

    def always(self, status: int | None) -> None:
        with self._lock:
            self._always = status

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def reset(self) -> None:
        """Back to a plain 200 server with clean counters, once nothing is in flight
        (held and delayed requests are let go first)."""
        self.delay = 0.0
        self._wake.set()
        self._gate.set()
        self.wait_for(lambda u: u.in_flight == 0, "requests in flight finish")
        with self._lock:
            self._wake = threading.Event()
            self._fail_left = 0
            self._always = None
            self.count = 0
            self.max_in_flight = 0
            self.seen = []

    def wait_for(self, check: Callable[[Upstream], bool], what: str,
                 deadline: float = 10.0) -> None:
        """Poll `check(self)` until true; fail after `deadline` seconds."""
        end = time.monotonic() + deadline
        while not check(self):
            if time.monotonic() > end:
                raise AssertionError(f"upstream {self.name}: not within {deadline}s: {what}")
            time.sleep(0.005)

    # ---- bookkeeping -------------------------------------------------------------

    def _enter(self, handler: BaseHTTPRequestHandler) -> int:
        with self._lock:
            self.count += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.seen.append({"method": handler.command, "path": handler.path,
                              "headers": {k.lower(): v for k, v in handler.headers.items()}})
            if self._fail_left > 0:
                self._fail_left -= 1
                return self._fail_status
            return self._always if self._always is not None else 200

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def close(self) -> None:
        self._wake.set()
        self._gate.set()
        self.server.shutdown()
        self.server.server_close()
