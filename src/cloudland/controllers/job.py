"""Job reconciler: for now, checks the Secrets and ConfigMaps its env reads.

Running it to completion belongs to the job runner, which a later capability adds.
"""

from __future__ import annotations

from cloudland.controllers.accepting import AcceptingReconciler, Object, Ref, env_refs


class JobReconciler(AcceptingReconciler):
    kind = "Job"
    watches = ("Secret", "ConfigMap")
    awaiting = "the job runner that runs it to completion is not part of this version yet"

    def references(self, obj: Object) -> list[Ref]:
        return env_refs(obj["metadata"]["namespace"], obj["spec"].get("env", []), "spec.env")
