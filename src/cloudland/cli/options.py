"""Options shared by many commands, so every command spells them the same."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudland.cli.output import Format
from cloudland.client import Client
from cloudland.home import Home

HomeOption = Annotated[
    str | None,
    typer.Option("--home", envvar="CLOUDLAND_HOME", show_envvar=True,
                 help="CloudLand home directory (state, store, logs)."),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Namespace (default: 'default')."),
]

OutputOption = Annotated[Format, typer.Option("--output", "-o", help="table, json or yaml.")]


def client_for(home: str | None) -> Client:
    """A client for the CloudLand running on `home`, or a clear error if none is."""
    return Client.from_home(Home.resolve(home))
