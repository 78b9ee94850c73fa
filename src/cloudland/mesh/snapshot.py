"""One whole, versioned Envoy configuration and how it is published.

A `Snapshot` owns the listeners and clusters Envoy runs, the content-hash version
that names them, the consistency check done before publishing (`problems`), and
the file-based xDS documents (`lds.json`, `cds.json`) plus the bootstrap that
points Envoy at them. Files are replaced atomically (temp file + rename) and
Envoy watches the directory, so it picks up each rename as one whole update.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager")
LDS_FILE = "lds.json"
CDS_FILE = "cds.json"
NODE_ID = "cloudland"


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces: the same config always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def route_owner(route_name: str) -> str:
    """'default/web/rule0/match1' -> 'default/web' (the Route that rendered it)."""
    return "/".join(route_name.split("/")[:2])


@dataclass(frozen=True)
class Snapshot:
    """The whole dynamic config: listeners and clusters, named by a content hash."""

    listeners: list[dict[str, Any]]
    clusters: list[dict[str, Any]]
    version: str = field(init=False)

    def __post_init__(self) -> None:
        body = canonical_json({"listeners": self.listeners, "clusters": self.clusters})
        object.__setattr__(self, "version", hashlib.sha256(body.encode()).hexdigest()[:16])

    # ---- consistency -----------------------------------------------------------------

    def route_configs(self) -> list[dict[str, Any]]:
        """Every inline route configuration of every HTTP connection manager."""
        configs = []
        for listener in self.listeners:
            for chain in listener.get("filter_chains", []):
                for flt in chain.get("filters", []):
                    typed = flt.get("typed_config", {})
                    if typed.get("@type") == HCM_TYPE and "route_config" in typed:
                        configs.append(typed["route_config"])
        return configs

    def referenced_clusters(self) -> set[str]:
        """Names of all clusters some route sends traffic to."""
        names: set[str] = set()
        for config in self.route_configs():
            for vhost in config.get("virtual_hosts", []):
                for route in vhost.get("routes", []):
                    action = route.get("route") or {}
                    if "cluster" in action:
                        names.add(action["cluster"])
                    for weighted in (action.get("weighted_clusters") or {}).get("clusters", []):
                        names.add(weighted["name"])
        return names

    def problems(self) -> list[str]:
        """What makes this snapshot unfit to publish, as messages for a human; [] if fit."""
        found: list[str] = []
        for kind, items in (("listener", self.listeners), ("cluster", self.clusters)):
            seen: set[str] = set()
            for item in items:
                if item["name"] in seen:
                    found.append(f"duplicate {kind} name '{item['name']}'")
                seen.add(item["name"])
        clusters = {c["name"] for c in self.clusters}
        for missing in sorted(self.referenced_clusters() - clusters):
            found.append(f"a route sends traffic to cluster '{missing}', which does not exist")
        found.extend(self._conflicts())
        return found

    def _conflicts(self) -> list[str]:
        """Two different Routes claiming the same host and the same match."""
        found: list[str] = []
        for config in self.route_configs():
            for vhost in config.get("virtual_hosts", []):
                owners: dict[str, str] = {}
                for route in vhost.get("routes", []):
                    name = route.get("name", "")
                    if name.startswith("svc:"):
                        continue  # the built-in fallback to a Service, not a user's Route
                    owner, key = route_owner(name), canonical_json(route.get("match", {}))
                    first = owners.setdefault(key, owner)
                    if first != owner:
                        found.append(
                            f"Routes {first} and {owner} both match host "
                            f"'{vhost['domains'][0]}' {describe_match(route['match'])}")
        return found

    # ---- publishing -----------------------------------------------------------------

    def documents(self) -> dict[str, dict[str, Any]]:
        """File name -> xDS DiscoveryResponse, as Envoy's file subscriptions read them."""
        return {
            CDS_FILE: {"version_info": self.version,
                       "resources": [{"@type": CLUSTER_TYPE, **c} for c in self.clusters]},
            LDS_FILE: {"version_info": self.version,
                       "resources": [{"@type": LISTENER_TYPE, **lst} for lst in self.listeners]},
        }

    def to_files(self, directory: str | Path) -> None:
        """Write cds.json then lds.json, each atomically, into `directory`.

        Clusters go first so that a listener never arrives before the clusters its
        routes name (they would answer 503 until then).
        """
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        for name, document in self.documents().items():
            write_atomic(target / name, json.dumps(document, indent=1, sort_keys=True))

    @staticmethod
    def bootstrap(admin_port: int, directory: str | Path) -> dict[str, Any]:
        """Envoy's bootstrap: LDS/CDS from the files in `directory`, admin on loopback."""
        where = Path(directory).resolve()

        def source(file: str) -> dict[str, Any]:
            return {"resource_api_version": "V3",
                    "path_config_source": {"path": str(where / file),
                                           "watched_directory": {"path": str(where)}}}

        return {
            "node": {"id": NODE_ID, "cluster": NODE_ID},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": admin_port}}},
            "dynamic_resources": {"lds_config": source(LDS_FILE),
                                  "cds_config": source(CDS_FILE)},
        }


def describe_match(match: dict[str, Any]) -> str:
    """An Envoy route match in words, for messages: "path prefix '/api' GET"."""
    if "path" in match:
        text = f"path '{match['path']}'"
    elif "safe_regex" in match:
        text = f"path regex '{match['safe_regex']['regex']}'"
    else:
        text = f"path prefix '{match.get('prefix', '/')}'"
    extra = len(match.get("headers", [])) + len(match.get("query_parameters", []))
    return text + (f" (with the same {extra} header/query conditions)" if extra else "")


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader sees the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
