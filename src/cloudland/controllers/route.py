"""Route reconciler: resolves every backend to a Service or Function (BackendNotFound if not).

Routes are queued again whenever a Service or Function comes or goes, so a
Route waiting for its backend resolves as soon as the backend is applied.
Serving traffic belongs to the gateway (Envoy), which a later capability adds.
"""

from __future__ import annotations

from cloudland.controllers.accepting import AcceptingReconciler, Object, Ref


class RouteReconciler(AcceptingReconciler):
    kind = "Route"
    watches = ("Service", "Function")
    awaiting = ("its backends exist; the gateway that serves it is not part of this "
                "version yet")

    def references(self, obj: Object) -> list[Ref]:
        ns = obj["metadata"]["namespace"]
        return [
            Ref(backend["kind"], backend.get("namespace") or ns, backend["name"],
                f"spec.rules[{r}].backends[{b}]", "BackendNotFound")
            for r, rule in enumerate(obj["spec"]["rules"])
            for b, backend in enumerate(rule["backends"])
        ]
