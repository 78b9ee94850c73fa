"""What the workload controllers (Service, Job) share: the runtime and env resolution."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from cloudland.controllers.accepting import Object, env_refs, missing
from cloudland.controllers.base import PermanentError
from cloudland.controllers.context import Context
from cloudland.runtime import Driver
from cloudland.runtime.ports import PortAllocator


@dataclass
class Runtime:
    """What workload controllers run things with; built by the daemon."""

    drivers: dict[str, Driver]
    log_root: Path
    ports: PortAllocator = field(default_factory=PortAllocator)

    def driver(self, name: str) -> Driver:
        driver = self.drivers.get(name)
        if driver is None:
            raise PermanentError(f"spec.runtime: the '{name}' runtime is not available here "
                                 f"(available: {', '.join(self.drivers) or 'none'})",
                                 reason="RuntimeUnavailable")
        return driver


def resolve_env(ctx: Context, namespace: str, env: list[Object],
                field: str) -> tuple[dict[str, str], list[str]]:
    """Env values with Secret and ConfigMap references read; and what is missing."""
    problems = [why for ref in env_refs(namespace, env, field) if (why := missing(ctx, ref))]
    values: dict[str, str] = {}
    for var in env:
        if var.get("value") is not None:
            values[var["name"]] = var["value"]
            continue
        source = var.get("valueFrom") or {}
        for attr, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            ref = source.get(attr)
            if not ref:
                continue
            found = ctx.api.find(kind, namespace, ref["name"])
            value = (found or {}).get("data", {}).get(ref["key"])
            if value is not None:
                values[var["name"]] = (base64.b64decode(value).decode(errors="replace")
                                       if kind == "Secret" else value)
    return values, problems
