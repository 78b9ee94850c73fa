"""Live instances of a Service: start, watch, probe, restart with backoff, stop.

The handles live here in memory; the Service's status carries copies so a
restarted CloudLand can re-adopt them (`adopt`).  Each running instance has one
task that waits for its exit and, if the Service has probes, one that probes
it; either tells the controller (`notify`) when something it reports changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudland.controllers import probes
from cloudland.logfiles import tail
from cloudland.runtime import Driver, ExitStatus, Handle, InstanceSpec, Limits, StartError
from cloudland.runtime.ports import PortAllocator

log = logging.getLogger("cloudland.instances")

BACKOFF_START = 10.0
BACKOFF_CAP = 300.0
HEALTHY_RUN = 10.0  # a crash after this long running does not count towards back-off
DRAIN = 0.5  # seconds between leaving the endpoints and SIGTERM, while others serve


@dataclass
class Instance:
    id: str
    index: int
    template_hash: str
    revision: int
    log_root: Path
    port: int | None = None
    handle: Handle | None = None
    phase: str = "Pending"  # Pending Running Exited CrashLoopBackOff Failed Terminating
    ready: bool = False
    restarts: int = 0
    crashes: int = 0  # consecutive quick crashes, for the backoff
    started_at: float | None = None  # wall clock
    started_mono: float = 0.0
    not_before: float = 0.0  # monotonic: do not start again before this
    last_exit: dict[str, Any] | None = None
    message: str = ""
    terminating: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _cached: tuple[tuple[Any, ...], dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def log_dir(self) -> Path:
        return self.log_root / str(self.restarts)

    @property
    def driver_id(self) -> str:
        """Unique across namespaces (names the instance's cgroup): '<ns>.<id>'."""
        return self.log_root.name

    @property
    def alive(self) -> bool:
        return self.phase == "Running"

    def to_status(self) -> dict[str, Any]:
        """The instance's entry in status; rebuilt only when something in it changed
        (a 500-instance status is rebuilt on every event)."""
        key = (self.phase, self.ready, self.restarts, self.port, self.handle, self.started_at,
               id(self.last_exit), self.message)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._build_status())
        return self._cached[1]

    def _build_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "index": self.index, "revision": self.revision,
            "templateHash": self.template_hash, "phase": self.phase, "ready": self.ready,
            "restarts": self.restarts, "logDir": str(self.log_dir),
        }
        if self.port:
            out["port"] = self.port
        if self.handle is not None:
            out["pid"] = self.handle.pid
            out["handle"] = self.handle.to_dict()
        if self.started_at is not None:
            out["startedAt"] = self.started_at
        if self.last_exit is not None:
            out["lastExit"] = self.last_exit
        if self.message:
            out["message"] = self.message
        return out


def backoff_for(crashes: int) -> float:
    """As the kubelet: the first crash restarts at once, then 10 s, 20 s, ... 5 min."""
    return 0.0 if crashes <= 1 else min(BACKOFF_START * 2 ** (crashes - 2), BACKOFF_CAP)


def last_line(path: Path) -> str:
    """The last non-empty line of a log, for exit messages."""
    found = tail(path, 1, window=4096, skip_blank=True)
    return found[0][:300] if found else ""


