"""The gateway: a managed Envoy whose config follows the Routes and Services.

Every committed change to a Route or a Service (its endpoints live in its
status) marks the config dirty; one task re-renders the whole snapshot
(`mesh.render`), refuses inconsistent ones (the problem is kept for `status`),
and hands the rest to `ManagedEnvoy.apply`, which confirms Envoy took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudland.api.service import Change, ResourceService
from cloudland.errors import CloudLandError, Invalid
from cloudland.mesh import render, route_conflicts
from cloudland.mesh.ca import (
    CertificateAuthority,
    rotate_if_needed,
    service_dns_names,
    workload_identity,
)
from cloudland.mesh.envoy import EnvoySettings, ManagedEnvoy, envoy_binary
from cloudland.mesh.render import SDS_DIR, mesh_identities, parse_routes
from cloudland.mesh.snapshot import Snapshot
from cloudland.runtime.logs import LogRotator
from cloudland.runtime.ports import free_port, port_in_use

log = logging.getLogger("cloudland.gateway")
Object = dict[str, Any]
COALESCE = 0.01  # seconds: a burst of status writes becomes one render
# Per-Service clusters, per-route (vhost.*.route.*) and per-listener (http.*) series.
METRICS_FILTER = r"^(cluster\.(svc|fn|local)_|vhost\.|http\.(gateway|mesh_|in_))"
ROTATION_CHECK = 600.0  # seconds between checks that certificates are not due
RETRY_FIRST, RETRY_MAX = 0.1, 5.0  # seconds: an apply that did not happen is tried again


def route_admission(service: ResourceService) -> Callable[[str, Object, Object | None], None]:
    """An admission hook refusing a Route that claims a host and match another Route has.

    Inside an apply, earlier documents of the same batch are already in the store's
    transaction, so two conflicting Routes in one apply are caught as well."""
    def admit(operation: str, obj: Object, old: Object | None) -> None:
        if obj.get("kind") != "Route":
            return
        routes, _ = service.list("Route")
        conflicts = route_conflicts(obj, routes)
        if conflicts:
            meta = obj["metadata"]
            more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
            raise Invalid(f"Route {meta['namespace']}/{meta['name']}: {conflicts[0]}{more}",
                          field="spec.rules", causes=[{"field": "spec.rules", "message": c}
                                                      for c in conflicts],
                          hint="give one of the Routes another host or match, or delete one")
    return admit


def service_port_admission(service: ResourceService) -> Callable[[str, Object, Object | None],
                                                                  None]:
    """An admission hook refusing a Service whose `spec.port` another Service already
    has (as its spec.port or its picked mesh address): Envoy cannot listen twice."""
    def admit(operation: str, obj: Object, old: Object | None) -> None:
        port = (obj.get("spec") or {}).get("port") if obj.get("kind") == "Service" else None
        if port is None:
            return
        meta = obj["metadata"]
        services, _ = service.list("Service")
        for other in services:
            om = other["metadata"]
            if (om["namespace"], om["name"]) == (meta["namespace"], meta["name"]):
                continue
            address = (other.get("status") or {}).get("address") or ""
            if (other.get("spec") or {}).get("port") == port or address.endswith(f":{port}"):
                raise Invalid(f"Service {meta['namespace']}/{meta['name']}: spec.port {port} "
                              f"is already the mesh port of Service {om['namespace']}/"
                              f"{om['name']}", field="spec.port",
                              hint="choose another port, or leave spec.port out and "
                                   "CloudLand picks one")
    return admit


def _mesh_fingerprint(obj: Object) -> tuple[Any, ...]:
    """What of a Service or Route the rendering reads: a write that changes none of it
    (a Route's or Service's conditions, instance counts, restarts) needs no new Envoy
    config. A Route's spec is all of it (its generation moves with the spec)."""
    meta = obj["metadata"]
    if obj.get("kind") == "Route":
        return meta.get("generation"), bool(meta.get("deletionTimestamp"))
    status = obj.get("status") or {}
    return (tuple(status.get("endpoints") or ()), status.get("address"), status.get("inbound"),
            (obj.get("spec") or {}).get("mtls"))


