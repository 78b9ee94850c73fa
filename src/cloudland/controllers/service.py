"""Service controller: keep `replicas` instances of the current template running.

Level-based: each reconcile compares the live instances (in memory, re-adopted
from status after a restart) with the spec, takes one step of the rolling
update (`rollout.plan`), restarts crashed instances once their back-off has
passed, and writes status: counts, per-instance state, ready endpoints and
revision history.  Instance events (exit, readiness change) just queue the
Service's key again.

Like a Kubernetes Service's cluster IP, each Service gets one stable mesh address
(`status.address`: `spec.port`, or a port picked once and kept across restarts)
where the gateway's Envoy listens for it; a Service with `mtls: strict` also gets
`status.inbound`, the TLS listener that alone forwards to its instances.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cloudland.controllers import rollout
from cloudland.controllers.accepting import Object
from cloudland.controllers.base import Key, Result
from cloudland.controllers.context import Context
from cloudland.controllers.instances import DRAIN, Instance, Supervision
from cloudland.controllers.workload import Runtime, resolve_env
from cloudland.runtime import Handle

log = logging.getLogger("cloudland.services")
FINALIZER = "cloudland.io/instances"
START_CONCURRENCY = 64
COALESCE = 0.05
ADDRESS_WAIT = 0.02  # seconds: look again for other Services' first mesh address


@dataclass
class ServiceState:
    instances: dict[str, Instance] = field(default_factory=dict)
    adopted: bool = False
    supervision: Supervision | None = None
    next_index: int = 0
    retiring: set[asyncio.Task[None]] = field(default_factory=set)
    starting: set[asyncio.Task[None]] = field(default_factory=set)
    templates: set[str] = field(default_factory=set)  # zygote keys the driver keeps warm
    address: int | None = None  # mesh port (status.address)
    inbound: int | None = None  # strict mTLS listener port (status.inbound)

    def track(self, task: asyncio.Task[None], into: set[asyncio.Task[None]]) -> None:
        into.add(task)
        task.add_done_callback(into.discard)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def service_env(ctx: Context, namespace: str, own: str) -> tuple[dict[str, str], list[str]]:
    """Kubernetes-style discovery variables for the Services of a namespace, read when
    an instance starts: WEB_SERVICE_HOST/PORT (the Service's stable mesh address,
    through Envoy, so retries, timeouts and metrics apply), WEB_URL, and
    WEB_ENDPOINTS (the instances ready right now, for clients that balance alone).

    Also the names of other Services that have no mesh address yet: each gets one on
    its first reconcile, so an instance waits for those instead of starting without
    their variables (applied together, a caller would otherwise race its callee)."""
    env: dict[str, str] = {}
    waiting: list[str] = []
    items, _ = ctx.api.list("Service", namespace)
    for svc in items:
        status = svc.get("status") or {}
        name = svc["metadata"]["name"]
        prefix = name.upper().replace("-", "_")
        if status.get("address"):
            host, _, port = status["address"].rpartition(":")
            env[f"{prefix}_SERVICE_HOST"], env[f"{prefix}_SERVICE_PORT"] = host, port
            env[f"{prefix}_URL"] = f"http://{status['address']}"
        elif name != own and not svc["metadata"].get("deletionTimestamp"):
            waiting.append(name)
        if status.get("endpoints"):
            env[f"{prefix}_ENDPOINTS"] = ",".join(status["endpoints"])
    return env, waiting


class ServiceReconciler:
    kind = "Service"
    watches = ("Secret", "ConfigMap")

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.services: dict[Key, ServiceState] = {}
        self._gate = asyncio.Semaphore(START_CONCURRENCY)

    # ---- the reconcile ---------------------------------------------------------------

    async def reconcile(self, key: Key, ctx: Context) -> Result | None:
        obj = ctx.find(key)
        state = self.services.setdefault(key, ServiceState())
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            if obj is not None:
                # Deleted right after a restart: find its instances before stopping them.
                await self._adopt_once(key, ctx, state, obj, {})
            await self._stop_all(state)
            self.runtime.ports.release(state.address)
            self.runtime.ports.release(state.inbound)
            self.services.pop(key, None)
            if obj is not None:
                ctx.remove_finalizer(obj, FINALIZER)
            return None
        obj = ctx.add_finalizer(obj, FINALIZER)
        # The mesh address first: other Services' instances wait for it (service_env),
        # and nothing below (a missing runtime, say) may keep it from being published.
        status = dict(obj.get("status") or {})
        self._mesh_addresses(obj["spec"], state, status)
        obj = ctx.write_status(obj, status)
        spec, generation = obj["spec"], obj["metadata"]["generation"]
        env, problems = resolve_env(ctx, key.namespace, spec.get("env", []), "spec.env")
        thash = rollout.template_hash(spec, env)
        history, revision = rollout.record_revision(
            list((obj.get("status") or {}).get("history", [])), thash,
            rollout.template_of(spec), _now())
        # Adopt even with missing config: the status written below must keep the
        # handles of instances a previous CloudLand started.
        await self._adopt_once(key, ctx, state, obj, env)
        discovery, waiting = service_env(ctx, key.namespace, key.name)
        if not problems and not waiting:  # instances keep running until config is back
            sup = self._supervision(key, ctx, state, spec)
            self._reap(state)
            await self._converge(key, state, sup, spec, {**discovery, **env}, thash, revision)
            await self._forget_old_templates(state, sup, thash if spec.get("python") else None)
        status = self._status(ctx, obj, state, thash, history, revision, generation, problems)
        self._mesh_addresses(spec, state, status)
        if waiting and not problems:
            ctx.set_condition(status, "Progressing", "True", "WaitingForServiceAddresses",
                              f"instances start once {', '.join(sorted(waiting))} "
                              "have mesh addresses", generation)
        ctx.write_status(obj, status)
        waits = [i.not_before - ctx.clock.monotonic() for i in state.instances.values()
                 if i.phase in ("CrashLoopBackOff", "Exited")]
        if waiting:
            waits.append(ADDRESS_WAIT)
        return Result(requeue_after=max(min(waits), 0.01)) if waits else None

    def _mesh_addresses(self, spec: Object, state: ServiceState, status: Object) -> None:
        """Keep the Service's mesh address (and strict inbound address) in status."""
        ports = self.runtime.ports
        state.address = self._stable_port(state.address, status.get("address"), spec.get("port"))
        status["address"] = f"{ports.host}:{state.address}"
        if spec.get("mtls") == "strict":
            state.inbound = self._stable_port(state.inbound, status.get("inbound"), None)
            status["inbound"] = f"{ports.host}:{state.inbound}"
        else:
            ports.release(state.inbound)
            state.inbound = None
            status.pop("inbound", None)

    def _stable_port(self, held: int | None, recorded: str | None, wanted: int | None) -> int:
        """`wanted` if given; else the port held or recorded in status (kept across
        restarts of CloudLand); else a new one."""
        ports = self.runtime.ports
        if wanted is not None:
            if held != wanted:
                ports.release(held)
            ports.hold(int(wanted))  # never handed to an instance as its $PORT
            return int(wanted)
        if held is not None:
            return held
        if recorded:
            port = int(recorded.rpartition(":")[2])
            ports.hold(port)
            return port
        return ports.allocate()

    def _supervision(self, key: Key, ctx: Context, state: ServiceState,
                     spec: Object) -> Supervision:
        driver = self.runtime.driver(spec.get("runtime", "process"))
        if state.supervision is None or state.supervision.driver is not driver:
            def notify() -> None:
                # Big Services coalesce instance events: one status write per 50 ms,
                # not one per instance (a 500-instance status is half a megabyte).
                ctx.enqueue(key, COALESCE if len(state.instances) > 20 else 0.0)

            state.supervision = Supervision(
                driver, notify=notify, monotonic=ctx.clock.monotonic, wall=ctx.clock.time,
                ports=self.runtime.ports)
        return state.supervision

    async def _converge(self, key: Key, state: ServiceState, sup: Supervision, spec: Object,
                        env: dict[str, str], thash: str, revision: int) -> None:
        live = [i for i in state.instances.values() if not i.terminating]
        members = [rollout.Member(i.id, i.template_hash == thash, i.ready, i.index) for i in live]
        desired = int(spec.get("replicas", 1))
        surge, unavailable = rollout.surge_and_unavailable(spec.get("strategy") or {}, desired)
        step = rollout.plan(members, desired, surge, unavailable,
                            recreate=(spec.get("strategy") or {}).get("type") == "Recreate")
        grace = float(spec.get("terminationGracePeriodSeconds", 30))
        # Drain only while other instances keep serving: scaling to zero stops at once.
        staying = sum(i.ready for i in live if i.id not in step.stop)
        drain = DRAIN if staying else 0.0
        for inst_id in step.stop:
            inst = state.instances[inst_id]
            inst.terminating = True
            state.track(asyncio.create_task(self._retire(state, sup, inst, grace, drain),
                                            name=f"stop {inst_id}"), state.retiring)
        starts = [self._new_instance(key, state, thash, revision) for _ in range(step.start)]
        now = sup.monotonic()
        restarts = [i for i in live if i.template_hash == thash and not i.alive
                    and i.phase != "Pending" and i.not_before <= now]
        for inst in restarts:
            inst.restarts += 1
            inst.phase = "Pending"
        # Starts run beside the reconcile, so status (and endpoints) are published as
        # instances come up, not once the last of 500 has started.
        for inst in [*starts, *restarts]:
            state.track(asyncio.create_task(self._start(sup, inst, spec, env),
                                            name=f"start {inst.id}"), state.starting)

    async def _start(self, sup: Supervision, inst: Instance, spec: Object,
                     env: dict[str, str]) -> None:
        async with self._gate:
            await sup.start(inst, spec, env)
        sup.notify()

    def _new_instance(self, key: Key, state: ServiceState, thash: str,
                      revision: int) -> Instance:
        used = {i.index for i in state.instances.values() if not i.terminating}
        index = next(n for n in range(len(used) + 1) if n not in used)
        state.next_index += 1
        inst_id = f"{key.name}-{thash[:5]}-{state.next_index:x}"
        inst = Instance(inst_id, index, thash, revision,
                        self.runtime.log_root / f"{key.namespace}.{inst_id}")
        state.instances[inst_id] = inst
        return inst

    async def _retire(self, state: ServiceState, sup: Supervision, inst: Instance,
                      grace: float, drain: float) -> None:
        await sup.stop(inst, grace, drain)
        state.instances.pop(inst.id, None)
        sup.notify()

    @staticmethod
    def _reap(state: ServiceState) -> None:
        """Forget instances that were stopped and are gone."""
        for inst in list(state.instances.values()):
            if inst.terminating and inst.phase == "Exited" and not inst.tasks:
                state.instances.pop(inst.id, None)

    # ---- adoption, deletion, shutdown ------------------------------------------------

    async def _adopt_once(self, key: Key, ctx: Context, state: ServiceState, obj: Object,
                          env: dict[str, str]) -> None:
        """On the first reconcile in this process: re-attach to instances that a
        previous CloudLand started and that still run."""
        if state.adopted:
            return
        if not (obj.get("status") or {}).get("instances"):
            state.adopted = True
            return
        await self._adopt(key, state, self._supervision(key, ctx, state, obj["spec"]), obj, env)

    async def _adopt(self, key: Key, state: ServiceState, sup: Supervision, obj: Object,
                     env: dict[str, str]) -> None:
        state.adopted = True
        for record in (obj.get("status") or {}).get("instances", []):
            if not record.get("handle"):
                continue
            inst = Instance(record["id"], int(record.get("index", 0)),
                            record.get("templateHash", ""), int(record.get("revision", 0)),
                            self.runtime.log_root / f"{key.namespace}.{record['id']}",
                            port=record.get("port"), handle=Handle.from_dict(record["handle"]),
                            restarts=int(record.get("restarts", 0)),
                            started_at=record.get("startedAt"))
            state.next_index += 1
            if await sup.adopt(inst, obj["spec"], env):
                state.instances[inst.id] = inst
                log.info("re-adopted %s (pid %s)", inst.id, inst.handle and inst.handle.pid)
        if state.instances:
            state.next_index = max(state.next_index, len(state.instances)) + 1

    @staticmethod
    async def _forget_old_templates(state: ServiceState, sup: Supervision,
                                    current: str | None) -> None:
        """Once no instance of an old template remains, its zygote can go."""
        if current:
            state.templates.add(current)
        in_use = {i.template_hash for i in state.instances.values()} | {current}
        for old in state.templates - in_use:
            state.templates.discard(old)
            await sup.driver.forget(old)

    async def _stop_all(self, state: ServiceState) -> None:
        await asyncio.gather(*state.starting, return_exceptions=True)
        sup = state.supervision
        if sup is not None:
            await asyncio.gather(*(sup.stop(i, 10.0) for i in state.instances.values()
                                   if not i.terminating))
        await asyncio.gather(*state.retiring, return_exceptions=True)
        state.instances.clear()
        if sup is not None:
            await self._forget_old_templates(state, sup, None)

    async def shutdown(self) -> None:
        """`cloudland down`: stop every instance this controller runs."""
        await asyncio.gather(*(self._stop_all(s) for s in self.services.values()))

    # ---- env and status --------------------------------------------------------------

    def _status(self, ctx: Context, obj: Object, state: ServiceState, thash: str,
                history: list[Object], revision: int, generation: int,
                problems: list[str]) -> Object:
        spec = obj["spec"]
        desired = int(spec.get("replicas", 1))
        live = sorted((i for i in state.instances.values()),
                      key=lambda i: (i.terminating, i.index, i.id))
        current = [i for i in live if i.template_hash == thash and not i.terminating]
        ready = [i for i in live if i.ready and not i.terminating]
        crashing = [i for i in live if i.phase == "CrashLoopBackOff"]
        # A shallow copy: everything below is replaced, never mutated in place.
        status = dict(obj.get("status") or {})
        status.update({
            "observedGeneration": generation,
            "replicas": sum(not i.terminating for i in live),
            "readyReplicas": len(ready), "updatedReplicas": len(current),
            "availableReplicas": len(ready), "revision": revision, "templateHash": thash,
            "instances": [i.to_status() for i in live],
            "endpoints": [f"127.0.0.1:{i.port}" for i in ready if i.port],
            "history": history,
        })
        if state.supervision is not None:
            # What isolation the host gave these instances (cgroups or process groups only).
            caps = state.supervision.driver.capabilities()
            status["runtime"] = {"driver": state.supervision.driver.name,
                                 "cgroups": caps.cgroups, "isolation": caps.isolation,
                                 **({"note": caps.note} if caps.note else {})}
        done = len(current) == desired == len(live) and all(i.ready for i in current)
        if problems:
            ready_cond = ("False", "ConfigNotFound", "; ".join(problems))
        elif done:
            ready_cond = ("True", "AllReplicasReady", f"{desired}/{desired} ready")
        else:
            ready_cond = ("False", "ReplicasNotReady",
                          f"{sum(i.ready for i in current)}/{desired} ready")
        ctx.set_condition(status, "Ready", *ready_cond, generation=generation)  # type: ignore[arg-type]
        if done:
            ctx.set_condition(status, "Progressing", "False", "RolloutComplete",
                              f"revision {revision} is available", generation)
        else:
            ctx.set_condition(status, "Progressing", "True", "RollingUpdate",
                              f"{len(current)} of {desired} updated to revision {revision}",
                              generation)
        if crashing:
            worst = crashing[0]
            ctx.set_condition(status, "Degraded", "True", "CrashLoopBackOff",
                              f"{worst.id}: {worst.message}", generation)
        else:
            ctx.set_condition(status, "Degraded", "False", "AsExpected", "", generation)
        return status
