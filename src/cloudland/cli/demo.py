"""`cloudland demo`: start CloudLand if needed, apply the examples, show what runs."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cloudland.cli.columns import kind_view
from cloudland.cli.lifecycle import start_detached
from cloudland.cli.options import HomeOption
from cloudland.cli.output import console, err_console, table
from cloudland.cli.stacks import prepare
from cloudland.client import Client
from cloudland.errors import BadRequest
from cloudland.home import Home
from cloudland.model.kinds import KINDS


def find_examples() -> Path:
    """examples/ next to the source tree, or in the current directory."""
    here = Path(__file__).resolve()
    for root in (*here.parents, Path.cwd()):
        candidate = root / "examples"
        if (candidate / "park").is_dir():
            return candidate
    raise BadRequest("examples/ not found", hint="run from a CloudLand checkout")


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Lifecycle")(demo)


def demo(
    home: HomeOption = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the services.")] = 30.0,
) -> None:
    """Start CloudLand (if it is not running) and apply the demo park and hello services."""
    where = Home.resolve(home)
    if not where.running_state():
        start_detached(where, "127.0.0.1", 0,
                       int(os.environ.get("CLOUDLAND_GATEWAY_PORT", "8080")))
    examples = find_examples()
    stacks = {"park": [str(examples / "park")], "hello": [str(examples / "hello" / "hello.yaml")]}
    if shutil.which("nginx"):
        stacks["hello"].append(str(examples / "hello" / "nginx.yaml"))
    else:
        err_console.print("[dim]note: nginx is not installed, so the nginx service is skipped "
                          "(apt-get install nginx)[/]")
    with Client.from_home(where) as client:
        for stack, files in stacks.items():
            _, items, _ = prepare(files, True, stack, None)
            with console.status(f"Applying {stack}…"):
                result = client.apply(items, stack=stack)
            console.print(f"[green]✓[/] {stack}: {len(result['items'])} objects applied")
        services = _wait_for_services(client, wait)
        console.print()
        for info in KINDS.values():
            found = [o for o in client.list(info.kind, "default")["items"]
                     if o["metadata"].get("labels", {}).get("cloudland.io/stack") in stacks]
            if found:
                view = kind_view(info)
                table(view.headers, view.rows(found), title=f"[bold]{info.plural}[/]")
                console.print()
    for svc in services:
        endpoints = (svc.get("status") or {}).get("endpoints") or []
        if endpoints:
            console.print(f"  {svc['metadata']['name']:<12} http://{endpoints[0]}/"
                          f"  ({len(endpoints)} ready)")
    state = where.read_state() or {}
    if state.get("gateway"):
        console.print(f"\nThrough the gateway (Envoy): [bold]curl -H 'Host: park.localhost' "
                      f"{state['gateway']}/[/]")
    if state.get("s3"):
        console.print(f"S3 object storage: [bold]{state['s3']}[/] "
                      "(an access key: cloudland keys create)")
    flag = "" if where.root == Home.resolve().root else f" --home {where.root}"
    console.print("\nLook around:")
    for command in ("status", "get services -o wide", "logs wait-times", "describe route gate",
                    "events", "plan -f examples/park", "down"):
        console.print(f"  [cyan]cloudland {command}{flag}[/]")


def _wait_for_services(client: Client, seconds: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    with console.status("Waiting for the services to be ready…"):
        while True:
            services = client.list("Service", "default")["items"]
            pending = [s for s in services if (s.get("status") or {}).get("readyReplicas", 0)
                       < s["spec"].get("replicas", 1)]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    for svc in pending:
        err_console.print(f"[yellow]service/{svc['metadata']['name']} is not ready yet; "
                          f"see: cloudland describe service {svc['metadata']['name']}[/]")
    return list(services)
