"""Regular expressions as Envoy runs them: RE2 syntax, checked at apply time.

Envoy compiles route regexes with RE2, which has no lookaround or backreferences;
Python's `re` accepts those, so a pattern valid to Python could make Envoy reject
the whole config later. Checking with RE2 itself, here, turns that into an apply
error that says where in the pattern the problem is.
"""

from __future__ import annotations

import re2  # type: ignore[import-untyped,unused-ignore]

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # our error message says it; RE2's own log would repeat it


def check_re2(pattern: str) -> str:
    """`pattern` if RE2 compiles it; else ValueError with the 0-based position and why."""
    try:
        re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else b""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        why, _, fragment = text.partition(": ")
        where = pattern.find(fragment) if fragment else -1
        at = f" at position {where}" if where >= 0 else ""
        raise ValueError(f"invalid regular expression{at} ('{fragment or pattern}'): {why} "
                         "(RE2 syntax: no lookaround or backreferences)") from None
    return pattern
