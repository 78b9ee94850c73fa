"""Builders for the mesh tests: Route and Service objects as the API returns them,
and golden-file comparison (regenerate with CLOUDLAND_UPDATE_GOLDEN=1)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "golden"


def service(name: str, endpoints: list[str] | None = None,
            namespace: str = "default") -> dict[str, Any]:
    """A Service with the given ready endpoints in its status."""
    return {"apiVersion": "cloudland/v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"command": ["serve"], "replicas": len(endpoints or [])},
            "status": {"endpoints": list(endpoints or [])}}


def route(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "cloudland/v1", "kind": "Route",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def check_golden(name: str, value: Any) -> None:
    """Compare `value` with golden/<name>.json; rewrite it when CLOUDLAND_UPDATE_GOLDEN=1."""
    path = GOLDEN / f"{name}.json"
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    if os.environ.get("CLOUDLAND_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing; run with CLOUDLAND_UPDATE_GOLDEN=1 to create it"
    expected = path.read_text()
    assert text == expected, (f"rendering of '{name}' differs from {path}; if the change is "
                              "intended, rerun with CLOUDLAND_UPDATE_GOLDEN=1 and review the diff")
