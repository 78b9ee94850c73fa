"""The `cloudland` entry point: one typer app, commands registered per module."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from cloudland import __version__
from cloudland.cli import demo, keys, lifecycle, mesh, resources, stacks, workloads
from cloudland.cli import run as run_command
from cloudland.cli.output import fail
from cloudland.errors import CloudLandError


class _Group(TyperGroup):
    """Turns CloudLand errors from any command into a message and exit 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CloudLandError as err:
            fail(err)


app = typer.Typer(
    cls=_Group,
    name="cloudland",
    help="CloudLand: services, functions, storage, events and a mesh on one machine.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cloudland {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Run `cloudland up` to start, then `cloudland apply -f FILE` to deploy."""


lifecycle.register(app)
demo.register(app)
stacks.register(app)
resources.register(app)
workloads.register(app)
mesh.register(app)
keys.register(app)
run_command.register(app)


def run() -> None:
    """Console-script entry: CloudLand errors become a message and exit 1, never a traceback."""
    try:
        app()
    except CloudLandError as err:
        fail(err)
    except KeyboardInterrupt:
        sys.exit(130)
