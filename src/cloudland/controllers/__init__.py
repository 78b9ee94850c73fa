"""Controllers: one reconciler per kind, and the manager that runs them.

Layers, bottom up: `clock` (time and timers, injectable), `queue` (dedupe,
per-key serial, backoff), `base` (the reconciler contract), `context` (what a
reconciler gets: the API and status/event helpers), `manager` (watch, resync,
workers, outcomes), the kind modules, and `registry` (which reconciler owns
which kind).  Only `daemon/` starts a Manager; servers never import this package.
"""

from cloudland.controllers.base import (
    Key,
    PermanentError,
    Reconciler,
    Result,
    TemporaryError,
    Watching,
)
from cloudland.controllers.clock import Clock, LoopClock, ManualClock
from cloudland.controllers.context import Context
from cloudland.controllers.manager import Manager

__all__ = [
    "Clock",
    "Context",
    "Key",
    "LoopClock",
    "Manager",
    "ManualClock",
    "PermanentError",
    "Reconciler",
    "Result",
    "TemporaryError",
    "Watching",
]
