"""Per-instance cgroups: limits, usage, OOM counts and whole-tree kill.

Owned by the runtime drivers (`process.py`).  `CgroupHost.detect()` finds,
once, which hierarchies this process may write: v1 `memory`, `cpu` and `pids`
for limits, and the v2 (unified) tree for `cgroup.kill`, `cgroup.events` and
CPU usage.  On hybrid hosts both are used side by side; on pure v2 hosts the
unified tree also carries the limits when its controllers are delegated to us.
CloudLand's cgroups live under `<our cgroup>/<parent>/<instance id>` in each
hierarchy.  Whatever is not writable is left out and said in `note`; the
driver then falls back to process groups.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudland.runtime.driver import Limits

ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "cpu", "pids")
CFS_PERIOD_US = 100_000


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def _keyed(text: str | None, key: str) -> int | None:
    """The value of `key` in a flat-keyed cgroup file such as memory.stat or cpu.stat."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return None


def current_paths(proc_cgroup: str | None = None) -> dict[str, str]:
    """Our cgroup in each hierarchy, from /proc/self/cgroup: {"memory": "/a/b", "": "/"}."""
    text = proc_cgroup if proc_cgroup is not None else _read(Path("/proc/self/cgroup")) or ""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


@dataclass(frozen=True)
class InstanceCgroup:
    """The cgroup directories of one instance, by role: v1 "memory", "cpu", "pids"
    and "unified" (v2; on pure v2 hosts it also holds the limits)."""

    dirs: dict[str, str]
    v2: bool = False  # limits live in the unified dir (pure v2 host)
    unified_rel: str | None = None  # the unified dir relative to its mount, for Handle.cgroup

    def _dir(self, role: str) -> Path | None:
        path = self.dirs.get(role)
        return Path(path) if path else None

    def procs_files(self) -> list[str]:
        """Files a new process writes its pid into to join every hierarchy."""
        return [str(Path(d) / "cgroup.procs") for d in self.dirs.values()]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs.values():
            found.update(int(p) for p in (_read(Path(d) / "cgroup.procs") or "").split())
        return found

    def populated(self) -> bool:
        unified = self._dir("unified")
        if unified is not None:
            events = _read(unified / "cgroup.events")
            if events is not None:
                return _keyed(events, "populated") == 1
        return bool(self.pids())

    def kill(self) -> None:
        """SIGKILL everything inside, escaped grandchildren included."""
        unified = self._dir("unified")
        if unified is not None and _write(unified / "cgroup.kill", "1"):
            return
        # v1 only: no atomic kill; sweep until nothing new appears.
        for _ in range(10):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.001)

    def memory_bytes(self) -> int | None:
        """Working set (usage minus inactive file cache), as the kubelet reports it."""
        memory = self._dir("unified" if self.v2 else "memory")
        if memory is None:
            return None
        usage = _read(memory / ("memory.current" if self.v2 else "memory.usage_in_bytes"))
        if usage is None:
            return None
        stat = _read(memory / "memory.stat")
        inactive = _keyed(stat, "inactive_file" if self.v2 else "total_inactive_file") or 0
        return max(int(usage) - inactive, 0)

    def cpu_seconds(self) -> float | None:
        unified = self._dir("unified")
        usec = _keyed(_read(unified / "cpu.stat"), "usage_usec") if unified else None
        return usec / 1e6 if usec is not None else None

    def oom_kills(self) -> int:
        memory = self._dir("unified" if self.v2 else "memory")
        if memory is None:
            return 0
        text = _read(memory / ("memory.events" if self.v2 else "memory.oom_control"))
        return _keyed(text, "oom_kill") or 0

    def remove(self) -> list[str]:
        """rmdir every directory; returns the ones that could not be removed (still busy)."""
        left = []
        for d in self.dirs.values():
            for attempt in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if attempt == 49:
                        left.append(d)
                    else:
                        time.sleep(0.002)  # tasks that just exited may linger for a moment
        return left

    def to_dict(self) -> dict[str, Any]:
        return {"dirs": dict(self.dirs), "v2": self.v2, "unified_rel": self.unified_rel}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceCgroup:
        return cls(dirs=dict(data.get("dirs") or {}), v2=bool(data.get("v2")),
                   unified_rel=data.get("unified_rel"))


