"""Service reconciler: for now, checks the Secrets and ConfigMaps its env reads.

Starting replicas belongs to the runtime drivers, which a later capability adds.
"""

from __future__ import annotations

from cloudland.controllers.accepting import AcceptingReconciler, Object, Ref, env_refs


class ServiceReconciler(AcceptingReconciler):
    kind = "Service"
    watches = ("Secret", "ConfigMap")
    awaiting = "the runtime drivers that start its replicas are not part of this version yet"

    def references(self, obj: Object) -> list[Ref]:
        return env_refs(obj["metadata"]["namespace"], obj["spec"].get("env", []), "spec.env")
