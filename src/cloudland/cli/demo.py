"""`cloudland demo`: start CloudLand if needed, apply the park, show what runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudland.cli.columns import kind_view
from cloudland.cli.lifecycle import start_detached
from cloudland.cli.options import HomeOption
from cloudland.cli.output import console, table
from cloudland.cli.stacks import prepare
from cloudland.client import Client
from cloudland.errors import BadRequest
from cloudland.home import Home
from cloudland.model.kinds import KINDS


def find_park() -> Path:
    """examples/park next to the source tree, or in the current directory."""
    here = Path(__file__).resolve()
    for root in (*here.parents, Path.cwd()):
        candidate = root / "examples" / "park"
        if candidate.is_dir():
            return candidate
    raise BadRequest("examples/park not found", hint="run from a CloudLand checkout, or pass -f")


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Lifecycle")(demo)


def demo(
    home: HomeOption = None,
    filename: Annotated[Path | None, typer.Option(
        "--filename", "-f", help="Manifests to apply instead of examples/park.")] = None,
) -> None:
    """Start CloudLand (if it is not running) and apply the demo park."""
    where = Home.resolve(home)
    if not where.running_state():
        start_detached(where, "127.0.0.1", 0)
    park = filename or find_park()
    _, items, stack = prepare([str(park)], True, None, None)
    with Client.from_home(where) as client:
        with console.status(f"Applying {len(items)} objects from {park}…"):
            result = client.apply(items, stack=stack)
        created = sum(i["action"] == "created" for i in result["items"])
        console.print(f"[green]✓[/] Applied the park: {len(result['items'])} objects "
                      f"({created} new) from {park}\n")
        for info in KINDS.values():
            found = client.list(info.kind, "default", f"cloudland.io/stack={stack}")["items"]
            if found:
                view = kind_view(info)
                table(view.headers, view.rows(found), title=f"[bold]{info.plural}[/]")
                console.print()
    flag = "" if where.root == Home.resolve().root else f" --home {where.root}"
    console.print("Look around:")
    for command in ("status", "get services -o wide", "describe route gate", "events",
                    "plan -f examples/park", "down"):
        console.print(f"  [cyan]cloudland {command}{flag}[/]")
