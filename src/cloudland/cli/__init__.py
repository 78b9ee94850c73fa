"""The `cloudland` command line: typer commands on top of `cloudland.client` only."""
