"""`cloudland describe` rendering: one object for people, like kubectl describe.

Metadata as aligned `Key: value` lines, intent (spec, or a ConfigMap's data)
as an indented YAML block, status conditions and the object's events as
tables.  A Service's or Job's status reads as lines and an instances table
(`cli.workload_status`); what no view shows stays a YAML block.  Secret
values are never printed, only their sizes.  Fetching is the caller's job
(`cli.resources.describe`); this module only prints.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import yaml

from cloudland.cli.columns import NONE, event_age, say, styled
from cloudland.cli.output import age, table
from cloudland.cli.workload_status import status_view
from cloudland.model.kinds import KindInfo

Object = dict[str, Any]


def render(info: KindInfo, obj: Object, events: Sequence[Object]) -> None:
    meta = obj["metadata"]
    created = meta.get("creationTimestamp")
    status = dict(obj.get("status") or {})
    conditions = status.pop("conditions", [])
    observed = status.pop("observedGeneration", None)
    generation = str(meta.get("generation", ""))
    fields: list[tuple[str, str]] = [
        ("Name", meta["name"]),
        ("Namespace", meta.get("namespace", "")),
        ("Kind", info.kind),
        ("Labels", _pairs(meta.get("labels"))),
        ("Annotations", _pairs(meta.get("annotations"))),
        ("UID", str(meta.get("uid", ""))),
        ("Resource Version", str(meta.get("resourceVersion", ""))),
        ("Generation", generation + (f" (observed: {observed})" if observed else "")),
        ("Created", f"{created} ({age(created)} ago)" if created else NONE),
    ]
    if meta.get("finalizers"):
        fields.append(("Finalizers", "\n".join(meta["finalizers"])))
    if meta.get("deletionTimestamp"):
        fields.append(("Deleting Since", str(meta["deletionTimestamp"])))
    blocks: list[tuple[str, Any]] = []
    for name in info.spec_fields:
        value = obj.get(name)
        if value in (None, "", [], {}) and name != "spec":
            continue
        if info.kind == "Secret" and name == "data":
            value = {k: f"{_size(v)} bytes" for k, v in (value or {}).items()}
        title = name[0].upper() + name[1:]
        if isinstance(value, dict | list):
            blocks.append((title, value))
        else:
            fields.append((title, _scalar(value)))
    view = status_view(obj, status)
    _key_values([*fields, *(view.fields if view else ())])
    for title, value in blocks:
        _block(title, value)
    if status:
        _block("Status", status)
    _section("Conditions", [
        (c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", ""),
         age(c.get("lastTransitionTime"))) for c in conditions],
        ("TYPE", "STATUS", "REASON", "MESSAGE", "AGE"))
    if view:
        _section(view.table_title, view.rows(), view.headers)
    _section("Events", [
        (e.get("type", ""), e.get("reason", ""), event_age(e), str(e.get("count", 1)),
         e.get("message", "")) for e in events],
        ("TYPE", "REASON", "AGE", "COUNT", "MESSAGE"))


def _pairs(mapping: dict[str, str] | None) -> str:
    return "\n".join(f"{k}={v}" for k, v in (mapping or {}).items()) or NONE


def _key_values(fields: Sequence[tuple[str, str]]) -> None:
    """`Key:   value` lines with values aligned; multi-line values stay aligned."""
    width = max(len(k) for k, _ in fields) + 3
    for key, value in fields:
        first, *rest = (value or NONE).split("\n")
        say(f"{key + ':':<{width}}{first}")
        for more in rest:
            say(" " * width + more)


def _block(title: str, value: dict[str, Any] | list[Any]) -> None:
    if not value:
        say(f"{title}:  {NONE}")
        return
    say(f"{title}:")
    text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False)
    for line in text.rstrip("\n").split("\n"):
        say("  " + line)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return NONE if value is None else str(value)


def _section(title: str, rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    if not rows:
        say(f"{title}:  {NONE}")
        return
    say(f"{title}:")
    table(headers, [[styled(str(c)) for c in row] for row in rows])


def _size(encoded: str) -> int:
    try:
        return len(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        return len(encoded)
