"""The process driver: instances as plain host processes, each in its own session
(process group) and, where the host allows, its own cgroups.

Owned by the runtime package; `daemon/` constructs it and the controllers call
it through the `Driver` protocol.  Python instances are forked by a warm
zygote when a `ZygotePool` is given, else exec'd (`runtime/pyrun.py` serves
"module:attr" apps).

Exits are awaited through pidfds on the event loop (`pidfd_open` works for any
pid, so re-adopted instances are waited on the same way); our own children are
then reaped with waitpid for their status.  How a process is launched (argv,
cgroup join, logs) is `runtime/launch.py`.  The sandbox driver
(`runtime/sandbox.py`) is this driver with the argv wrapped in bubblewrap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from cloudland.runtime import procfs
from cloudland.runtime.cgroups import CgroupHost, InstanceCgroup
from cloudland.runtime.driver import (
    Capabilities,
    ExitStatus,
    Handle,
    InstanceSpec,
    InstanceState,
    StartError,
)
from cloudland.runtime.launch import DEFAULT_PATH, python_argv, resolve_command, spawn
from cloudland.runtime.logs import MAX_BYTES, LogRotator
from cloudland.runtime.ports import port_in_use

if TYPE_CHECKING:
    from cloudland.runtime.zygote import ZygotePool

log = logging.getLogger("cloudland.runtime.process")

HANDLE_VERSION = 1
UNKNOWN_EXIT = "exit status unknown (re-adopted)"


@dataclass
class Tracked:
    """What this driver object knows about one instance (in memory only)."""

    handle: Handle
    cgroup: InstanceCgroup | None
    popen: subprocess.Popen[bytes] | None = None
    exited: asyncio.Future[ExitStatus] | None = None
    pidfd: int | None = None
    force_killed: bool = False  # stop() escalated to SIGKILL: not an OOM kill
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def grace(self) -> float:
        return float(self.handle.extra.get("grace", 30.0))


class ProcessDriver:
    name = "process"
    isolation: ClassVar[Literal["none", "namespaces", "container"]] = "none"

    def __init__(self, run_dir: Path, *, cgroup_parent: str = "cloudland",
                 owns_cgroup_parent: bool = False,
                 zygotes: ZygotePool | None = None, log_max_bytes: int = MAX_BYTES,
                 log_interval: float = 1.0) -> None:
        """`owns_cgroup_parent`: no other driver uses `cgroup_parent` (a CloudLand's
        per-home one), so close() removes it once it is empty."""
        self.run_dir = Path(run_dir)
        self.zygotes = zygotes
        self.cgroups = CgroupHost.detect(cgroup_parent)
        self._owns_cgroup_parent = owns_cgroup_parent
        self.rotator = LogRotator(max_bytes=log_max_bytes, interval=log_interval)
        self._tracked: dict[str, Tracked] = {}

    # -- what the host allows ------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        return Capabilities(cgroups=self.cgroups.whole_tree_kill,
                            memory_limit=self.cgroups.memory,
                            oom_detection=self.cgroups.memory,
                            isolation=self.isolation, note=self.cgroups.note)

    # -- start ---------------------------------------------------------------------------
    async def start(self, spec: InstanceSpec) -> Handle:
        if (spec.command is None) == (spec.python is None) or spec.command == []:
            raise StartError("InvalidSpec", f"instance {spec.id}: give exactly one of "
                             "command (a non-empty argv) or python")
        scratch = spec.working_dir is None
        cwd = self._working_dir(spec)
        env = self._env(spec, cwd)
        zygote = self.zygotes is not None and spec.python is not None and self._may_fork(spec)
        argv = [] if zygote else self._wrap(self._argv(spec, env, cwd), spec, cwd)
        if spec.port is not None and port_in_use(spec.port):
            raise StartError("PortInUse", f"port {spec.port} is already in use on this host",
                             hint="stop what listens there or let CloudLand pick the port")
        spec.log_dir.mkdir(parents=True, exist_ok=True)
        await self._clear_previous(spec.id)
        # mkdir in cgroupfs is usually ~20 us but sometimes waits milliseconds in the kernel.
        cgroup = await asyncio.to_thread(self._make_cgroup, spec) if self.cgroups.usable else None
        popen = None
        try:
            if zygote:
                assert self.zygotes is not None
                # The forked child joins the cgroups itself, before the app runs.
                # The instance gets the same env and working dir an exec'd one would; the
                # zygote key is fixed first, so a scratch dir never splits the zygote.
                forked = dataclasses.replace(
                    spec, env=env, working_dir=cwd,
                    zygote_key=spec.zygote_key or self.zygotes.key_for(spec))
                pid, ticks = await self.zygotes.spawn(
                    forked, cgroup_procs=[Path(p) for p in cgroup.procs_files()] if cgroup else [])
            else:
                popen = spawn(argv, env, cwd, spec.log_dir,
                              cgroup.procs_files() if cgroup else [])
                pid = popen.pid
                ticks = procfs.start_ticks(pid) or 0
        except BaseException:
            if cgroup is not None:
                cgroup.kill()
                cgroup.remove()
            raise
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:  # already gone (a zygote child reaped at once)
            pgid = pid
        handle = Handle(driver=self.name, version=HANDLE_VERSION, id=spec.id, pid=pid,
                        start_ticks=ticks, pgid=pgid,
                        cgroup=cgroup.unified_rel if cgroup else None,
                        extra={"grace": spec.grace, "log_dir": str(spec.log_dir),
                               "cgroups": cgroup.to_dict() if cgroup else None,
                               "zygote": zygote, "memory_limit": spec.limits.memory_bytes,
                               "scratch": cwd if scratch else None})
        self._tracked[spec.id] = Tracked(handle, cgroup, popen)
        self.rotator.register(spec.log_dir)
        return handle

    def _may_fork(self, spec: InstanceSpec) -> bool:
        return True

    def _wrap(self, argv: list[str], spec: InstanceSpec, cwd: str) -> list[str]:
        """The argv actually exec'd (the sandbox wraps it in bubblewrap)."""
        return argv

    def _working_dir(self, spec: InstanceSpec) -> str:
        if spec.working_dir is None:
            scratch = self.run_dir / "work" / spec.id
            scratch.mkdir(parents=True, exist_ok=True)
            return str(scratch)
        cwd = os.path.abspath(spec.working_dir)
        if not os.path.isdir(cwd):
            raise StartError("WorkingDirNotFound",
                             f"working directory '{spec.working_dir}' does not exist",
                             hint="create it or fix workingDir")
        return cwd

    def _env(self, spec: InstanceSpec, cwd: str) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", DEFAULT_PATH),
               "HOME": os.environ.get("HOME", "/"),
               "LANG": os.environ.get("LANG", "C.UTF-8")}
        if spec.python is not None:
            env["PYTHONUNBUFFERED"] = "1"  # logs appear as they are written
        env.update(spec.env)
        if spec.port is not None:
            env["PORT"] = str(spec.port)
        return env

    def _argv(self, spec: InstanceSpec, env: dict[str, str], cwd: str) -> list[str]:
        if spec.command is not None:
            return [resolve_command(spec.command[0], env["PATH"], cwd), *spec.command[1:]]
        return python_argv(spec.python or {}, cwd)

    async def _clear_previous(self, instance_id: str) -> None:
        """A restart reuses the instance id: kill what the last run left behind and
        start from a fresh cgroup (its OOM counter must not carry over)."""
        old = self._tracked.pop(instance_id, None)
        if old is not None:
            stat = procfs.same_process(old.handle.pid, old.handle.start_ticks)
            if stat is not None and not stat.exited:
                self._tracked[instance_id] = old
                raise StartError("InvalidSpec", f"instance {instance_id} is already running "
                                 f"(pid {old.handle.pid})", hint="stop it first")
            await self._kill_leftovers(old)
            await self._forget(old)
        stale = self.cgroups.existing(instance_id)
        if stale is not None:
            await self._empty(stale, instance_id)
            await asyncio.to_thread(stale.remove)

    def _make_cgroup(self, spec: InstanceSpec) -> InstanceCgroup | None:
        if not self.cgroups.usable:
            return None
        try:
            return self.cgroups.create(spec.id, spec.limits)
        except OSError as exc:
            raise StartError("CgroupError", f"could not set up the cgroup of {spec.id}: {exc}",
                             hint="check the limits in resources.limits") from exc

    # -- exits ---------------------------------------------------------------------------
    def _track(self, handle: Handle) -> Tracked:
        tracked = self._tracked.get(handle.id)
        if tracked is None or tracked.handle.pid != handle.pid:
            cg = handle.extra.get("cgroups")
            tracked = Tracked(handle, InstanceCgroup.from_dict(cg) if cg else None)
            self._tracked[handle.id] = tracked
        return tracked

    def _exit_future(self, t: Tracked) -> asyncio.Future[ExitStatus]:
        if t.exited is not None:
            return t.exited
        loop = asyncio.get_running_loop()
        t.exited = loop.create_future()
        try:
            t.pidfd = os.pidfd_open(t.handle.pid)
        except ProcessLookupError:
            self._finish_later(t)
            return t.exited
        if procfs.same_process(t.handle.pid, t.handle.start_ticks) is None:
            os.close(t.pidfd)  # the pid is someone else's now: ours is long gone
            t.pidfd = None
            t.exited.set_result(ExitStatus(None, message=UNKNOWN_EXIT))
            return t.exited
        loop.add_reader(t.pidfd, self._on_exit, t)
        return t.exited

    def _on_exit(self, t: Tracked) -> None:
        self._close_pidfd(t)
        self._finish_later(t)

    def _close_pidfd(self, t: Tracked) -> None:
        if t.pidfd is not None:
            asyncio.get_running_loop().remove_reader(t.pidfd)
            os.close(t.pidfd)
            t.pidfd = None

    def _finish_later(self, t: Tracked) -> None:
        task = asyncio.get_running_loop().create_task(self._finish(t))
        t.tasks.add(task)
        task.add_done_callback(t.tasks.discard)

    async def _finish(self, t: Tracked) -> None:
        status = await self._collect(t)
        if t.cgroup is not None and not t.cgroup.populated():
            # Nothing is left in it (its OOM count is read): an exited instance that is
            # kept (a finished Job's) must not keep a cgroup until it is destroyed, or
            # outlive CloudLand in the machine's tree. One with leftovers stays, so
            # destroy() can still kill them.
            await asyncio.to_thread(t.cgroup.remove)
        if t.exited is not None and not t.exited.done():
            t.exited.set_result(status)

    async def _collect(self, t: Tracked) -> ExitStatus:
        """The exit status of a process that has exited, as far as we can know it."""
        pid, code = t.handle.pid, None
        if t.handle.extra.get("zygote") and self.zygotes is not None:
            known = await self.zygotes.exit_status(pid)  # the zygote reaped it
            if known is not None:
                return self._with_oom(t, known)
        for _ in range(100):  # the pidfd fires as the process exits; the zombie follows
            try:
                reaped, wait_status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our child: re-adopted, or a zygote's
                break
            if reaped:
                code = os.waitstatus_to_exitcode(wait_status)
                if t.popen is not None:
                    t.popen.returncode = code  # so Popen never reaps or warns about it
                break
            await asyncio.sleep(0.002)
        if code is None:
            return self._with_oom(t, ExitStatus(None, message=UNKNOWN_EXIT))
        return self._with_oom(t, self._decode(code))

    def _decode(self, code: int) -> ExitStatus:
        """An ExitStatus from os.waitstatus_to_exitcode's result (negative: a signal)."""
        return ExitStatus(None, signal=-code) if code < 0 else ExitStatus(code)

    def _with_oom(self, t: Tracked, status: ExitStatus) -> ExitStatus:
        if t.force_killed or t.cgroup is None or t.cgroup.oom_kills() == 0:
            return status
        killed = status.signal == signal.SIGKILL or status.exit_code in (None, 128 + 9)
        if not killed:
            return status
        limit = t.handle.extra.get("memory_limit")
        text = f" of {limit / (1 << 20):.0f} MiB" if limit else ""
        return ExitStatus(status.exit_code, signal=status.signal, oom_killed=True,
                          message=f"killed by the kernel: memory limit{text} exceeded")

    async def wait(self, handle: Handle) -> ExitStatus:
        return await asyncio.shield(self._exit_future(self._track(handle)))

    # -- stop, destroy -------------------------------------------------------------------
    def _signal(self, t: Tracked, sig: int) -> None:
        h = t.handle
        if procfs.same_process(h.pid, h.start_ticks) is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if h.pgid == h.pid:
                os.killpg(h.pgid, sig)
            else:  # never signal a group this instance does not lead
                os.kill(h.pid, sig)

    async def stop(self, handle: Handle, *, sig: int = signal.SIGTERM,
                   grace: float | None = None) -> ExitStatus | None:
        t = self._track(handle)
        exited = self._exit_future(t)
        if not exited.done():
            self._signal(t, sig)
            try:
                await asyncio.wait_for(asyncio.shield(exited), t.grace if grace is None
                                       else grace)
            except TimeoutError:
                t.force_killed = True
                self._signal(t, signal.SIGKILL)
                if t.cgroup is not None:
                    t.cgroup.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exited), 10)
        await self._kill_leftovers(t)
        return exited.result() if exited.done() else None

    async def _kill_leftovers(self, t: Tracked, timeout: float = 5.0) -> None:
        """Kill what the instance left behind: children that outlived it."""
        h = t.handle
        # The group is surely ours while its leader is (or we just saw it exit); a
        # handle whose pid now names another process must not kill that one's group.
        ours = procfs.same_process(h.pid, h.start_ticks) is not None or (
            t.exited is not None and t.exited.done() and t.pidfd is None and not t.tasks)
        if h.pgid == h.pid and ours:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(h.pgid, signal.SIGKILL)
        if t.cgroup is not None:
            await self._empty(t.cgroup, h.id, timeout)

    @staticmethod
    async def _empty(cgroup: InstanceCgroup, instance_id: str, timeout: float = 5.0) -> None:
        """Kill everything in `cgroup` and wait until it is gone."""
        if not cgroup.populated():
            return
        cgroup.kill()
        deadline = asyncio.get_running_loop().time() + timeout
        while cgroup.populated():
            if asyncio.get_running_loop().time() > deadline:
                log.warning("cgroup of %s still populated after kill", instance_id)
                return
            await asyncio.sleep(0.005)

    async def _forget(self, t: Tracked) -> None:
        """Stop watching an instance: no pidfd, no exit task, no waiter left hanging."""
        self._close_pidfd(t)
        await asyncio.gather(*t.tasks, return_exceptions=True)  # reaping: brief
        if t.exited is not None and not t.exited.done():
            t.exited.set_result(ExitStatus(None, message="instance destroyed"))

    async def destroy(self, handle: Handle) -> None:
        t = self._track(handle)
        await self._kill_leftovers(t)
        await self._forget(t)
        self._tracked.pop(handle.id, None)
        if t.cgroup is not None:
            left = await asyncio.to_thread(t.cgroup.remove)
            if left:
                log.warning("could not remove cgroup dirs of %s: %s", handle.id, left)
        if handle.extra.get("log_dir"):
            self.rotator.unregister(Path(handle.extra["log_dir"]))
        scratch = handle.extra.get("scratch")
        if scratch:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    # -- inspect, recover, close ---------------------------------------------------------
    def inspect(self, handle: Handle) -> InstanceState:
        t = self._track(handle)
        if t.exited is not None and t.exited.done():
            return InstanceState("exited", handle.pid, exit=t.exited.result())
        stat = procfs.same_process(handle.pid, handle.start_ticks)
        if stat is None or stat.exited:
            return InstanceState("exited", handle.pid)
        cpu = t.cgroup.cpu_seconds() if t.cgroup else None
        memory = t.cgroup.memory_bytes() if t.cgroup else None
        if cpu is None or memory is None:  # no cgroup: add up the process group
            members = procfs.group_members(handle.pgid) if handle.pgid == handle.pid else [stat]
            if cpu is None:
                cpu = sum(m.cpu_seconds for m in members)
            if memory is None:
                memory = sum(m.rss_pages for m in members) * procfs.PAGE_SIZE
        return InstanceState("running", handle.pid, cpu_seconds=cpu, memory_bytes=memory)

    async def recover(self, handle: Handle) -> bool:
        if handle.driver != self.name or handle.version > HANDLE_VERSION:
            return False
        stat = procfs.same_process(handle.pid, handle.start_ticks)
        if stat is None or stat.exited:
            return False
        self._track(handle)
        if handle.extra.get("log_dir"):
            self.rotator.register(Path(handle.extra["log_dir"]))
        return True

    async def forget(self, zygote_key: str) -> None:
        """Release what is kept warm for a template (its zygote) once no instance of
        it will start again; running instances are not touched."""
        if self.zygotes is not None:
            await self.zygotes.retire_key(zygote_key)

    async def close(self) -> None:
        await self.rotator.close()
        for t in self._tracked.values():
            self._close_pidfd(t)
            for task in t.tasks:
                task.cancel()
            if t.exited is not None and not t.exited.done():
                t.exited.cancel()
        self._tracked.clear()
        if self._owns_cgroup_parent:
            self.cgroups.release()
