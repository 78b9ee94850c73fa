"""The sandbox driver: the process driver with every instance inside bubblewrap.

Owned by the runtime package; built by `daemon/` beside the process driver.
Everything but the argv is the process driver's (sessions, cgroups, logs,
waiting, stop, recover): the argv becomes `bwrap <isolation> -- argv`.
An instance gets new pid, ipc and uts namespaces (network too when
`share_net=False`), the host's system directories read-only, its own /proc,
/dev and /tmp, its working directory writable, and no capabilities — as root,
bwrap keeps them unless told `--cap-drop ALL`.

Deliberately absent: `--die-with-parent` (instances must outlive a CloudLand
restart) and `--new-session` (the instance must stay in the process group the
driver signals; it already runs in a session with no terminal, so there is no
tty to inject into).  bwrap's own init is pid 1 inside, the command pid 2;
SIGTERM to the group reaches the command, and when it exits bwrap exits with
its status.  Python workloads are exec'd here, never forked from a zygote.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import ClassVar, Literal

import cloudland
from cloudland.runtime import procfs
from cloudland.runtime.driver import Capabilities, ExitStatus, Handle, InstanceSpec, StartError
from cloudland.runtime.logs import MAX_BYTES
from cloudland.runtime.process import ProcessDriver, Tracked

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
MISSING = "bubblewrap (bwrap) is not installed"
INSTALL_HINT = "apt-get install bubblewrap"


class SandboxDriver(ProcessDriver):
    name = "sandbox"
    isolation: ClassVar[Literal["none", "namespaces", "container"]] = "namespaces"

    def __init__(self, run_dir: Path, *, cgroup_parent: str = "cloudland",
                 owns_cgroup_parent: bool = False,
                 share_net: bool = True, bwrap: str | None = None,
                 log_max_bytes: int = MAX_BYTES, log_interval: float = 1.0) -> None:
        super().__init__(run_dir, cgroup_parent=cgroup_parent,
                         owns_cgroup_parent=owns_cgroup_parent, zygotes=None,
                         log_max_bytes=log_max_bytes, log_interval=log_interval)
        self.share_net = share_net
        self.bwrap = bwrap or shutil.which("bwrap")
        self._broken: str | None = None  # why bwrap cannot run here, once probed
        self._probed = False

    def _probe(self) -> str | None:
        """Why sandboxes cannot start here (None: they can); checked once."""
        if self.bwrap is None or not os.access(self.bwrap, os.X_OK):
            return MISSING
        if not self._probed:
            self._probed = True
            probe = [self.bwrap, *self._isolation([]), "--", "/bin/true"]
            try:
                done = subprocess.run(probe, capture_output=True, timeout=10)
                if done.returncode != 0:
                    self._broken = ("bubblewrap cannot create namespaces here: "
                                    + done.stderr.decode(errors="replace").strip())
            except (OSError, subprocess.TimeoutExpired) as exc:
                self._broken = f"bubblewrap does not run here: {exc}"
        return self._broken

    def capabilities(self) -> Capabilities:
        caps = super().capabilities()
        problem = self._probe()
        if problem is None:
            return caps
        note = f"{problem}; sandboxed instances cannot start" + (
            f"; {caps.note}" if caps.note else "")
        return Capabilities(cgroups=caps.cgroups, memory_limit=caps.memory_limit,
                            oom_detection=caps.oom_detection, isolation="none", note=note)

    async def start(self, spec: InstanceSpec) -> Handle:
        problem = self._probe() if self._probed else await asyncio.to_thread(self._probe)
        if problem is not None:
            raise StartError("SandboxUnavailable", problem,
                             hint=INSTALL_HINT if problem == MISSING else None)
        return await super().start(spec)

    def _may_fork(self, spec: InstanceSpec) -> bool:
        return False

    def _signal(self, t: Tracked, sig: int) -> None:
        """Graceful signals go to the instance's processes but not to the outer bwrap,
        which would die at once (it handles no signals) and end the instance early;
        it exits by itself, with the command's status, when the command does."""
        h = t.handle
        if sig == signal.SIGKILL or procfs.same_process(h.pid, h.start_ticks) is None:
            super()._signal(t, sig)
            return
        pids = t.cgroup.pids() if t.cgroup else {m.pid for m in procfs.group_members(h.pgid)}
        for pid in pids - {h.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _decode(self, code: int) -> ExitStatus:
        """bwrap reports a command killed by signal N as exit code 128 + N."""
        if 128 < code < 128 + signal.NSIG:
            return ExitStatus(None, signal=code - 128)
        return super()._decode(code)

    def _env(self, spec: InstanceSpec, cwd: str) -> dict[str, str]:
        env = super()._env(spec, cwd)
        if "HOME" not in spec.env:
            env["HOME"] = cwd  # the host's home is not in the sandbox
        return env

    def _wrap(self, argv: list[str], spec: InstanceSpec, cwd: str) -> list[str]:
        assert self.bwrap is not None
        # A program under <prefix>/bin usually needs <prefix> (its libraries, its stdlib);
        # bind both the path it is called by (a virtualenv's bin/python, say) and the
        # file it really is.
        called = Path(argv[0])
        binds = [_prefix(Path(os.path.realpath(called)))]
        if called.is_absolute():
            binds.append(_prefix(called))
        if spec.python is not None:
            binds += [sys.base_prefix, sys.prefix, str(Path(cloudland.__file__).parent.parent)]
        binds += [p for p in spec.env.get("PATH", "").split(":") if p]
        return [self.bwrap, *self._isolation(binds), "--bind", cwd, cwd, "--chdir", cwd,
                "--", *argv]

    def _isolation(self, extra_ro: list[str]) -> list[str]:
        """bwrap options: namespaces, capabilities, and a read-only view of the host."""
        args = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--cap-drop", "ALL"]
        if not self.share_net:
            args.append("--unshare-net")
        bound: list[str] = []
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
                bound.append(path)
        # Before the extra binds: a tmpfs on /tmp would hide a bind below it.
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        resolv = os.path.realpath("/etc/resolv.conf")
        for path in [resolv, *extra_ro]:
            real = os.path.realpath(path)
            covered = any(real == b or real.startswith(b + "/") for b in bound)
            if os.path.exists(real) and not covered:
                args += ["--ro-bind", real, real]
                bound.append(real)
        return args


def _prefix(exe: Path) -> str:
    return str(exe.parent.parent if exe.parent.name in ("bin", "sbin") else exe.parent)
