"""get, describe, delete, events, schema (being written)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
