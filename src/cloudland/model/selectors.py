"""Kubernetes label selectors: parse `app=web,tier!=db,env in (a,b),!legacy` and match."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from cloudland.errors import BadRequest

Selector = Callable[[Mapping[str, str]], bool]

_SET = re.compile(
    r"^\s*(!?)\s*([\w./-]+)\s*"
    r"(?:(in|notin)\s*\(([^)]*)\)|(==|=|!=)\s*([\w.-]*))?\s*$"
)


def _split(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def parse_selector(text: str | None) -> Selector | None:
    if not text or not text.strip():
        return None
    tests: list[Selector] = []
    for part in _split(text):
        m = _SET.match(part)
        if not m or (m.group(1) and (m.group(3) or m.group(5))):
            raise BadRequest(
                f"label selector '{part.strip()}' is not valid",
                field="labelSelector",
                hint="use key=value, key!=value, key in (a,b), key notin (a), key or !key",
            )
        neg, key, set_op, values, op, value = m.groups()
        tests.append(_requirement(key, bool(neg), set_op or op, values, value))
    return lambda labels: all(t(labels) for t in tests)


def _requirement(key: str, negated: bool, op: str | None, values: str | None,
                 value: str | None) -> Selector:
    if op in ("in", "notin"):
        allowed = {v.strip() for v in (values or "").split(",") if v.strip()}
        inside = op == "in"
        return lambda labels: (labels.get(key) in allowed) == inside
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == value
    if op == "!=":
        return lambda labels: labels.get(key) != value
    return lambda labels: (key in labels) != negated
