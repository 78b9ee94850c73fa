"""How the CLI prints: tables, YAML/JSON for scripts, errors with hints.

Colour goes to terminals only (rich decides); `-o json|yaml` output is plain
so scripts can parse it, and a table sent to a pipe keeps each row on one line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
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


def age(timestamp: str | None) -> str:
    """'2026-01-01T00:00:00Z' -> '5m' like kubectl."""
    if not timestamp:
        return ""
    from datetime import UTC, datetime

    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return ""
    seconds = int((datetime.now(UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"
