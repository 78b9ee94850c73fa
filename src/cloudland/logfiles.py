"""Reading the end of a log file: for error messages that quote what a process said.

A leaf module (imports nothing of CloudLand) so that the mesh, the runtime and the
controllers can all use it without depending on each other.
"""

from __future__ import annotations

import os
from pathlib import Path


def tail(path: Path, lines: int = 20, *, window: int = 64 * 1024,
         skip_blank: bool = False) -> list[str]:
    """The last `lines` lines among the final `window` bytes of `path` ([] if it cannot
    be read); blank lines left out when `skip_blank`."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - window))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    found = text.splitlines()
    if skip_blank:
        found = [line for line in found if line.strip()]
    return found[-lines:] if lines > 0 else []
