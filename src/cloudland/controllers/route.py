"""Route reconciler: resolves every backend to a Service or Function (BackendNotFound if not).

Routes are queued again whenever a Service or Function comes or goes, so a
Route waiting for its backend resolves as soon as the backend is applied. The
gateway renders every Route whatever its status (a missing backend answers 503);
this status tells the user why. Whether the backends have ready instances right
now is live data, shown by `cloudland routes` from the Services' status.
"""

from __future__ import annotations

from cloudland.controllers.accepting import AcceptingReconciler, Object, Readiness, Ref
from cloudland.controllers.base import Result
from cloudland.controllers.context import Context


class RouteReconciler(AcceptingReconciler):
    kind = "Route"
    watches = ("Service", "Function")

    def references(self, obj: Object) -> list[Ref]:
        ns = obj["metadata"]["namespace"]
        return [
            Ref(backend.get("kind", "Service"), backend.get("namespace") or ns, backend["name"],
                f"spec.rules[{r}].backends[{b}]", "BackendNotFound")
            for r, rule in enumerate(obj["spec"]["rules"])
            for b, backend in enumerate(rule["backends"])
        ]

    def assess(self, obj: Object, status: Object, ctx: Context) -> tuple[Readiness, Result | None]:
        functions = sorted({ref.name for ref in self.references(obj) if ref.kind == "Function"})
        if functions:
            return ("False", "BackendNotServed",
                    f"Function backends ({', '.join(functions)}) are not served by the gateway "
                    "yet; requests to them answer 503"), None
        hosts = obj["spec"].get("hosts") or ["*"]
        return ("True", "Routed", f"the gateway routes {', '.join(hosts)} to its backends"), None
