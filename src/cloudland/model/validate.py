"""Turn an untrusted document into a normalised object, or say exactly what is wrong.

Every problem is reported with its field path (`spec.env[0].name`) so callers
can point at the file and line it came from.
"""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

from cloudland.errors import Invalid
from cloudland.model.kinds import KINDS, kind_info
from cloudland.model.meta import API_VERSION


def parse_object(doc: Any, *, where: str = "") -> dict[str, Any]:
    """Validate `doc`, apply defaults, and return it as plain JSON data."""
    if not isinstance(doc, dict):
        raise Invalid(
            f"{where}expected an object with apiVersion, kind, metadata, got {_type_name(doc)}"
        )
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        raise Invalid(f"{where}kind is missing", field="kind",
                      hint=f"set kind to one of {', '.join(KINDS)}")
    info = kind_info(kind)
    if info is None or info.kind != kind:
        close = difflib.get_close_matches(kind, list(KINDS), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known kinds: {', '.join(KINDS)}"
        raise Invalid(f"{where}unknown kind '{kind}'", field="kind", hint=hint)
    if doc.get("apiVersion") != API_VERSION:
        got = doc.get("apiVersion")
        raise Invalid(
            f"{where}apiVersion is {'missing' if got is None else repr(got)}",
            field="apiVersion",
            hint=f"set apiVersion: {API_VERSION}",
        )
    try:
        obj = info.model.model_validate(doc)
    except ValidationError as exc:
        causes = [_cause(err) for err in exc.errors()]
        first = causes[0]
        more = f" (and {len(causes) - 1} more)" if len(causes) > 1 else ""
        raise Invalid(
            f"{where}{kind} is invalid: {first['field']}: {first['message']}{more}",
            field=first["field"],
            causes=causes,
        ) from None
    return obj.model_dump(mode="json", exclude_none=True)


def _cause(err: Any) -> dict[str, str]:
    path = _path(err["loc"])
    if err["type"] == "extra_forbidden":
        name = str(err["loc"][-1])
        close = difflib.get_close_matches(name, sorted(_all_field_names()), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "; remove it"
        return {"field": path, "message": f"unknown field '{name}'{hint}"}
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] not in ("missing", "value_error", "assertion_error"):
        message += f" (got {_short(err.get('input'))})"
    return {"field": path, "message": message}


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part.startswith(("function-", "literal[")) or
                                        part in ("int", "str", "float", "list[str]", "bool")):
            continue  # pydantic's union branch names, not fields
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "nothing"}.get(type(value), type(value).__name__)


@cache
def _all_field_names() -> set[str]:
    names: set[str] = set()
    seen: set[type] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            names.add(name)
            for arg in _model_args(info.annotation):
                walk(arg)

    for info in KINDS.values():
        walk(info.model)
    return names


def _model_args(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in getattr(annotation, "__args__", ()):
        found.extend(_model_args(arg))
    return found
