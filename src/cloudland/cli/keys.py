"""`cloudland keys create|list|delete`: access keys for the S3 API.

A key is a Secret in `cloudland-system` (labelled `cloudland.io/access-key`), so it
is stored, listed and deleted through the API like any resource; the secret part
is shown once, at creation. Clients sign with it (AWS Signature V4), e.g.

    aws configure set aws_access_key_id CL...; aws configure set aws_secret_access_key ...
    aws --endpoint-url http://127.0.0.1:9000 s3 ls
"""

from __future__ import annotations

import secrets
import string
from typing import Annotated

import typer

from cloudland.cli.columns import say
from cloudland.cli.options import HomeOption, OutputOption, client_for
from cloudland.cli.output import Format, age, console, dump, table
from cloudland.errors import NotFound
from cloudland.model.accesskeys import (
    KEY_LABEL,
    KEY_TYPE,
    KEYS_NAMESPACE,
    key_id_of,
    key_secret_name,
)

ALPHABET = string.ascii_uppercase + string.digits

keys_app = typer.Typer(help="Access keys for the S3 API (AWS Signature V4).",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys", rich_help_panel="Object storage")


def new_key() -> tuple[str, str]:
    """An access key id like AWS's (20 characters, 'CL' + 18) and a 40-character secret."""
    key_id = "CL" + "".join(secrets.choice(ALPHABET) for _ in range(18))
    secret = secrets.token_urlsafe(30)[:40]
    return key_id, secret


@keys_app.command("create")
def create(
    description: Annotated[str, typer.Option("--description", "-d",
                                             help="What the key is for.")] = "",
    output: OutputOption = Format.table,
    home: HomeOption = None,
) -> None:
    """Create an access key; its secret is printed now and never again."""
    key_id, secret = new_key()
    doc = {"apiVersion": "cloudland/v1", "kind": "Secret",
           "metadata": {"name": key_secret_name(key_id), "namespace": KEYS_NAMESPACE,
                        "labels": {KEY_LABEL: "true"},
                        "annotations": {"cloudland.io/description": description}},
           "type": KEY_TYPE,
           "stringData": {"accessKeyId": key_id, "secretAccessKey": secret}}
    with client_for(home) as client:
        client.create(doc)
        state = client.health()
    if output in (Format.json, Format.yaml):
        dump({"accessKeyId": key_id, "secretAccessKey": secret}, output)
        return
    console.print(f"[green]✓[/] access key [bold]{key_id}[/] created")
    say(f"  secret access key: {secret}")
    say("  (shown once: keep it now)")
    endpoint = ((state.get("parts") or {}).get("s3") or {}).get("url")
    if endpoint:
        say(f"  endpoint: {endpoint}   e.g. aws --endpoint-url {endpoint} s3 ls")


@keys_app.command("list")
def list_keys(output: OutputOption = Format.table, home: HomeOption = None) -> None:
    """The access keys (never their secrets)."""
    with client_for(home) as client:
        items = client.list("Secret", KEYS_NAMESPACE, selector=f"{KEY_LABEL}=true")["items"]
    rows = [{"accessKeyId": key_id_of(o["metadata"]["name"]),
             "description": (o["metadata"].get("annotations") or {}).get(
                 "cloudland.io/description", ""),
             "created": o["metadata"].get("creationTimestamp")} for o in items]
    if output in (Format.json, Format.yaml):
        dump(rows, output)
        return
    if not rows:
        say("No access keys yet: cloudland keys create", stderr=True)
        return
    table(["ACCESS KEY", "DESCRIPTION", "AGE"],
          [[r["accessKeyId"], r["description"], age(r["created"])] for r in rows])


@keys_app.command("delete")
def delete(access_key: Annotated[str, typer.Argument(help="The access key id.")],
           home: HomeOption = None) -> None:
    """Delete an access key: requests signed with it are refused from now on."""
    with client_for(home) as client:
        try:
            client.delete("Secret", KEYS_NAMESPACE, key_secret_name(access_key))
        except NotFound:
            raise NotFound(f"no access key {access_key}",
                           hint="list them with: cloudland keys list") from None
    console.print(f"[green]✓[/] access key {access_key} deleted")
