"""Shared pieces: result rows, percentiles, process timing, and a real daemon.

`Daemon` starts `cloudland up` on port 0 in a temporary home, in its own
process group, and always stops it (SIGTERM to the group, then SIGKILL), so a
benchmark that fails half-way never leaves a server behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclass
class Row:
    """One line of the table: a measurement, its target and its baseline."""

    metric: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: float | None = None
    # "max": value must be at most target; "min": at least.
    sense: Literal["max", "min"] = "max"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0 or math.isnan(self.value):
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.target is None or math.isnan(self.value):
            return None
        return self.value <= self.target if self.sense == "max" else self.value >= self.target

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = self.ratio
        out["met"] = self.met
        return out


def failed(metric: str, unit: str, why: str, *, target: float | None = None) -> Row:
    """A row for a benchmark that could not run: it shows, rather than aborting the rest."""
    return Row(metric, float("nan"), unit, target=target, note=f"failed: {why}")


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of the samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


def time_command(cmd: list[str], *, runs: int = 3, timeout: float = 60.0,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    """Median wall time in seconds of running `cmd` to completion."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=timeout, env=env, cwd=cwd, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: "
                               f"{proc.stderr.decode(errors='replace')[-500:]}")
    return median(times)


def child_env() -> dict[str, str]:
    """The environment for CloudLand children: quiet logs, no inherited home."""
    env = {k: v for k, v in os.environ.items() if k != "CLOUDLAND_HOME"}
    env.setdefault("CLOUDLAND_LOG_LEVEL", "WARNING")
    return env


# ---- memory -------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; fields follow the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def rss_kib(pid: int) -> int:
    """VmRSS in KiB of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> tuple[int, int]:
    """Summed VmRSS of `pid` and all its descendants, and how many processes that was."""
    tree = _children()
    total, count, todo = 0, 0, [pid]
    while todo:
        current = todo.pop()
        total += rss_kib(current)
        count += 1
        todo.extend(tree.get(current, []))
    return total, count


# ---- the daemon ---------------------------------------------------------------


@dataclass
class Daemon:
    home: Path
    proc: subprocess.Popen[bytes]
    api: str
    ready_s: float

    @property
    def host_port(self) -> tuple[str, int]:
        rest = self.api.split("://", 1)[1]
        host, port = rest.rsplit(":", 1)
        return host.strip("[]"), int(port)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.home / "bench-daemon.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    # Children the supervisor started may outlive it in its group; end them too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _readyz(api: str) -> bool:
    try:
        with urllib.request.urlopen(api + "/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def daemon(*extra: str) -> Iterator[Daemon]:
    """A running `cloudland up` on port 0 in a fresh temporary home.

    `ready_s` is the time from spawn until state.json names the process and
    /readyz has answered 200.
    """
    home = Path(tempfile.mkdtemp(prefix="cloudland-bench-"))
    log = open(home / "bench-daemon.log", "ab")  # noqa: SIM115 -- handed to the child
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudland", "up", "--home", str(home), "--api-port", "0",
         "--gateway-port", "0", "--s3-port", "0",
         *extra],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        env=child_env(), cwd=home,
    )
    log.close()
    try:
        deadline = start + READY_TIMEOUT
        api = None
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                tail = (home / "bench-daemon.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"cloudland up exited {proc.returncode}:\n{tail}")
            try:
                state = json.loads((home / "state.json").read_text())
            except (OSError, ValueError):
                state = None
            if state and state.get("pid") == proc.pid and _readyz(str(state["api"])):
                api = str(state["api"])
                break
            time.sleep(0.002)
        ready_s = time.perf_counter() - start
        if api is None:
            raise RuntimeError(f"cloudland up was not ready in {READY_TIMEOUT:.0f}s")
        yield Daemon(home, proc, api, ready_s)
    finally:
        _stop(proc)
        shutil.rmtree(home, ignore_errors=True)
