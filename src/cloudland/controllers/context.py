"""What a reconciler gets besides its key: the API, the clock, and status helpers.

One `Context` is shared by every reconciler of a manager.  Its helpers carry
the conventions every controller follows: conditions keep their
lastTransitionTime until their status flips; status is written only when it
differs from the stored one; Kubernetes-style events are recorded when Ready
or Degraded changes, never on a reconcile that changed nothing.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from cloudland.api.service import ResourceService
from cloudland.controllers.base import Key
from cloudland.controllers.clock import Clock, LoopClock
from cloudland.errors import NotFound
from cloudland.model.meta import Status

Object = dict[str, Any]
ConditionStatus = Literal["True", "False", "Unknown"]
EventType = Literal["Normal", "Warning"]

log = logging.getLogger("cloudland.controllers")


def get_condition(status: Object, type_: str) -> Object | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def normalize_status(status: Object) -> Object:
    """The status as the store keeps it, so a comparison says what a write would change."""
    return Status.model_validate(status).model_dump(mode="json", exclude_none=True)


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Context:
    api: ResourceService
    clock: Clock = field(default_factory=LoopClock)
    # Ask for a reconcile of a key later (e.g. when a process exits); the manager sets it.
    enqueue: Callable[[Key, float], None] = field(default=lambda key, after=0.0: None)

    def find(self, key: Key) -> Object | None:
        return self.api.find(key.kind, key.namespace, key.name)

    @staticmethod
    def status_of(obj: Object) -> Object:
        """A private copy of the object's status to build the new one in."""
        return copy.deepcopy(obj.get("status") or {})

    def set_condition(self, status: Object, type_: str, value: ConditionStatus,
                      reason: str, message: str = "", generation: int | None = None) -> None:
        """Set one condition in `status`; lastTransitionTime moves only when `value` does."""
        conditions: list[Object] = list(status.get("conditions") or [])
        old = get_condition(status, type_)
        since = old.get("lastTransitionTime") if old and old.get("status") == value else None
        new: Object = {"type": type_, "status": value, "reason": reason, "message": message,
                       "lastTransitionTime": since or rfc3339(self.clock.time())}
        if generation is not None:
            new["observedGeneration"] = generation
        index = next((i for i, c in enumerate(conditions) if c.get("type") == type_), None)
        if index is None:
            conditions.append(new)
        else:
            conditions[index] = new
        status["conditions"] = conditions

    def write_status(self, obj: Object, status: Object) -> Object:
        """Store `status` unless it equals the stored one; returns the current object."""
        if status == (obj.get("status") or {}):
            return obj  # the common case, decided without validating a big status twice
        old = normalize_status(obj.get("status") or {})
        new = normalize_status(status)
        if new == old:
            return obj
        meta = obj["metadata"]
        try:
            written = self.api.update_status(obj["kind"], meta["namespace"], meta["name"], new)
        except NotFound:
            return obj  # deleted meanwhile: nothing is left to report on
        self._record_transitions(written, old, new)
        return written

    def record_event(self, obj: Object, type_: EventType, reason: str,
                     message: str) -> None:
        """Record an event; events are best effort and never fail a reconcile."""
        try:
            self.api.record_event(obj, type_, reason, message,
                                  source=f"{obj['kind'].lower()}-controller")
        except Exception:
            log.exception("could not record event %s about %s %s", reason, obj["kind"],
                          obj["metadata"].get("name"))

    def add_finalizer(self, obj: Object, finalizer: str) -> Object:
        finalizers = list(obj["metadata"].get("finalizers") or [])
        if finalizer in finalizers:
            return obj
        return self.api.set_finalizers(obj, [*finalizers, finalizer])

    def remove_finalizer(self, obj: Object, finalizer: str) -> Object:
        """Drop `finalizer`; dropping the last one of a deleting object deletes it."""
        finalizers = list(obj["metadata"].get("finalizers") or [])
        if finalizer not in finalizers:
            return obj
        return self.api.set_finalizers(obj, [f for f in finalizers if f != finalizer])

    def _record_transitions(self, obj: Object, old: Object, new: Object) -> None:
        """Events for Ready and Degraded changes; a first healthy Ready is not news."""
        ready_was, ready = get_condition(old, "Ready"), get_condition(new, "Ready")
        failing = bool(ready and ready["status"] == "False")
        if ready and _moved(ready_was, ready) and (ready_was or failing):
            self.record_event(obj, "Warning" if failing else "Normal", ready["reason"],
                              ready["message"])
        bad_was, bad = get_condition(old, "Degraded"), get_condition(new, "Degraded")
        if bad is None or not _moved(bad_was, bad):
            return
        if bad["status"] == "True":
            self.record_event(obj, "Warning", bad["reason"], bad["message"])
        elif bad_was and bad_was["status"] == "True" and not failing:
            # Recovery is announced only when the object is not failing otherwise.
            self.record_event(obj, "Normal", bad["reason"], bad["message"])


def _moved(old: Object | None, new: Object) -> bool:
    return old is None or (old.get("status"), old.get("reason")) != (new["status"],
                                                                      new["reason"])
