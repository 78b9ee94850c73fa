"""Kubernetes label selectors: parse `app=web,tier!=db,env in (a,b),!legacy` and match."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from cloudland.errors import BadRequest

Selector = Callable[[Mapping[str, str]], bool]

_SET = re.compile(r"^\s*(!?)\s*([\w./-]+)\s*(?:(in|notin)\s*\(([^)]*)\)|(==|=|!=)\s*([\w.-]*))?\s*$")


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
        if set_op:
            allowed = {v.strip() for v in values.split(",") if v.strip()}
            if set_op == "in":
                tests.append(lambda lb, k=key, a=allowed: lb.get(k) in a)
            else:
                tests.append(lambda lb, k=key, a=allowed: lb.get(k) not in a)
        elif op in ("=", "=="):
            tests.append(lambda lb, k=key, v=value: lb.get(k) == v)
        elif op == "!=":
            tests.append(lambda lb, k=key, v=value: lb.get(k) != v)
        elif neg:
            tests.append(lambda lb, k=key: k not in lb)
        else:
            tests.append(lambda lb, k=key: k in lb)
    return lambda labels: all(t(labels) for t in tests)
