"""How the CLI prints: tables, YAML/JSON for scripts, errors with hints.

Colour goes to terminals only (rich decides); `-o json|yaml` output is plain
so scripts can parse it, and a table sent to a pipe keeps each row on one line.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, NoReturn

import yaml
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from cloudland.errors import CloudLandError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
UNBOUNDED = 1 << 20  # columns: wider than any table


class Format(StrEnum):
    table = "table"
    wide = "wide"
    yaml = "yaml"
    json = "json"


def dump(data: Any, fmt: Format | str) -> None:
    """Print data as JSON or YAML, unstyled, for scripts."""
    if str(getattr(fmt, "value", fmt)) == "json":
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    sys.stdout.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
          title: str | None = None) -> None:
    t = Table(title=title, box=None, header_style="bold", pad_edge=False, show_edge=False)
    for h in headers:
        t.add_column(h, overflow="fold")
    for row in rows:
        t.add_row(*("" if c is None else str(c) for c in row))
    if console.is_terminal:
        console.print(t)
    else:
        # Scripts read one row per line (grep, awk), as from kubectl: a pipe is no
        # 80-column screen, so never fold a cell onto the next line there.
        natural = Measurement.get(console, console.options.update_width(UNBOUNDED), t)
        wide = Console(highlight=False, width=max(console.width, natural.maximum))
        with wide.capture() as captured:
            wide.print(t)
        sys.stdout.write("".join(line.rstrip() + "\n"
                                 for line in captured.get().splitlines()))
        sys.stdout.flush()


def fail(err: CloudLandError | str, *, code: int = 1, where: str | None = None) -> NoReturn:
    """Print an error the way every command does, and exit non-zero."""
    if isinstance(err, str):
        err = CloudLandError(err)
    prefix = f"{where}: " if where else ""
    err_console.print(f"[bold red]error:[/] {prefix}{err}", markup=True, soft_wrap=True)
    if err.hint:
        err_console.print(f"  [dim]hint:[/] {err.hint}", soft_wrap=True)
    raise SystemExit(code)


def moment(timestamp: str | None) -> float | None:
    """'2026-01-01T00:00:00Z' -> seconds since the epoch; None if absent or malformed."""
    if not timestamp:
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def span(seconds: float) -> str:
    """A length of time as kubectl prints ages: '45s', '5m', '3h', '2d'."""
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size * (2 if unit != "m" else 1):
            return f"{whole // size}{unit}"
    return f"{max(whole, 0)}s"


def age(timestamp: str | None) -> str:
    """'2026-01-01T00:00:00Z' -> '5m' like kubectl."""
    then = moment(timestamp)
    return "" if then is None else span(time.time() - then)


def duration(start: str | None, end: str | None) -> str:
    """From `start` to `end` (or now, while it runs) like kubectl's DURATION; '' unstarted."""
    began, ended = moment(start), moment(end)
    if began is None:
        return ""
    return span((time.time() if ended is None else ended) - began)
