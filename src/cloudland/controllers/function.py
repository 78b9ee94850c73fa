"""Function reconciler: for now, checks its env's config and its event triggers' Brokers.

Packaging, instances and scale to zero belong to the functions runtime, which a
later capability adds.
"""

from __future__ import annotations

from cloudland.controllers.accepting import AcceptingReconciler, Object, Ref, env_refs


class FunctionReconciler(AcceptingReconciler):
    kind = "Function"
    watches = ("Secret", "ConfigMap", "Broker")
    awaiting = ("the functions runtime that starts its instances on demand is not part of "
                "this version yet")

    def references(self, obj: Object) -> list[Ref]:
        ns, spec = obj["metadata"]["namespace"], obj["spec"]
        refs = env_refs(ns, spec.get("env", []), "spec.env")
        for i, trigger in enumerate((spec.get("triggers") or {}).get("events", [])):
            refs.append(Ref("Broker", ns, trigger["broker"], f"spec.triggers.events[{i}].broker",
                            "BrokerNotFound"))
        return refs
