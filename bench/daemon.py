"""`cloudland up`: time to ready (target < 1 s) and idle memory (target <= 80 MB).

Ready time runs from spawning the process until state.json names it and
/readyz answers; the baseline is starting and ending a bare interpreter
(`python -c pass`).  Idle RSS is the summed VmRSS of the supervisor and every
process it started, read after it has idled for a while; the baseline is a
bare `python -c "import time; time.sleep(5)"`.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.harness import Daemon, Row, daemon, median, rss_kib, time_command, tree_rss_kib

IDLE_S = 2.0


def bare_python_rss_kib() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"],
                            start_new_session=True)
    try:
        time.sleep(0.5)
        return tree_rss_kib(proc.pid)[0]
    finally:
        proc.kill()
        proc.wait(5)


def idle_rss(server: Daemon) -> list[Row]:
    """The supervisor's own RSS (issue 2's target), and its managed children apart:
    Envoy is a separate data plane with its own budget (issue 4 reports it)."""
    time.sleep(IDLE_S)
    own = rss_kib(server.proc.pid)
    kib, procs = tree_rss_kib(server.proc.pid)
    base = bare_python_rss_kib()
    note = f"after {IDLE_S:.0f} s idle"
    return [
        Row("`up` idle RSS (supervisor)", own / 1024, "MB", base / 1024,
            "bare python sleeping", target=80.0, note=note),
        Row("  managed children (Envoy) idle RSS", (kib - own) / 1024, "MB", base / 1024,
            "bare python sleeping", note=f"{procs - 1} process(es), {note}"),
    ]


def ready_time(first: Daemon, *, extra_runs: int = 2) -> Row:
    """Median ready time over `first` and `extra_runs` more fresh starts."""
    times = [first.ready_s]
    for _ in range(extra_runs):
        with daemon() as server:
            times.append(server.ready_s)
    base = time_command([sys.executable, "-c", "pass"], runs=5)
    return Row("`up` ready time", median(times), "s", base, "python -c pass", target=1.0,
               note=f"median of {len(times)}: " + ", ".join(f"{t:.2f}" for t in times))
