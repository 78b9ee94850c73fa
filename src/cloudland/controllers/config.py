"""Secret and ConfigMap reconciler: stored is ready, so Ready=True with the number of keys."""

from __future__ import annotations

from cloudland.controllers.accepting import AcceptingReconciler, Object, Readiness
from cloudland.controllers.base import Result
from cloudland.controllers.context import Context


class ConfigReconciler(AcceptingReconciler):
    def __init__(self, kind: str) -> None:
        if kind not in ("Secret", "ConfigMap"):
            raise ValueError(f"ConfigReconciler handles Secret or ConfigMap, not '{kind}'")
        self.kind = kind

    def assess(self, obj: Object, status: Object, ctx: Context) -> tuple[Readiness, Result | None]:
        keys = len(obj.get("data") or {})
        return ("True", "Stored", f"{keys} key{'s' if keys != 1 else ''}"), None
