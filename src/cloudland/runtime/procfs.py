"""Reading processes from /proc: identity (pid + start time), state and usage.

Owned by the runtime drivers.  A pid alone does not name a process — the
kernel reuses pids — so every check pairs it with `start_ticks` (field 22 of
/proc/<pid>/stat, clock ticks after boot), which is what handles persist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str  # R S D Z T ...; Z is a zombie (exited, not yet reaped)
    ppid: int
    pgid: int
    utime: int  # clock ticks
    stime: int
    start_ticks: int
    rss_pages: int

    @property
    def cpu_seconds(self) -> float:
        return (self.utime + self.stime) / CLK_TCK

    @property
    def exited(self) -> bool:
        return self.state in ("Z", "X")


def read_stat(pid: int) -> ProcStat | None:
    """The parsed /proc/<pid>/stat, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); field N of proc(5) is fields[N - 3].
    return ProcStat(pid=pid, state=fields[0], ppid=int(fields[1]), pgid=int(fields[2]),
                    utime=int(fields[11]), stime=int(fields[12]),
                    start_ticks=int(fields[19]), rss_pages=int(fields[21]))


def start_ticks(pid: int) -> int | None:
    stat = read_stat(pid)
    return stat.start_ticks if stat else None


def same_process(pid: int, ticks: int) -> ProcStat | None:
    """The process `pid` if it is still the one that started at `ticks` (zombies included)."""
    stat = read_stat(pid)
    return stat if stat is not None and stat.start_ticks == ticks else None


def status_field(pid: int, name: str) -> str | None:
    """One line of /proc/<pid>/status, e.g. status_field(pid, "CapEff")."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == name:
                    return value.strip()
    except OSError:
        return None
    return None


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def group_members(pgid: int) -> list[ProcStat]:
    """Live processes of one process group (a /proc scan: fallback when there is no cgroup)."""
    members = []
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is not None and stat.pgid == pgid and not stat.exited:
            members.append(stat)
    return members
