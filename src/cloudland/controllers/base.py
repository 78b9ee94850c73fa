"""The reconciler contract: what a controller implements and what it may return or raise.

A reconciler owns one kind.  It receives only a key, reads the world through
its `Context`, converges it, writes status, and says when to look again.  The
outcome decides what the manager does next, as in controller-runtime and kopf:

- returns None or `Result()`: success, the key's backoff is forgotten;
- returns `Result(requeue_after=s)`: success, look again in `s` seconds;
- raises `TemporaryError(msg, delay)`: retry after `delay`, or with backoff;
- raises `PermanentError(msg, reason)`: Ready=False with that reason, and no
  retry until the object's generation changes (its spec was edited);
- raises anything else: a bug or an outage; logged, Degraded=True, retried
  with exponential backoff.

Ready and Progressing belong to the reconciler: the manager sets them only
for a PermanentError, so a reconciler that raises one must set Ready itself
once it succeeds again.  Degraded with reason "ReconcileError" is the
manager's, cleared by the next success.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cloudland.controllers.context import Context


class Key(NamedTuple):
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Result:
    requeue_after: float | None = None


class ReconcileError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TemporaryError(ReconcileError):
    """Expected to clear up by itself: retry after `delay` seconds (None: backoff)."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(ReconcileError):
    """Retrying cannot help until the user changes the spec; `reason` goes on Ready."""

    def __init__(self, message: str, reason: str = "ReconcileFailed") -> None:
        super().__init__(message)
        self.reason = reason


class Reconciler(Protocol):
    kind: str

    async def reconcile(self, key: Key, ctx: Context) -> Result | None: ...


@runtime_checkable
class Watching(Protocol):
    """Optional: a reconciler whose objects depend on objects of other kinds.

    When an object of a kind in `watches` is added, deleted or changes intent,
    every object of the reconciler's own kind is queued again (a Route when a
    Service appears, a Trigger when its Broker goes away).
    """

    watches: tuple[str, ...]
