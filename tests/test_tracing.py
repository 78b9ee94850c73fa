"""Tracing through the gateway: W3C traceparent reaches the app, and Envoy exports
spans over OTLP/HTTP to the collector named by OTEL_EXPORTER_OTLP_ENDPOINT."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from cloudland.client import Client
from tests.conftest import start_cloudland, wait_for
from tests.test_services import ready_count, service

ECHO = '''
def app(environ, start_response):
    body = environ.get("HTTP_TRACEPARENT", "none").encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$")


class Collector(BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector: keeps what was posted, answers 200."""

    received: list[tuple[str, str, int]] = []

    def do_POST(self) -> None:
        self.received.append((self.path, self.headers.get("Content-Type", ""),
                              len(self._body())))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":  # Envoy chunks
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return body

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, str, int]]]]:
    received: list[tuple[str, str, int]] = []
    handler = type("Handler", (Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()


def test_traceparent_reaches_the_app_and_spans_reach_the_collector(
        tmp_path: Path, collector: tuple[str, list[tuple[str, str, int]]]) -> None:
    endpoint, received = collector
    running = start_cloudland(tmp_path / "home", "--gateway-port", "0",
                              env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    try:
        (tmp_path / "echo_app.py").write_text(ECHO)
        with Client(running.api) as client:
            client.apply([service("echo", {"workingDir": str(tmp_path),
                                           "python": {"app": "echo_app:app"}})])
            wait_for(lambda: ready_count(client, "echo", 1), timeout=30, message="echo ready")
        gateway = running.state["gateway"]
        host = {"Host": "echo.default.svc.cloudland.local"}
        wait_for(lambda: httpx.get(gateway, headers=host, timeout=5).status_code == 200,
                 timeout=10, message="echo through the gateway")
        # Without a traceparent, Envoy starts a trace and hands the app its context.
        started = httpx.get(gateway, headers=host, timeout=5).text
        assert TRACEPARENT.match(started), started
        # With one, the trace continues: same trace id, a new parent span (Envoy's).
        incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        continued = httpx.get(gateway, headers={**host, "traceparent": incoming},
                              timeout=5).text
        match = TRACEPARENT.match(continued)
        assert match and match.group(1) == "0af7651916cd43dd8448eb211c80319c"
        assert match.group(2) != "b7ad6b7169203331"
        wait_for(lambda: any(path == "/v1/traces" and "protobuf" in kind and size > 0
                             for path, kind, size in received),
                 timeout=20, message="spans exported to the OTLP collector")
    finally:
        running.stop()
