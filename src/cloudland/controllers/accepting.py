"""The shared reconciler of kinds whose runtime arrives with a later capability.

It checks what can be checked now - that every object a spec names exists (a
Route's backends, a Trigger's Broker, the Secret key behind an env var) - and
says so in conditions: Ready=False with a reason naming what is missing, or
Ready=Unknown "Accepted" saying which capability will act on the object.
Kind modules subclass it with their references and, where there is more to
observe (a CronJob's next run), an `assess` of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudland.controllers.base import Key, Result
from cloudland.controllers.context import ConditionStatus, Context

Object = dict[str, Any]
Readiness = tuple[ConditionStatus, str, str]  # Ready's status, reason, message


@dataclass(frozen=True)
class Ref:
    """An object the spec names at `field`; `reason` is Ready's reason if it is missing."""

    kind: str
    namespace: str
    name: str
    field: str
    reason: str
    key: str | None = None  # a data key that must exist in the Secret or ConfigMap


def env_refs(namespace: str, env: list[Object], field: str) -> list[Ref]:
    """The Secret and ConfigMap keys that non-optional env vars read."""
    refs = []
    for i, var in enumerate(env):
        source = var.get("valueFrom") or {}
        for attr, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            ref = source.get(attr)
            if ref and not ref.get("optional"):
                refs.append(Ref(kind, namespace, ref["name"], f"{field}[{i}].valueFrom.{attr}",
                                "ConfigNotFound", ref["key"]))
    return refs


def broker_ref(namespace: str, sink: Object | None, field: str) -> list[Ref]:
    """The Broker a sink delivers to, if it names one."""
    if sink and sink.get("broker"):
        return [Ref("Broker", namespace, sink["broker"], field, "BrokerNotFound")]
    return []


def missing(ctx: Context, ref: Ref) -> str | None:
    """Why `ref` cannot be resolved, or None when it can."""
    where = f"{ref.field}: {ref.kind} {ref.namespace}/{ref.name}"
    obj = ctx.api.find(ref.kind, ref.namespace, ref.name)
    if obj is None:
        return f"{where} does not exist"
    if ref.key is not None and ref.key not in (obj.get("data") or {}):
        return f"{where} has no key '{ref.key}'"
    return None


class AcceptingReconciler:
    kind: str = ""
    watches: tuple[str, ...] = ()
    awaiting: str = ""  # what will act on the object, and that it is not here yet

    def references(self, obj: Object) -> list[Ref]:
        return []

    def assess(self, obj: Object, status: Object, ctx: Context) -> tuple[Readiness, Result | None]:
        """Readiness once every reference resolves; may add fields to `status`."""
        name = obj["metadata"]["name"]
        return ("Unknown", "Accepted",
                f"{self.kind} {name} is stored and validated; {self.awaiting}"), None

    async def reconcile(self, key: Key, ctx: Context) -> Result | None:
        obj = ctx.find(key)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return None  # nothing of it exists outside the store yet: nothing to clean up
        generation = obj["metadata"].get("generation")
        status = ctx.status_of(obj)
        status["observedGeneration"] = generation
        problems = [(ref, why) for ref in self.references(obj) if (why := missing(ctx, ref))]
        result = None
        if problems:
            ready: Readiness = ("False", problems[0][0].reason,
                                "; ".join(why for _, why in problems))
        else:
            ready, result = self.assess(obj, status, ctx)
        ctx.set_condition(status, "Ready", *ready, generation=generation)
        ctx.set_condition(status, "Progressing", "False", ready[1], "", generation)
        ctx.set_condition(status, "Degraded", "False", "AsExpected", "", generation)
        ctx.write_status(obj, status)
        return result