@dataclass
class Supervision:
    """Starts, watches and probes the instances of one Service."""

    driver: Driver
    notify: Callable[[], None]
    monotonic: Callable[[], float]
    wall: Callable[[], float]
    ports: PortAllocator = field(default_factory=PortAllocator)

    async def start(self, inst: Instance, spec: dict[str, Any], env: dict[str, str]) -> None:
        for _ in range(3):
            inst.port = inst.port or self.ports.allocate()
            await self._start(inst, spec, env)
            if (inst.last_exit or {}).get("reason") != "PortInUse" or inst.alive:
                return
            # Someone else took the port between our draw and the start: draw again now.
            self.ports.release(inst.port)
            inst.port, inst.crashes, inst.not_before = None, 0, 0.0

    async def _start(self, inst: Instance, spec: dict[str, Any], env: dict[str, str]) -> None:
        assert inst.port is not None
        run_env = {**env, "PORT": str(inst.port)}
        inst.log_dir.mkdir(parents=True, exist_ok=True)
        instance_spec = InstanceSpec(
            id=inst.driver_id, log_dir=inst.log_dir,
            command=[*spec["command"], *spec.get("args", [])] if spec.get("command") else None,
            python=spec.get("python"), env=run_env, working_dir=spec.get("workingDir"),
            port=inst.port, limits=limits_of(spec),
            grace=float(spec.get("terminationGracePeriodSeconds", 30)),
            zygote_key=inst.template_hash if spec.get("python") else None)
        inst.phase, inst.ready, inst.message = "Pending", False, ""
        try:
            inst.handle = await self.driver.start(instance_spec)
        except StartError as err:
            self._crashed(inst, {"reason": err.reason, "message": err.message,
                                 "finishedAt": self.wall()})
            return
        except Exception as exc:  # a driver bug must not leave the instance Pending forever
            log.exception("starting %s failed", inst.id)
            self._crashed(inst, {"reason": "StartFailed", "message": str(exc),
                                 "finishedAt": self.wall()})
            return
        inst.phase, inst.started_at, inst.started_mono = "Running", self.wall(), self.monotonic()
        inst.ready = not spec.get("readinessProbe")
        self.watch(inst, spec, run_env)

    def watch(self, inst: Instance, spec: dict[str, Any], env: dict[str, str]) -> None:
        """Follow a running instance: its exit, and its probes if it has any."""
        inst.tasks = [asyncio.create_task(self._await_exit(inst), name=f"wait {inst.id}")]
        if spec.get("readinessProbe") or spec.get("livenessProbe"):
            inst.tasks.append(asyncio.create_task(self._probe(inst, spec, env),
                                                  name=f"probe {inst.id}"))
        self.notify()

    async def _await_exit(self, inst: Instance) -> None:
        assert inst.handle is not None
        try:
            status = await self.driver.wait(inst.handle)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a driver failure must not kill the controller
            log.exception("waiting for %s failed", inst.id)
            status = ExitStatus(None, message=f"lost track of the process: {exc}")
        exit_info = {"exitCode": status.exit_code, "reason": status.reason,
                     "message": status.message or last_line(inst.log_dir / "stderr.log"),
                     "finishedAt": self.wall()}
        if status.signal is not None:
            exit_info["signal"] = status.signal
        for task in inst.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if inst.terminating:
            inst.phase, inst.ready, inst.last_exit = "Exited", False, exit_info
        else:
            self._crashed(inst, exit_info)
        self.notify()

    def _crashed(self, inst: Instance, exit_info: dict[str, Any]) -> None:
        ran = self.monotonic() - inst.started_mono if inst.started_mono else 0.0
        inst.crashes = 0 if ran >= HEALTHY_RUN else inst.crashes + 1
        delay = backoff_for(inst.crashes)
        inst.last_exit, inst.ready = exit_info, False
        inst.not_before = self.monotonic() + delay
        inst.phase = "CrashLoopBackOff" if delay else "Exited"
        inst.message = (f"back-off {delay:.0f}s restarting failed instance: "
                        f"{exit_info.get('message') or exit_info.get('reason')}"
                        if delay else "")
        self.notify()

    async def _probe(self, inst: Instance, spec: dict[str, Any], env: dict[str, str]) -> None:
        ready_probe, live_probe = spec.get("readinessProbe"), spec.get("livenessProbe")
        delay = min(float(p.get("initialDelaySeconds", 0)) for p in (ready_probe, live_probe)
                    if p)
        await asyncio.sleep(delay)
        passes = fails = live_fails = 0
        period = min(float(p.get("periodSeconds", 10)) for p in (ready_probe, live_probe) if p)
        # Until the first success, probe more often so a new instance becomes ready
        # promptly (but not so often that 500 starting instances flood the loop).
        fast = min(period, 0.2)
        while inst.alive:
            if ready_probe:
                ok = await probes.check(ready_probe, inst.port, env)
                passes, fails = (passes + 1, 0) if ok else (0, fails + 1)
                was = inst.ready
                if ok and passes >= int(ready_probe.get("successThreshold", 1)):
                    inst.ready = True
                elif not ok and (fails >= int(ready_probe.get("failureThreshold", 3))
                                 or not inst.ready):
                    inst.ready = False
                if inst.ready != was:
                    self.notify()
            if live_probe:
                ok = await probes.check(live_probe, inst.port, env)
                live_fails = 0 if ok else live_fails + 1
                if live_fails >= int(live_probe.get("failureThreshold", 3)):
                    times = "once" if live_fails == 1 else f"{live_fails} times"
                    inst.message = f"liveness probe failed {times}; restarting"
                    inst.ready = False
                    self.notify()
                    assert inst.handle is not None
                    await self.driver.stop(inst.handle, grace=float(
                        spec.get("terminationGracePeriodSeconds", 30)))
                    return
            await asyncio.sleep(period if inst.ready or not ready_probe else fast)

    async def stop(self, inst: Instance, grace: float, drain: float = 0.0) -> None:
        """Drain (leave the endpoints, give clients `drain` seconds to notice), then
        stop, wait for the exit and release."""
        was_serving = inst.ready
        inst.terminating, inst.ready = True, False
        inst.phase = "Terminating"
        self.notify()
        if drain and was_serving:
            await asyncio.sleep(drain)
        if inst.handle is not None:
            with contextlib.suppress(Exception):
                await self.driver.stop(inst.handle, grace=grace)
            with contextlib.suppress(Exception):
                await self.driver.destroy(inst.handle)
        for task in inst.tasks:
            task.cancel()
        await asyncio.gather(*inst.tasks, return_exceptions=True)
        inst.tasks = []
        inst.phase = "Exited"
        self.ports.release(inst.port)

    async def adopt(self, inst: Instance, spec: dict[str, Any], env: dict[str, str]) -> bool:
        """Re-attach to an instance a previous CloudLand started; False if it is gone."""
        if inst.handle is None:
            return False
        if not await self.driver.recover(inst.handle):
            with contextlib.suppress(Exception):
                await self.driver.destroy(inst.handle)  # release its cgroup and scratch dir
            return False
        inst.phase, inst.started_mono = "Running", self.monotonic()
        inst.ready = not spec.get("readinessProbe")
        if inst.port:
            self.ports.hold(inst.port)
        self.watch(inst, spec, {**env, "PORT": str(inst.port)})
        return True


def limits_of(spec: dict[str, Any]) -> Limits:
    limits = (spec.get("resources") or {}).get("limits") or {}
    return Limits(memory_bytes=parse_memory(limits.get("memory")),
                  cpu_millis=parse_cpu(limits.get("cpu")), pids=limits.get("pids"))


_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 1000, "M": 10**6, "G": 10**9}


def parse_memory(value: Any) -> int | None:
    """'64Mi' -> 67108864; plain numbers are bytes (Kubernetes quantities)."""
    if value is None:
        return None
    text = str(value).strip()
    for suffix, mult in _UNITS.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * mult)
    return int(float(text))


def parse_cpu(value: Any) -> int | None:
    """'500m' -> 500, '2' -> 2000 (millicores)."""
    if value is None:
        return None
    text = str(value).strip()
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)
