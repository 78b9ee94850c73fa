"""`up`, `down` and `status`: start, stop and inspect the supervisor of a home."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Annotated, Any

import typer

from cloudland.cli.options import HomeOption, OutputOption
from cloudland.cli.output import Format, console, dump, err_console, fail, table
from cloudland.errors import CloudLandError, Unavailable
from cloudland.home import Home

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Lifecycle")(up)
    app.command(rich_help_panel="Lifecycle")(down)
    app.command(rich_help_panel="Lifecycle")(status)


def up(
    home: HomeOption = None,
    api_port: Annotated[int, typer.Option("--api-port", envvar="CLOUDLAND_API_PORT",
                                          help="API port; 0 picks a free one.",
                                          min=0, max=65535)] = 7070,
    api_host: Annotated[str, typer.Option("--api-host", help="Address to listen on.")] = (
        "127.0.0.1"),
    detach: Annotated[bool, typer.Option("--detach", "-d",
                                         help="Run in the background.")] = False,
    gateway_port: Annotated[int, typer.Option(
        "--gateway-port", envvar="CLOUDLAND_GATEWAY_PORT", min=0, max=65535,
        help="Gateway (Envoy) port; 0 picks a free one.")] = 8080,
    s3_port: Annotated[int, typer.Option(
        "--s3-port", envvar="CLOUDLAND_S3_PORT", min=0, max=65535,
        help="S3 object storage port; 0 picks a free one.")] = 9000,
) -> None:
    """Start CloudLand (foreground by default; --detach for background)."""
    where = Home.resolve(home)
    running = where.running_state()
    if running:
        fail(CloudLandError(
            f"CloudLand is already running on {where.root} "
            f"(pid {running.get('pid')}, API {running.get('api')})",
            hint="use it, or stop it with: cloudland down"))
    if detach:
        start_detached(where, api_host, api_port, gateway_port, s3_port)
        return
    _configure_logging()
    from cloudland.daemon.supervisor import run_foreground

    run_foreground(where, api_host, api_port, gateway_port, s3_port)


def _configure_logging() -> None:
    colour = sys.stderr.isatty()
    fmt = ("\x1b[2m%(asctime)s\x1b[0m %(levelname)-5s \x1b[36m%(name)s\x1b[0m %(message)s"
           if colour else "%(asctime)s %(levelname)-5s %(name)s %(message)s")
    logging.basicConfig(level=os.environ.get("CLOUDLAND_LOG_LEVEL", "INFO").upper(),
                        format=fmt, datefmt="%H:%M:%S", stream=sys.stderr)
    # Each request a library's client makes (Envoy's admin polls) is not news.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def start_detached(home: Home, host: str, port: int, gateway_port: int = 8080,
                   s3_port: int = 9000) -> None:
    home.ensure()
    log = open(home.daemon_log, "ab")  # noqa: SIM115 -- handed to the child
    cmd = [sys.executable, "-m", "cloudland", "up", "--home", str(home.root),
           "--api-port", str(port), "--api-host", host, "--gateway-port", str(gateway_port),
           "--s3-port", str(s3_port)]
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True, close_fds=True)
    log.close()
    deadline = time.monotonic() + START_TIMEOUT
    with console.status("Starting CloudLand…"):
        while time.monotonic() < deadline:
            state = home.read_state()
            if state and state.get("pid") == child.pid:
                console.print(f"[green]✓[/] CloudLand is up: API [bold]{state['api']}[/] "
                              f"(pid {child.pid}, home {home.root})", soft_wrap=True)
                console.print(f"  logs: {home.daemon_log}", soft_wrap=True)
                _warn_unhealthy(str(state["api"]))
                return
            if child.poll() is not None:
                tail = home.daemon_log.read_text(errors="replace").splitlines()[-10:]
                fail(CloudLandError("CloudLand exited while starting:\n  " + "\n  ".join(tail)))
            time.sleep(0.02)
    child.kill()
    fail(CloudLandError(f"CloudLand did not become ready in {START_TIMEOUT:.0f}s",
                        hint=f"see {home.daemon_log}"))


def _warn_unhealthy(api: str) -> None:
    """Name each part that did not start (a port already taken, say): CloudLand runs
    on without it, and a bare ✓ would hide that."""
    from cloudland.client import Client  # lazily: the daemon itself never needs httpx

    try:
        parts = Client(api, timeout=5).health().get("parts", {})
    except Unavailable:
        return
    for name, part in parts.items():
        if not part.get("healthy"):
            err_console.print(f"[yellow]warning:[/] {name}: {part.get('error') or 'unhealthy'}",
                              soft_wrap=True)


def down(home: HomeOption = None) -> None:
    """Stop CloudLand and everything it started."""
    where = Home.resolve(home)
    state = where.running_state()
    if not state:
        console.print(f"CloudLand is not running on {where.root}")
        return
    pid = int(state["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_TIMEOUT
    with console.status(f"Stopping CloudLand (pid {pid})…"):
        while where.is_locked() and time.monotonic() < deadline:
            time.sleep(0.02)
    if where.is_locked():
        err_console.print(f"[yellow]CloudLand (pid {pid}) did not stop in "
                          f"{STOP_TIMEOUT:.0f}s; killing it[/]")
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    console.print("[green]✓[/] CloudLand stopped")


def status(
    home: HomeOption = None,
    output: OutputOption = Format.table,
) -> None:
    """Show where CloudLand runs and the health of each part."""
    where = Home.resolve(home)
    state = where.running_state()
    info: dict[str, Any] = {"running": bool(state), "home": str(where.root)}
    if state:
        addresses = {k: state[k] for k in ("api", "gateway", "s3") if state.get(k)}
        info.update(pid=state.get("pid"), version=state.get("version"), addresses=addresses)
        from cloudland.client import Client  # lazily: the daemon itself never needs httpx

        try:
            health = Client(str(state["api"]), timeout=5).health()
            info["health"] = health.get("status")
            info["parts"] = health.get("parts", {})
        except Unavailable as err:
            info["health"] = "unreachable"
            info["error"] = str(err)
    if output in (Format.json, Format.yaml):
        dump(info, output)
    else:
        _print_status(info)
    if not state:
        raise typer.Exit(3)


def _print_status(info: dict[str, Any]) -> None:
    if not info["running"]:
        console.print(f"CloudLand is [bold red]not running[/] on {info['home']}")
        console.print("  start it with: cloudland up --detach")
        return
    colour = "green" if info.get("health") == "ok" else "yellow"
    console.print(f"CloudLand [bold {colour}]{info.get('health')}[/] — pid {info['pid']}, "
                  f"home {info['home']}")
    for name, url in info.get("addresses", {}).items():
        console.print(f"  {name:<10} {url}")
    rows = []
    for name, part in info.get("parts", {}).items():
        ok = part.get("healthy")
        detail = ", ".join(f"{k}={v}" for k, v in part.items() if k != "healthy")
        rows.append((name, "[green]healthy[/]" if ok else "[red]unhealthy[/]", detail))
    if rows:
        console.print()
        table(("PART", "HEALTH", "DETAIL"), rows)