class Gateway:
    """Envoy as the gateway and mesh, following the Routes and Services in the store."""

    def __init__(self, service: ResourceService, run_dir: Path, *, port: int,
                 host: str = "127.0.0.1", access_log: Path | None = None,
                 ca_dir: Path | None = None, otlp_endpoint: str | None = None) -> None:
        self.service = service
        self.host = host
        self.port = port or free_port(host)
        self.access_log = access_log
        self.otlp_endpoint = otlp_endpoint
        # Two workers: measured 15-25% more requests/s than one on two cores.
        self.envoy = ManagedEnvoy(run_dir, EnvoySettings(concurrency=min(2, os.cpu_count() or 1)))
        # The access log is rotated and indexed like an instance's logs, so it stays
        # bounded and `cloudland mesh logs` reads it the way `cloudland logs` does.
        self.rotator = LogRotator()
        self.certificates = Certificates(ca_dir, run_dir) if ca_dir is not None else None
        self.problem: str | None = None
        self.invalid: str | None = None  # stored Routes that no longer validate
        self._seen: dict[tuple[str, str, str], tuple[Any, ...]] = {}  # kind, ns, name
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rotation: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None

    @staticmethod
    def available() -> bool:
        return envoy_binary() is not None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        if port_in_use(self.port):  # Envoy would run but serve nothing on it
            raise RuntimeError(f"port {self.port} is already in use; choose another with "
                               "--gateway-port (0 picks a free one)")
        if self.access_log is not None:
            self.access_log.parent.mkdir(parents=True, exist_ok=True)
        # Subscribe first: a change committed while Envoy starts is rendered after.
        self._unsubscribe = self.service.subscribe(self._on_change)
        await self.envoy.start(await self._render())
        if self.access_log is not None:
            self.rotator.register(self.access_log.parent)
        self.rotator.register(self.envoy.run_dir)  # Envoy's own log
        # A restarted Envoy comes back on its last good config: render the store again.
        self.envoy.on_restart = self._dirty.set
        self._task = asyncio.create_task(self._follow(), name="gateway")
        if self.certificates is not None:
            self._rotation = asyncio.create_task(self._rotate(), name="mesh-certificates")
        log.info("gateway listening on %s (Envoy %s)", self.url, self.envoy.envoy_version or "")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in (self._task, self._rotation):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.envoy.stop()
        await self.rotator.close()

    def health(self) -> dict[str, Any]:
        envoy = self.envoy.health()
        out: dict[str, Any] = {"healthy": bool(envoy.get("running")) and not self.problem
                               and not envoy.get("last_error"),
                               "url": self.url, "pid": envoy.get("pid"),
                               "admin": envoy.get("admin"), "version": envoy.get("envoy"),
                               "config": envoy.get("version"), "restarts": envoy.get("restarts")}
        problem = self.problem or envoy.get("last_error") or self.invalid or (
            self.certificates.error if self.certificates else None)
        if problem:
            out["error"] = problem
        return out

    async def metrics(self) -> str:
        """Envoy's request counts, errors and latency histograms per route, Service and
        listener, in Prometheus text (only series that have seen traffic)."""
        return await self.envoy.prometheus(METRICS_FILTER)

    def _on_change(self, change: Change) -> None:
        if change.kind not in ("Route", "Service"):
            return
        meta = change.object["metadata"]
        key = (change.kind, meta["namespace"], meta["name"])
        if change.type == "DELETED":
            self._seen.pop(key, None)
            self._dirty.set()
            return
        fingerprint = _mesh_fingerprint(change.object)
        if self._seen.get(key) != fingerprint:
            self._seen[key] = fingerprint
            self._dirty.set()

    async def _follow(self) -> None:
        retry = RETRY_FIRST
        while True:
            await self._dirty.wait()
            await asyncio.sleep(COALESCE)
            self._dirty.clear()
            try:
                applied = await self._apply()
            except Exception:  # a bug must not end the gateway: log it, look again later
                log.exception("gateway render/apply failed")
                applied = False
            if applied:
                retry = RETRY_FIRST
                continue
            if not self.envoy.rejected:  # timed out, or Envoy restarting: try again
                asyncio.get_running_loop().call_later(retry, self._dirty.set)
                retry = min(retry * 2, RETRY_MAX)

    async def _apply(self) -> bool:
        """Render the store and hand it to Envoy; False if not applied (`problem` says why)."""
        snapshot = await self._render()
        problems = snapshot.problems()
        self.problem = "; ".join(problems) if problems else None
        if problems:
            log.warning("gateway config not applied: %s", self.problem)
            return True  # nothing to retry until the model changes
        if not await self.envoy.apply(snapshot):
            log.warning("gateway config not applied: %s", self.envoy.last_error)
            return False
        return True

    async def _rotate(self) -> None:
        """Reissue workload certificates before they expire (Envoy follows the files)."""
        while True:
            await asyncio.sleep(ROTATION_CHECK)
            assert self.certificates is not None
            services, _ = self.service.list("Service")
            # Prune only while Envoy runs the current model (a config it has not taken
            # may still refer to a Service's certificates), and only identities known
            # before this listing (one a render adds meanwhile is not "unwanted").
            settled = self.problem is None and not self.envoy.last_error
            prunable = set(self.certificates.kept) if settled else set()
            await asyncio.to_thread(self.certificates.keep, mesh_identities(services),
                                    prunable=prunable)

    async def _render(self) -> Snapshot:
        routes, _ = self.service.list("Route")
        services, _ = self.service.list("Service")
        parsed = parse_routes(routes)  # validated once: for `invalid` and the rendering
        self.invalid = "; ".join(f"Route {k}: {v}" for k, v in parsed.invalid.items()) or None
        tls = False
        if self.certificates is not None:
            identities = mesh_identities(services)
            tls = (self.certificates.ready(identities)
                   or await asyncio.to_thread(self.certificates.keep, identities))
        return render(parsed, services, gateway_port=self.port,
                      access_log=str(self.access_log) if self.access_log else None,
                      tls=tls, otlp_endpoint=self.otlp_endpoint)


