"""Which store changes make the gateway render again: only those that change what the
rendering reads (a Route's spec, a Service's endpoints and addresses), never a write
of conditions or counts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from cloudland.api.service import ResourceService
from cloudland.daemon.gateway import Gateway
from cloudland.store import Store
from cloudland.store.store import Change


def changed(gateway: Gateway, kind: str, obj: dict[str, Any], type_: str = "MODIFIED") -> bool:
    gateway._dirty.clear()
    gateway._on_change(Change(1, type_, {"kind": kind, **obj}))
    return gateway._dirty.is_set()


def test_only_what_the_rendering_reads_marks_the_gateway_dirty(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.db")
    try:
        gateway = Gateway(ResourceService(store), tmp_path / "gateway", port=1)
        route: dict[str, Any] = {"metadata": {"namespace": "default", "name": "front",
                                              "generation": 1},
                                 "spec": {"rules": []}, "status": {}}
        assert changed(gateway, "Route", route, "ADDED")
        conditions = copy.deepcopy(route)
        conditions["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
        assert not changed(gateway, "Route", conditions)  # a status-only write
        edited = copy.deepcopy(conditions)
        edited["metadata"]["generation"] = 2
        assert changed(gateway, "Route", edited)  # its spec changed
        deleting = copy.deepcopy(edited)
        deleting["metadata"]["deletionTimestamp"] = "2026-12-07T00:00:00Z"
        assert changed(gateway, "Route", deleting)
        assert changed(gateway, "Route", deleting, "DELETED")

        svc: dict[str, Any] = {"metadata": {"namespace": "default", "name": "web",
                                            "generation": 1},
                               "spec": {}, "status": {"endpoints": ["127.0.0.1:9"]}}
        assert changed(gateway, "Service", svc, "ADDED")
        counted = copy.deepcopy(svc)
        counted["status"]["readyReplicas"] = 1
        assert not changed(gateway, "Service", counted)
        moved = copy.deepcopy(counted)
        moved["status"]["endpoints"] = ["127.0.0.1:10"]
        assert changed(gateway, "Service", moved)
        # Same names, different kinds: remembered apart.
        assert changed(gateway, "Route", {**route, "metadata": {**route["metadata"],
                                                                "name": "web"}}, "ADDED")
        assert not changed(gateway, "ConfigMap", {"metadata": {"namespace": "default",
                                                               "name": "web"}})
    finally:
        store.close()
