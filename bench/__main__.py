"""`python -m bench [--json PATH] [--only NAME ...]`: run the benchmarks, print one table.

Order matters on a two-core machine: the idle-memory reading comes first on a
fresh daemon, load comes after, and the 1,000-object apply gets a daemon of
its own so the controllers' work on its Services cannot skew the latency rows.
Exits 0 whatever the numbers are: it reports, it does not judge.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import api, apply, daemon, gateway, gateway_control, services, storage, watch
from bench.harness import ROOT, Row, failed
from bench.harness import daemon as start_daemon

SUITES = ("daemon", "api", "watch", "apply", "services", "routing", "storage", "gateway")


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit == "s":
        text = f"{value:.3f}" if value < 10 else f"{value:.1f}"
    elif unit in ("req/s", "req"):  # rates and request counts: whole numbers
        text = f"{value:,.0f}"
    else:
        text = f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return f"{text} {unit}".strip()


def render(rows: list[Row], console: Console) -> None:
    table = Table(title="CloudLand benchmarks", title_justify="left")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("baseline (same run)", justify="right")
    table.add_column("ratio", justify="right")
    for row in rows:
        met = row.met
        colour = {True: "green", False: "red", None: ""}[met]
        value = _fmt(row.value, row.unit)
        target = "—" if row.target is None else (
            ("≤ " if row.sense == "max" else "≥ ") + _fmt(row.target, row.unit))
        baseline = "—" if row.baseline is None else (
            f"{_fmt(row.baseline, row.unit)} [dim]{row.baseline_label}[/]")
        ratio = "—" if row.ratio is None else f"{row.ratio:.1f}x"
        table.add_row(row.metric, f"[{colour}]{value}[/]" if colour else value, target,
                      baseline, ratio)
    console.print(table)
    seen: set[str] = set()
    for row in rows:
        if row.note and row.note not in seen:
            seen.add(row.note)
            console.print(f"[dim]{row.metric.strip()}: {row.note}[/]")


def _guard(name: str, rows: list[Row], fn: Callable[[], list[Row]], console: Console) -> None:
    """Run one suite; a failure becomes a row, and the other suites still run."""
    start = time.perf_counter()
    console.print(f"[dim]running {name}…[/]")
    try:
        rows.extend(fn())
    except Exception as exc:  # a benchmark boundary: report, carry on
        rows.append(failed(name, "", f"{type(exc).__name__}: {exc}"[:300]))
    console.print(f"[dim]  {name} took {time.perf_counter() - start:.1f} s[/]")


def run(only: list[str], console: Console) -> list[Row]:
    rows: list[Row] = []
    selected = set(only or SUITES)
    if selected & {"daemon", "api", "watch"}:
        try:
            with start_daemon() as server:
                if "daemon" in selected:
                    _guard("idle memory", rows, lambda: daemon.idle_rss(server), console)
                if "watch" in selected:
                    _guard("watch", rows, lambda: watch.measure(server), console)
                if "api" in selected:
                    _guard("api", rows, lambda: api.measure(server), console)
                first = server
            if "daemon" in selected:
                _guard("ready time", rows, lambda: [daemon.ready_time(first)], console)
        except Exception as exc:
            rows.append(failed("cloudland up", "", f"{type(exc).__name__}: {exc}"[:300]))
    if "apply" in selected:
        def apply_suite() -> list[Row]:
            with start_daemon() as server:
                return apply.measure(server)
        _guard("apply", rows, apply_suite, console)
    if "services" in selected:  # its own daemon: 500 replicas, healing, a rollout
        _guard("services", rows, services.measure, console)
    if "routing" in selected:  # its own daemon: Route changes and endpoints reaching Envoy
        _guard("routing", rows, gateway_control.measure, console)
    if "storage" in selected:  # its own daemon and moto's S3 server, boto3 against both
        _guard("storage", rows, storage.measure, console)
    if "gateway" in selected:  # last: wrk saturates both cores for ~85 s
        _guard("gateway", rows, gateway.measure, console)
    return rows


def _busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _our_seconds() -> float:
    """CPU-seconds used by this process and the children it has waited for (daemons, CLIs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def environment() -> dict[str, object]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="PATH", type=Path, help="also save results as JSON")
    parser.add_argument("--only", nargs="+", choices=SUITES, default=[],
                        help="run only these suites")
    args = parser.parse_args(argv)
    console = Console()
    if not console.is_terminal:  # piped or redirected: do not squeeze the table into 80
        console = Console(width=130)
    started = time.perf_counter()
    busy0, ours0 = _busy_seconds(), _our_seconds()
    rows = run(args.only, console)
    others = (_busy_seconds() - busy0) - (_our_seconds() - ours0)
    wall = time.perf_counter() - started
    render(rows, console)
    console.print(f"[dim]total {wall:.0f} s on {os.cpu_count()} CPU(s), "
                  f"Python {platform.python_version()}; other processes used "
                  f"{max(others, 0):.1f} CPU-s meanwhile[/]")
    if others > 0.1 * wall:
        console.print(f"[yellow]warning: the machine was busy with other work "
                      f"({others:.1f} CPU-s in {wall:.0f} s); latency rows are noisy — "
                      "run again on a quiet machine[/]")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        env = {**environment(), "wall_s": wall, "other_cpu_s": others}
        args.json.write_text(json.dumps({"environment": env,
                                         "rows": [r.to_dict() for r in rows]}, indent=2))
        console.print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