class Certificates:
    """The CloudLand CA and the workload certificates the mesh config refers to.

    Certificates are written where the rendered config expects them (`SDS_DIR` under
    Envoy's run directory). `keep` issues what is missing and rotates what is due;
    it is cheap when nothing is (one file read per identity)."""

    def __init__(self, ca_dir: Path, run_dir: Path) -> None:
        self.ca_dir = ca_dir
        self.sds_dir = Path(run_dir) / SDS_DIR
        self.error: str | None = None
        self._ca: CertificateAuthority | None = None
        self._kept: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def ready(self, identities: list[tuple[str, str]]) -> bool:
        """True when every identity was kept before (the check each render makes; new
        identities, and rotation on its schedule, go through `keep`)."""
        return self.error is None and set(identities) <= self._kept

    @property
    def kept(self) -> frozenset[tuple[str, str]]:
        return frozenset(self._kept)

    def keep(self, identities: list[tuple[str, str]], *,
             prunable: set[tuple[str, str]] | None = None) -> bool:
        """True when every identity has a valid certificate on disk (blocking: key
        generation and file writes; run it in a thread). Serialized, so a rotation and
        a render never write the same identity's files at once. Identities in
        `prunable` that are not wanted any more lose their files (the periodic check)."""
        with self._lock:
            kept = self._keep(identities)
            if kept and prunable:
                self._prune(prunable - set(identities))
            return kept

    def _prune(self, unwanted: set[tuple[str, str]]) -> None:
        for namespace, name in unwanted:
            for path in self.sds_dir.glob(f"{name}.{namespace}.*"):
                path.unlink(missing_ok=True)
            self._kept.discard((namespace, name))

    def _keep(self, identities: list[tuple[str, str]]) -> bool:
        try:
            if self._ca is None:
                self._ca = CertificateAuthority.load_or_create(self.ca_dir)
            for namespace, name in identities:
                rotate_if_needed(self._ca, self.sds_dir, workload_identity(namespace, name),
                                 dns_names=service_dns_names(namespace, name))
            self._kept |= set(identities)
            self.error = None
            return True
        except (CloudLandError, OSError, ValueError) as exc:
            self.error = f"mesh certificates unavailable: {exc}"
            log.error("%s", self.error)
            return False