@dataclass
class CgroupHost:
    """Which cgroup hierarchies we may write, and the parent directory in each."""

    parents: dict[str, Path] = field(default_factory=dict)  # role -> parent dir
    v2_limits: set[str] = field(default_factory=set)  # controllers delegated on pure v2
    unified_mount: Path | None = None
    note: str = ""

    @classmethod
    def detect(cls, parent: str = "cloudland", root: Path = ROOT,
               proc_cgroup: str | None = None) -> CgroupHost:
        host = cls()
        mine = current_paths(proc_cgroup)
        missing: list[str] = []

        def place(mount: Path, current: str) -> Path | None:
            base = Path("/") if parent.startswith("/") else Path(current)
            path = mount / str(base).lstrip("/") / parent.lstrip("/")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError:
                return None
            return path if os.access(path, os.W_OK) else None

        pure_v2 = (root / "cgroup.controllers").exists()
        host.unified_mount = root if pure_v2 else root / "unified"
        if "" in mine and (host.unified_mount / "cgroup.procs").exists():
            unified = place(host.unified_mount, mine[""])
            if unified is not None:
                host.parents["unified"] = unified
        if "unified" not in host.parents:
            missing.append("cgroup v2 (whole-tree kill)")
        if pure_v2 and "unified" in host.parents:
            host.v2_limits = host._delegate_v2(host.parents["unified"])
            missing += [c for c in V1_CONTROLLERS if c not in host.v2_limits]
        elif not pure_v2:
            for name in V1_CONTROLLERS:
                mount = root / name
                placed = place(mount, mine[name]) if name in mine and mount.is_dir() else None
                if placed is None:
                    missing.append(name)
                else:
                    host.parents[name] = placed
        if missing:
            host.note = ("cgroups not writable here for: " + ", ".join(missing)
                         + "; using process groups for what is missing")
        return host

    @staticmethod
    def _delegate_v2(parent: Path) -> set[str]:
        available = set((_read(parent / "cgroup.controllers") or "").split())
        wanted = available & set(V1_CONTROLLERS)
        if wanted:
            _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
        enabled = set((_read(parent / "cgroup.subtree_control") or "").split())
        return wanted & enabled

    @property
    def usable(self) -> bool:
        return bool(self.parents)

    @property
    def whole_tree_kill(self) -> bool:
        return "unified" in self.parents

    @property
    def memory(self) -> bool:
        return "memory" in self.parents or "memory" in self.v2_limits

    def release(self) -> None:
        """Remove the parent directories if nothing is left in them: an empty parent
        outliving its CloudLand is a leak (one per home and run, under a machine-wide
        tree); one that still holds instances is kept (rmdir refuses)."""
        for path in self.parents.values():
            with contextlib.suppress(OSError):
                os.rmdir(path)

    def existing(self, instance_id: str) -> InstanceCgroup | None:
        """The directories an earlier run of `instance_id` left, if any."""
        dirs = {role: str(parent / instance_id) for role, parent in self.parents.items()
                if (parent / instance_id).is_dir()}
        return InstanceCgroup(dirs) if dirs else None

    def create(self, instance_id: str, limits: Limits) -> InstanceCgroup:
        """Make the instance's directories and apply its limits (OSError if impossible)."""
        dirs: dict[str, str] = {}
        try:
            for role, parent in self.parents.items():
                path = parent / instance_id
                path.mkdir(exist_ok=True)
                dirs[role] = str(path)
            unified_rel = None
            if "unified" in dirs and self.unified_mount is not None:
                unified_rel = str(Path(dirs["unified"]).relative_to(self.unified_mount))
            cgroup = InstanceCgroup(dirs, v2=bool(self.v2_limits), unified_rel=unified_rel)
            self._apply(cgroup, limits)
        except OSError:
            InstanceCgroup(dirs).remove()
            raise
        return cgroup

    def _apply(self, cgroup: InstanceCgroup, limits: Limits) -> None:
        d = {role: Path(p) for role, p in cgroup.dirs.items()}
        if cgroup.v2:
            u = d["unified"]
            if limits.memory_bytes is not None and "memory" in self.v2_limits:
                (u / "memory.max").write_text(str(limits.memory_bytes))
                _write(u / "memory.swap.max", "0")
            if limits.cpu_millis is not None and "cpu" in self.v2_limits:
                quota = max(limits.cpu_millis * CFS_PERIOD_US // 1000, 1000)
                (u / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
            if limits.pids is not None and "pids" in self.v2_limits:
                (u / "pids.max").write_text(str(limits.pids))
            return
        if limits.memory_bytes is not None and "memory" in d:
            (d["memory"] / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
            # Without swap in the limit too, a full cgroup swaps instead of being OOM-killed.
            _write(d["memory"] / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        if limits.cpu_millis is not None and "cpu" in d:
            (d["cpu"] / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            quota = max(limits.cpu_millis * CFS_PERIOD_US // 1000, 1000)
            (d["cpu"] / "cpu.cfs_quota_us").write_text(str(quota))
        if limits.pids is not None and "pids" in d:
            (d["pids"] / "pids.max").write_text(str(limits.pids))
