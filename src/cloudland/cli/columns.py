"""How an object becomes a row of `get` or `events`: column paths, condition
summaries, ages, and rows streamed one by one under a fixed header for `-w`.

Column paths come from `KindInfo.columns`: a dotted path into the object,
`conditions[Ready]` for the status of one condition (`conditions[Ready].reason`
for a field of it), a trailing `#` for "how many keys", `a/b` for two counts
as kubectl's `2/3`, and `a..b` for the time from one timestamp to another (or
to now).  Used by `cli.resources` and `cli.describe`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.markup import escape

from cloudland.cli.output import age, console, duration, err_console
from cloudland.model.kinds import KindInfo

Object = dict[str, Any]
NONE = "<none>"
GAP = "   "
MIN_WIDTH = 8
# Whole cell values that deserve colour in a terminal table.
STYLES = {"Warning": "yellow", "NotReady": "red"}


def say(text: str, *, stderr: bool = False) -> None:
    """Print a plain line: no markup, no highlighting, never wrapped (paths stay whole)."""
    (err_console if stderr else console).print(text, markup=False, highlight=False,
                                               soft_wrap=True)


def find_condition(conditions: Any, type_: str) -> Object | None:
    """The condition of type `type_` in a status' conditions, if there is one."""
    for cond in conditions if isinstance(conditions, list) else []:
        if isinstance(cond, dict) and cond.get("type") == type_:
            return cond
    return None


def condition_summary(conditions: Any, type_: str) -> str:
    """'Ready', 'NotReady' or 'Unknown' for the condition `type_`, '-' if absent."""
    cond = find_condition(conditions, type_)
    if cond is None:
        return "-"
    status = cond.get("status")
    if status == "True":
        return type_
    return f"Not{type_}" if status == "False" else "Unknown"


def lookup(obj: Object, path: str) -> Any:
    """The value at a column path (see the module docstring)."""
    if "/" in path:
        return "/".join(str(_count(lookup(obj, p))) for p in path.split("/"))
    if ".." in path:
        start, end = path.split("..")
        return duration(lookup(obj, start), lookup(obj, end)) or None
    count = path.endswith("#")
    value: Any = obj
    parts = path.rstrip("#").split(".")
    for at, part in enumerate(parts):
        key, _, condition = part.partition("[")
        value = value.get(key) if isinstance(value, dict) else None
        if condition and at == len(parts) - 1:
            return condition_summary(value, condition.rstrip("]"))
        if condition:
            value = find_condition(value, condition.rstrip("]"))
    if count:
        return len(value) if isinstance(value, dict | list) else 0
    return value


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def show(value: Any) -> str:
    """A value as one short cell: lists joined, references as kind/name."""
    if value is None or value == [] or value == {}:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(show(v) for v in value)
    if isinstance(value, dict):
        if "kind" in value and "name" in value:
            return f"{str(value['kind']).lower()}/{value['name']}"
        return ",".join(f"{k}={show(v)}" for k, v in value.items())
    return str(value)


def styled(cell: str) -> str:
    """A cell as rich markup: user text escaped, known states coloured."""
    style = STYLES.get(cell)
    return f"[{style}]{escape(cell)}[/]" if style else escape(cell)


@dataclass(frozen=True)
class View:
    """The columns of a table and how one object fills them."""

    headers: tuple[str, ...]
    cells: Callable[[Object], list[str]]

    def rows(self, items: Iterable[Object]) -> list[list[str]]:
        """Rows for `output.table` (rich markup)."""
        return [[styled(c) for c in self.cells(o)] for o in items]

    def stream(self, first: Sequence[Object]) -> Callable[[Object], None]:
        """Print the header now; return a writer that prints each watch event's
        object as one aligned line, widths fixed by the header and `first`."""
        widths = [max(len(h), MIN_WIDTH) for h in self.headers]
        for obj in first:
            widths = [max(w, len(c)) for w, c in zip(widths, self.cells(obj), strict=True)]

        def line(cells: Sequence[str]) -> None:
            text = GAP.join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
            sys.stdout.write(text.rstrip() + "\n")
            sys.stdout.flush()

        line(self.headers)
        return lambda event: line(self.cells(event["object"]))


def _created(obj: Object) -> str:
    return age(obj.get("metadata", {}).get("creationTimestamp"))


def kind_view(info: KindInfo, *, wide: bool = False, namespaces: bool = False) -> View:
    columns = [c for c in info.columns if wide or not c.wide]
    lead = ("NAMESPACE",) if namespaces else ()
    headers = (*lead, "NAME", *(c.header for c in columns), "AGE")

    def cells(obj: Object) -> list[str]:
        meta = obj["metadata"]
        first = [meta.get("namespace", "")] if namespaces else []
        return [*first, meta["name"], *(show(lookup(obj, c.path)) for c in columns),
                _created(obj)]

    return View(headers, cells)


def event_age(event: Object) -> str:
    return age(event.get("lastTimestamp")) or _created(event)


def event_view(*, namespaces: bool = False) -> View:
    lead = ("NAMESPACE",) if namespaces else ()

    def cells(event: Object) -> list[str]:
        first = [event["metadata"].get("namespace", "")] if namespaces else []
        return [*first, event_age(event), str(event.get("type", "")),
                str(event.get("reason", "")), show(event.get("involvedObject")),
                str(event.get("message", ""))]

    return View((*lead, "LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"), cells)
