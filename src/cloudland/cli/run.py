"""`cloudland run`: a one-off command as a Job, waited for, with its output."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from cloudland.cli.options import HomeOption, NamespaceOption, client_for
from cloudland.cli.output import console, err_console
from cloudland.errors import AlreadyExists, CloudLandError

COMMAND_NOT_FOUND = 127  # the shell's code, and docker run's


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Workloads", context_settings={
        "allow_extra_args": True, "ignore_unknown_options": True})(run)


def run(
    name: Annotated[str, typer.Argument(help="Name of the Job to create.")],
    command: Annotated[list[str], typer.Argument(help="Command and arguments (after --).")],
    namespace: NamespaceOption = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE")] = None,
    workdir: Annotated[str | None, typer.Option("--workdir", "-w")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d",
                                         help="Create the Job and return.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for it.")] = 600.0,
    home: HomeOption = None,
) -> None:
    """Run COMMAND once as a Job and print its output: cloudland run NAME -- CMD ARGS."""
    ns = namespace or "default"
    variables = []
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CloudLandError(f"--env '{item}' must look like NAME=VALUE")
        variables.append({"name": key, "value": value})
    spec: dict[str, Any] = {"command": command, "env": variables, "backoffLimit": 0}
    if workdir:
        spec["workingDir"] = str(Path(workdir).resolve())
    with client_for(home) as client:
        try:
            client.create({"apiVersion": "cloudland/v1", "kind": "Job",
                           "metadata": {"name": name, "namespace": ns}, "spec": spec})
        except AlreadyExists:
            flag = f" -n {ns}" if namespace else ""
            hint = f"choose another name, or delete it first: cloudland delete job {name}{flag}"
            raise CloudLandError(f"job/{name} already exists", hint=hint) from None
        console.print(f"job/{name} created")
        if detach:
            return
        deadline = time.monotonic() + timeout
        with console.status(f"Running {' '.join(command)}…"):
            while True:
                status = client.get("Job", ns, name).get("status") or {}
                verdict = next((c for c in status.get("conditions", [])
                                if c["type"] in ("Complete", "Failed") and c["status"] == "True"),
                               None)
                if verdict or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
    # The CLI runs beside the daemon it found through the home, so the attempt's log
    # files are readable here; a remote CLI would use the log API instead.
    for attempt in status.get("attempts", []):
        for stream, out in (("stdout.log", sys.stdout), ("stderr.log", sys.stderr)):
            path = Path(attempt.get("logDir", "")) / stream
            if path.is_file():
                out.write(path.read_text(errors="replace"))
    if verdict is None:
        raise CloudLandError(f"job/{name} did not finish in {timeout:.0f}s",
                             hint=f"see: cloudland describe job {name}")
    if verdict["type"] == "Failed":
        why, code = _last_exit(status)
        if not why or verdict.get("reason") != "BackoffLimitExceeded":  # a deadline, say
            why = verdict["message"] + (f"; last attempt: {why}" if why else "")
        err_console.print(f"[red]job/{name} failed:[/] {escape(why)}", soft_wrap=True)
        raise typer.Exit(code)
    console.print(f"[green]✓[/] job/{name} completed")


def _last_exit(status: dict[str, Any]) -> tuple[str, int]:
    """Why the last attempt ended, and the exit code `run` passes on: the command's
    own, 127 when it could not be found, 128 + N for a signal (as a shell does)."""
    last = next((a["lastExit"] for a in reversed(status.get("attempts", []))
                 if a.get("lastExit")), None)
    if not last:
        return "", 1
    code, signal = last.get("exitCode"), last.get("signal")
    if last.get("reason") == "CommandNotFound":
        return str(last.get("message")), COMMAND_NOT_FOUND
    if isinstance(signal, int):
        return f"killed ({last.get('reason')})", 128 + signal
    if isinstance(code, int) and code > 0:
        return f"exit code {code}", code
    return str(last.get("message") or last.get("reason") or ""), 1
