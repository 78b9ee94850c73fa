"""`get`, `describe`, `delete`, `events` and `schema`: kubectl-style reading of resources.

Every command goes through `cloudland.client` (never server code); errors are
raised as `CloudLandError` and printed by the app's group.  How an object
becomes a row is `cli.columns`' business; `describe` renders in `cli.describe`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from cloudland.cli import describe as describe_mod
from cloudland.cli.columns import View, event_view, kind_view, say
from cloudland.cli.options import HomeOption, NamespaceOption, client_for
from cloudland.cli.output import Format, dump, table
from cloudland.client import Client
from cloudland.errors import BadRequest, CloudLandError, NotFound
from cloudland.model.kinds import KINDS, KindInfo, kind_info
from cloudland.model.meta import DEFAULT_NAMESPACE

Object = dict[str, Any]
PANEL = "Resources"


def register(app: typer.Typer) -> None:
    for command in (get, describe, delete, events, schema):
        app.command(rich_help_panel=PANEL)(command)


# ---- kinds -----------------------------------------------------------------------


def complete_kind(incomplete: str) -> list[str]:
    """Shell completion for KIND arguments: kind names and plurals."""
    names = sorted({n for i in KINDS.values() for n in (i.singular, i.plural)})
    return [n for n in names if n.startswith(incomplete.lower())]


def resolve_kind(name: str) -> KindInfo:
    info = kind_info(name)
    if info is None:
        known = ", ".join(
            i.singular + (f" ({', '.join(i.short_names)})" if i.short_names else "")
            for i in KINDS.values())
        raise BadRequest(f"'{name}' is not a known kind; use one of: {known}",
                         hint="list kinds with: cloudland schema")
    return info


KindArg = Annotated[str, typer.Argument(
    help="Kind: name, plural or short name (service, services, svc).",
    autocompletion=complete_kind, show_default=False)]
AllNamespacesOption = Annotated[bool, typer.Option(
    "--all-namespaces", "-A", help="Across all namespaces.")]
SelectorOption = Annotated[str | None, typer.Option(
    "--selector", "-l", help="Label selector, e.g. app=web,tier!=db.")]
OutputOption = Annotated[Format, typer.Option(
    "--output", "-o", help="table, wide, yaml or json.")]
WatchOption = Annotated[bool, typer.Option(
    "--watch", "-w", help="After listing, print changes as they happen (Ctrl-C stops).")]


def _namespace(namespace: str | None, all_namespaces: bool) -> str | None:
    return None if all_namespaces else (namespace or DEFAULT_NAMESPACE)


def _none_found(plural: str, namespace: str | None) -> None:
    where = f" in namespace {namespace}" if namespace else ""
    say(f"No {plural} found{where}.", stderr=True)


# ---- get -------------------------------------------------------------------------


def get(
    kind: KindArg,
    name: Annotated[str | None, typer.Argument(help="One object's name.",
                                               show_default=False)] = None,
    namespace: NamespaceOption = None,
    all_namespaces: AllNamespacesOption = False,
    output: OutputOption = Format.table,
    selector: SelectorOption = None,
    watch: WatchOption = False,
    home: HomeOption = None,
) -> None:
    """List objects of a kind, or show one; -w keeps printing changes."""
    info = resolve_kind(kind)
    ns = _namespace(namespace, all_namespaces)
    if name and ns is None:
        raise BadRequest("a name needs a namespace; drop -A or the name")
    if name and selector:
        raise BadRequest("give a name or a selector (-l), not both")
    with client_for(home) as client:
        if name:
            one = client.get(info.kind, ns or DEFAULT_NAMESPACE, name)
            items, rv = [one], str(one["metadata"]["resourceVersion"])
        else:
            listed = client.list(info.kind, ns, selector)
            items, rv = listed["items"], str(listed["metadata"]["resourceVersion"])
        structured = output in (Format.json, Format.yaml)
        if not watch and structured:
            dump(items[0] if name else _list_of(info, items, rv), output)
            return
        view = kind_view(info, wide=output == Format.wide, namespaces=ns is None)
        if not watch:
            if items:
                table(view.headers, view.rows(items))
            else:
                _none_found(info.plural, ns)
            return
        changes = client.watch(info.kind, ns, selector=selector, resource_version=rv)
        if name:
            changes = (e for e in changes if e["object"]["metadata"]["name"] == name)
        _follow(view, items, changes, output)


def _list_of(info: KindInfo, items: list[Object], rv: str) -> Object:
    return {"apiVersion": "cloudland/v1", "kind": f"{info.kind}List",
            "metadata": {"resourceVersion": rv}, "items": items}


def _follow(view: View, items: list[Object], changes: Iterator[Object], output: Format) -> None:
    """Print the current objects, then each change, until Ctrl-C."""
    structured = output in (Format.json, Format.yaml)
    write = _event_writer(output) if structured else view.stream(items)
    try:
        for obj in items:
            write({"type": "ADDED", "object": obj})
        for event in changes:
            write(event)
    except KeyboardInterrupt:
        pass


def _event_writer(output: Format) -> Callable[[Object], None]:
    def write(event: Object) -> None:
        if output == Format.json:
            sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
        else:
            sys.stdout.write("---\n" + yaml.safe_dump(event, sort_keys=False))
        sys.stdout.flush()
    return write


# ---- describe --------------------------------------------------------------------


def describe(
    kind: KindArg,
    name: Annotated[str, typer.Argument(help="The object's name.", show_default=False)],
    namespace: NamespaceOption = None,
    home: HomeOption = None,
) -> None:
    """Show one object in detail: metadata, spec, conditions and its events."""
    info = resolve_kind(kind)
    ns = namespace or DEFAULT_NAMESPACE
    with client_for(home) as client:
        obj = client.get(info.kind, ns, name)
        about = _events_about(client.list("Event", ns)["items"], obj)
    describe_mod.render(info, obj, about)


def _events_about(items: Iterable[Object], obj: Object) -> list[Object]:
    meta = obj["metadata"]
    kind, name, uid = obj["kind"], meta["name"], meta.get("uid")

    def about(event: Object) -> bool:
        ref = event.get("involvedObject") or {}
        same_uid = not (uid and ref.get("uid")) or ref.get("uid") == uid
        return ref.get("kind") == kind and ref.get("name") == name and same_uid

    return _by_time(e for e in items if about(e))


def _by_time(items: Iterable[Object]) -> list[Object]:
    def when(event: Object) -> str:
        return str(event.get("lastTimestamp") or event["metadata"].get("creationTimestamp", ""))
    return sorted(items, key=when)


# ---- delete ----------------------------------------------------------------------


def delete(
    kind: KindArg,
    names: Annotated[list[str] | None, typer.Argument(help="Names to delete.",
                                                      show_default=False)] = None,
    namespace: NamespaceOption = None,
    all_namespaces: AllNamespacesOption = False,
    selector: SelectorOption = None,
    ignore_not_found: Annotated[bool, typer.Option(
        "--ignore-not-found", help="Say nothing about names that do not exist.")] = False,
    home: HomeOption = None,
) -> None:
    """Delete objects by name or by label selector."""
    info = resolve_kind(kind)
    ns = _namespace(namespace, all_namespaces)
    if bool(names) == bool(selector):
        raise BadRequest("give one or more NAMEs or a selector (-l), not both and not neither",
                         hint=f"e.g. cloudland delete {info.singular} web")
    if names and ns is None:
        raise BadRequest("deleting by name needs a namespace; drop -A")
    with client_for(home) as client:
        if selector:
            targets = [(o["metadata"]["namespace"], o["metadata"]["name"])
                       for o in client.list(info.kind, ns, selector)["items"]]
            if not targets:
                _none_found(info.plural, ns)
        else:
            targets = [(ns or DEFAULT_NAMESPACE, n) for n in names or []]
        missing = _delete_all(client, info, targets, ignore_not_found)
    if missing:
        first = missing[0]
        if len(missing) > 1:
            first = NotFound("; ".join(str(e) for e in missing))
        raise first


def _delete_all(client: Client, info: KindInfo, targets: list[tuple[str, str]],
                ignore_not_found: bool) -> list[CloudLandError]:
    """Delete each target, carrying on past missing ones; returns what was missing."""
    missing: list[CloudLandError] = []
    for ns, name in targets:
        try:
            gone = client.delete(info.kind, ns, name)
        except NotFound as err:
            if not ignore_not_found:
                missing.append(err)
            continue
        meta = gone.get("metadata", {})
        what = f'{info.singular} "{name}"'
        if meta.get("deletionTimestamp") and meta.get("finalizers"):
            say(f"{what} marked for deletion (waiting for finalizers: "
                          f"{', '.join(meta['finalizers'])})")
        else:
            say(f"{what} deleted")
    return missing


# ---- events ----------------------------------------------------------------------


def events(
    namespace: NamespaceOption = None,
    all_namespaces: AllNamespacesOption = False,
    for_: Annotated[str | None, typer.Option(
        "--for", help="Only events about one object: KIND/NAME, e.g. svc/web.")] = None,
    watch: WatchOption = False,
    output: OutputOption = Format.table,
    home: HomeOption = None,
) -> None:
    """List events, oldest first; -w keeps printing new ones."""
    ns = _namespace(namespace, all_namespaces)
    wanted = _event_filter(for_)
    view = event_view(namespaces=ns is None)
    with client_for(home) as client:
        listed = client.list("Event", ns)
        items = _by_time(e for e in listed["items"] if wanted(e))
        rv = str(listed["metadata"]["resourceVersion"])
        if watch:
            changes = client.watch("Event", ns, resource_version=rv)
            _follow(view, items, (e for e in changes if wanted(e["object"])), output)
        elif output in (Format.json, Format.yaml):
            dump(_list_of(KINDS["Event"], items, rv), output)
        elif items:
            table(view.headers, view.rows(items))
        else:
            _none_found("events", ns)


def _event_filter(ref: str | None) -> Callable[[Object], bool]:
    if not ref:
        return lambda event: True
    kind, sep, name = ref.partition("/")
    if not sep or not name:
        raise BadRequest(f"--for '{ref}' is not KIND/NAME", field="--for",
                         hint="e.g. --for service/web or --for svc/web")
    info = resolve_kind(kind)

    def wanted(event: Object) -> bool:
        obj = event.get("involvedObject") or {}
        return bool(obj.get("kind") == info.kind and obj.get("name") == name)
    return wanted


# ---- schema ----------------------------------------------------------------------


class SchemaFormat(StrEnum):
    json = "json"
    yaml = "yaml"


SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def kind_schema(info: KindInfo) -> Object:
    """The JSON Schema of a kind, as editors (yaml-language-server) read it."""
    return {"$schema": SCHEMA_DIALECT, **info.model.model_json_schema()}


def schema(
    kind: Annotated[str | None, typer.Argument(
        help="Kind to print the JSON Schema of; without it, list the kinds.",
        autocompletion=complete_kind, show_default=False)] = None,
    output: Annotated[SchemaFormat, typer.Option("--output", "-o",
                                                 help="json or yaml.")] = SchemaFormat.json,
    write: Annotated[Path | None, typer.Option(
        "--write", help="Write <kind>.schema.json for every kind (or KIND) into this directory.",
        file_okay=False)] = None,
    home: HomeOption = None,
) -> None:
    """List kinds, print one kind's JSON Schema, or write them all for editors.

    Works without a running CloudLand.
    """
    infos = [resolve_kind(kind)] if kind else list(KINDS.values())
    if write is not None:
        write.mkdir(parents=True, exist_ok=True)
        for info in infos:
            path = write / f"{info.singular}.schema.json"
            path.write_text(json.dumps(kind_schema(info), indent=2) + "\n")
            say(f"wrote {path}")
        say("point a manifest at one with a first line like: "
                      f"# yaml-language-server: $schema={path}")
        return
    if kind:
        dump(kind_schema(infos[0]), output.value)
        return
    table(("KIND", "PLURAL", "SHORT NAMES"),
          [(i.kind, i.plural, ",".join(i.short_names) or "-") for i in infos])
