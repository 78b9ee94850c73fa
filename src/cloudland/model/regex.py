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
# Envoy refuses regexes whose compiled RE2 program is bigger than its runtime limit;
# CloudLand's bootstrap raises that limit to this (Envoy's default, 100, is too small
# for ordinary patterns such as ^/v[0-9]+/items/[a-z0-9-]{1,64}$, which is 268).
MAX_PROGRAM_SIZE = 2000


def check_re2(pattern: str) -> str:
    """`pattern` if RE2 compiles it; else ValueError with the 0-based position and why."""
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else b""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        why, _, fragment = text.partition(": ")
        where = pattern.find(fragment) if fragment else -1
        at = f" at position {where}" if where >= 0 else ""
        raise ValueError(f"invalid regular expression{at} ('{fragment or pattern}'): {why} "
                         "(RE2 syntax: no lookaround or backreferences)") from None
    if compiled.programsize > MAX_PROGRAM_SIZE:
        raise ValueError(f"regular expression too complex for the gateway (RE2 program size "
                         f"{compiled.programsize} > {MAX_PROGRAM_SIZE}); simplify it, e.g. "
                         "smaller repetition counts")
    return pattern
