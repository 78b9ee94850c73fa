"""Render a dry-run apply as a terraform-style plan with a coloured diff."""

from __future__ import annotations

import json
from typing import Any

from cloudland.cli.output import console
from cloudland.model.kinds import KINDS

IGNORED_ANNOTATIONS = ("cloudland.io/applied", "cloudland.io/source")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}, 'c': [2]} -> {'a.b': 1, 'c[0]': 2}"""
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            out.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list) and value:
        for i, sub in enumerate(value):
            out.update(flatten(sub, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


def intent(obj: dict[str, Any] | None) -> dict[str, Any]:
    if not obj:
        return {}
    meta = obj.get("metadata", {})
    annotations = {k: v for k, v in meta.get("annotations", {}).items()
                   if k not in IGNORED_ANNOTATIONS}
    fields = KINDS[obj["kind"]].spec_fields if obj.get("kind") in KINDS else ("spec",)
    return flatten({"metadata": {"labels": meta.get("labels", {}), "annotations": annotations},
                    **{f: obj.get(f) for f in fields if f in obj}})


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else f'"{value}"'


def render_plan(result: dict[str, Any], stack: str, prune: bool) -> bool:
    """Print the plan; return True when applying it would change anything."""
    counts = {"created": 0, "configured": 0, "deleted": 0}
    for item in result["items"]:
        action, ref = item["action"], f"{item['kind'].lower()}/{item['name']}"
        if item["namespace"] != "default":
            ref += f" -n {item['namespace']}"
        if action == "unchanged":
            continue
        counts[action] += 1
        if action == "created":
            console.print(f"  [green]+ {ref}[/] will be created")
            for path, value in intent(item.get("after")).items():
                console.print(f"      [green]+ {path}: {_show(value)}[/]")
        elif action == "deleted":
            console.print(f"  [red]- {ref}[/] will be deleted (no longer in the files)")
        else:
            drift = " [magenta](drift: changed outside the files)[/]" if item.get("drift") else ""
            console.print(f"  [yellow]~ {ref}[/] will be updated{drift}")
            before, after = intent(item.get("before")), intent(item.get("after"))
            for path in sorted(set(before) | set(after)):
                if before.get(path) != after.get(path):
                    if path not in after:
                        console.print(f"      [red]- {path}: {_show(before[path])}[/]")
                    elif path not in before:
                        console.print(f"      [green]+ {path}: {_show(after[path])}[/]")
                    else:
                        console.print(f"      [yellow]~ {path}: {_show(before[path])} → "
                                      f"{_show(after[path])}[/]")
    for orphan in result.get("orphans", []):
        console.print(f"  [dim]? {orphan['kind'].lower()}/{orphan['name']} is in stack "
                      f"'{stack}' but not in the files (plan --prune to delete it)[/]")
    total = sum(counts.values())
    if total == 0:
        console.print("[green]No changes.[/] The live objects match the files.")
    else:
        console.print(f"[bold]Plan:[/] {counts['created']} to create, "
                      f"{counts['configured']} to change, {counts['deleted']} to delete.")
    return total > 0
