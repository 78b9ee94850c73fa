"""One whole, versioned Envoy configuration and how it is published.

A `Snapshot` owns the listeners, clusters, route configurations and endpoint
assignments Envoy runs, the content-hash version that names the whole, the
consistency check done before publishing (`problems`), and the file-based xDS
documents plus the bootstrap that points Envoy at them.

Each kind of resource is its own subscription with its own file, so a change
touches only what changed: an endpoint becoming ready rewrites one EDS file, a
Route edit one RDS file, and neither replaces a listener (which would drain its
connections). Envoy's file subscriptions take exactly one RouteConfiguration or
ClusterLoadAssignment per file, hence one file per route config and per cluster.
Every document carries the hash of its own content as its version, and Envoy
reports the version it holds per subscription (`<stat prefix>.version_text`),
which is how an apply is confirmed. Paths are relative to Envoy's working
directory (the run directory), so the rendering does not depend on where it lives.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from cloudland.model.regex import MAX_PROGRAM_SIZE

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINTS_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager")
XDS_DIR = "xds"
LDS_FILE = "lds.json"
CDS_FILE = "cds.json"
RDS_DIR = "rds"
EDS_DIR = "eds"
NODE_ID = "cloudland"

Json = dict[str, Any]
H = TypeVar("H")  # how a caller names a host (its name, or the virtual host itself)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces: the same config always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_version(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def route_owner(route_name: str) -> str:
    """'default/web/rule0/match1' -> 'default/web' (the Route that rendered it)."""
    return "/".join(route_name.split("/")[:2])


def clashes(hosts: Iterable[tuple[H, Iterable[Json]]]) -> Iterator[tuple[H, Json, str, str]]:
    """(host, match, first Route, other Route) for each route entry whose match on its
    host an entry of another Route claimed before it; the one check behind admission
    (`render.route_conflicts`) and the snapshot's own (`Snapshot.problems`)."""
    for host, entries in hosts:
        claims: dict[str, str] = {}
        for entry in entries:
            name = entry.get("name", "")
            if name.startswith("svc:"):
                continue  # the built-in fallback to a Service, not a user's Route
            owner = route_owner(name)
            first = claims.setdefault(canonical_json(entry.get("match", {})), owner)
            if first != owner:
                yield host, entry["match"], first, owner


def config_source(relative: str) -> Json:
    """A file subscription: Envoy watches the file's directory and rereads it on rename."""
    directory = os.path.dirname(relative) or "."
    return {"resource_api_version": "V3",
            "path_config_source": {"path": relative, "watched_directory": {"path": directory}}}


def rds_source(name: str) -> Json:
    return config_source(f"{XDS_DIR}/{RDS_DIR}/{name}.json")


def eds_source(cluster: str) -> Json:
    return config_source(f"{XDS_DIR}/{EDS_DIR}/{cluster}.json")


@dataclass(frozen=True)
class Document:
    """One xDS file: its path under the run directory, resources, and where Envoy
    reports the version it took (`<stat_prefix>.version_text`, `.update_rejected`)."""

    path: str
    type_url: str
    resources: list[Json]
    stat_prefix: str

    @cached_property
    def version(self) -> str:
        return content_version(self.resources)

    def body(self) -> Json:
        return {"version_info": self.version,
                "resources": [{"@type": self.type_url, **r} for r in self.resources]}


@dataclass(frozen=True)
class Snapshot:
    """The whole dynamic config, named by a content hash of all of it."""

    listeners: list[Json]
    clusters: list[Json]
    routes: list[Json] = field(default_factory=list)     # RouteConfigurations (RDS)
    endpoints: list[Json] = field(default_factory=list)  # ClusterLoadAssignments (EDS)
    version: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", content_version(
            {"listeners": self.listeners, "clusters": self.clusters,
             "routes": self.routes, "endpoints": self.endpoints}))

    # ---- consistency -----------------------------------------------------------------

    def _typed_filters(self) -> list[Json]:
        """The typed config of every network filter of every listener, in order."""
        return [flt.get("typed_config", {}) for listener in self.listeners
                for chain in listener.get("filter_chains", [])
                for flt in chain.get("filters", [])]

    def route_configs(self) -> list[Json]:
        """Every route configuration: the RDS ones and any inline in a listener."""
        return [*self.routes, *(typed["route_config"] for typed in self._typed_filters()
                                if typed.get("@type") == HCM_TYPE and "route_config" in typed)]

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

    def referenced_route_configs(self) -> set[str]:
        return {typed["rds"]["route_config_name"] for typed in self._typed_filters()
                if typed.get("rds")}

    def problems(self) -> list[str]:
        """What makes this snapshot unfit to publish, as messages for a human; [] if fit."""
        return list(self._problems)

    @cached_property
    def _problems(self) -> tuple[str, ...]:
        # Checked once per snapshot: the gateway and ManagedEnvoy.apply both ask.
        found: list[str] = []
        for kind, items in (("listener", self.listeners), ("cluster", self.clusters),
                            ("route config", self.routes)):
            seen: set[str] = set()
            for item in items:
                if item["name"] in seen:
                    found.append(f"duplicate {kind} name '{item['name']}'")
                seen.add(item["name"])
        clusters = {c["name"] for c in self.clusters}
        for missing in sorted(self.referenced_clusters() - clusters):
            found.append(f"a route sends traffic to cluster '{missing}', which does not exist")
        for missing in sorted(self.referenced_route_configs() - {r["name"] for r in self.routes}):
            found.append(f"a listener uses route config '{missing}', which does not exist")
        assigned = {e["cluster_name"] for e in self.endpoints}
        for cluster in self.clusters:
            wanted = (cluster.get("eds_cluster_config") or {}).get("service_name")
            if cluster.get("type") == "EDS" and wanted not in assigned:
                found.append(f"cluster '{cluster['name']}' has no endpoint assignment")
        found.extend(self._conflicts())
        return tuple(found)

    def _conflicts(self) -> list[str]:
        """Two different Routes claiming the same host and the same match."""
        vhosts = ((vhost, vhost.get("routes", [])) for config in self.route_configs()
                  for vhost in config.get("virtual_hosts", []))
        return [f"Routes {first} and {owner} both match host '{vhost['domains'][0]}' "
                f"{describe_match(match)}" for vhost, match, first, owner in clashes(vhosts)]

    # ---- publishing -----------------------------------------------------------------

    def documents(self) -> list[Document]:
        """Every xDS file, in the order to publish them: what is referenced comes before
        what references it (endpoints, clusters, routes, listeners), so no update ever
        names something Envoy does not have yet."""
        return list(self._documents)

    @cached_property
    def _documents(self) -> tuple[Document, ...]:
        # Built once: an apply compares, writes, confirms and prunes the same documents,
        # and each one's version hash is cached with it.
        docs = [Document(f"{XDS_DIR}/{EDS_DIR}/{e['cluster_name']}.json", ENDPOINTS_TYPE, [e],
                         f"cluster.{e['cluster_name']}") for e in self.endpoints]
        docs.append(Document(f"{XDS_DIR}/{CDS_FILE}", CLUSTER_TYPE, self.clusters,
                             "cluster_manager.cds"))
        docs += [Document(f"{XDS_DIR}/{RDS_DIR}/{r['name']}.json", ROUTE_TYPE, [r],
                          f"http.{self._rds_stat_prefix(r['name'])}.rds.{r['name']}")
                 for r in self.routes]
        docs.append(Document(f"{XDS_DIR}/{LDS_FILE}", LISTENER_TYPE, self.listeners,
                             "listener_manager.lds"))
        return tuple(docs)

    def _rds_stat_prefix(self, route_config: str) -> str:
        """The stat prefix of the HCM that subscribes to a route config (each route
        config has one listener of its own: Envoy reports a shared subscription under
        whichever HCM created it)."""
        hcm = self._rds_subscribers.get(route_config)
        return "unused" if hcm is None else str(hcm["stat_prefix"])

    @cached_property
    def _rds_subscribers(self) -> dict[str, Json]:
        # Route config -> the first HCM subscribing to it, in one pass over the
        # listeners (not one pass per route config: quadratic in Services).
        found: dict[str, Json] = {}
        for typed in self._typed_filters():
            name = (typed.get("rds") or {}).get("route_config_name")
            if name is not None:
                found.setdefault(name, typed)
        return found

    def to_files(self, run_dir: str | Path, *, only_changed: bool = False) -> list[Document]:
        """Write the documents under `run_dir`, each atomically; returns those written.

        With `only_changed`, a file whose version already matches is left alone, so
        Envoy rereads only what changed. Files of resources no longer in the snapshot
        are removed afterwards (`remove_stale_files`: Envoy stops watching them once the
        listener or cluster that used them is gone)."""
        files = XdsFiles(run_dir)
        docs = files.changed(self.documents()) if only_changed else self.documents()
        files.write(docs)
        return docs

    def remove_stale_files(self, run_dir: str | Path) -> None:
        XdsFiles(run_dir).remove_stale(self.documents())

    @staticmethod
    def bootstrap(admin: int | str) -> Json:
        """Envoy's bootstrap: LDS/CDS from files under its working directory; the admin
        interface on a Unix socket only its owner can use (`admin` a path), or on a
        loopback port (`admin` a number, for tools and tests)."""
        address: Json = ({"pipe": {"path": admin, "mode": 0o600}} if isinstance(admin, str)
                         else {"socket_address": {"address": "127.0.0.1", "port_value": admin}})
        return {
            "node": {"id": NODE_ID, "cluster": NODE_ID},
            "admin": {"address": address},
            "dynamic_resources": {"lds_config": config_source(f"{XDS_DIR}/{LDS_FILE}"),
                                  "cds_config": config_source(f"{XDS_DIR}/{CDS_FILE}")},
            # Latency histograms reach /stats at each flush (Envoy's default is 5 s).
            "stats_flush_interval": "1s",
            # Route regexes are checked at apply against the same limit (model.regex).
            "layered_runtime": {"layers": [{"name": "cloudland", "static_layer": {
                "re2.max_program_size.error_level": MAX_PROGRAM_SIZE,
                "re2.max_program_size.warn_level": MAX_PROGRAM_SIZE}}]},
        }


class XdsFiles:
    """The xDS files under one run directory, and the version of each as last written
    through this object.

    Comparing against that memory, an apply reads no file back. Without one (nothing
    written yet, e.g. a restarted CloudLand), the versions in the files on disk are
    read once and become the memory, so only what changed is rewritten."""

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir)
        self._versions: dict[str, str] | None = None  # document path -> version on disk

    def changed(self, docs: list[Document]) -> list[Document]:
        """The documents whose file does not hold their version."""
        if self._versions is None:
            self._versions = {d.path: v for d in docs
                              if (v := file_version(self.root / d.path)) is not None}
        versions = self._versions
        return [d for d in docs if versions.get(d.path) != d.version]

    def write(self, docs: list[Document]) -> None:
        """Replace each document's file atomically, in order."""
        if self._versions is None:
            self._versions = {}
        versions = self._versions
        for doc in docs:
            path = self.root / doc.path
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(doc.body(), indent=1, sort_keys=True), sync=False)
            versions[doc.path] = doc.version  # only once it is there (a write may fail)

    def remove_stale(self, docs: list[Document]) -> None:
        """Remove the route config and endpoint files no document of `docs` has."""
        keep = {doc.path for doc in docs}
        for sub in (RDS_DIR, EDS_DIR):
            for path in (self.root / XDS_DIR / sub).glob("*.json"):
                relative = str(path.relative_to(self.root))
                if relative not in keep:
                    path.unlink(missing_ok=True)
                    if self._versions is not None:
                        self._versions.pop(relative, None)


def file_version(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_bytes()).get("version_info"))
    except (OSError, ValueError, AttributeError):
        return None


def describe_match(match: Json) -> str:
    """An Envoy route match in words, for messages: "path prefix '/api' GET"."""
    if "path" in match:
        text = f"path '{match['path']}'"
    elif "safe_regex" in match:
        text = f"path regex '{match['safe_regex']['regex']}'"
    else:
        text = f"path prefix '{match.get('path_separated_prefix') or match.get('prefix', '/')}'"
    extra = len(match.get("headers", [])) + len(match.get("query_parameters", []))
    return text + (f" (with the same {extra} header/query conditions)" if extra else "")


def write_atomic(path: Path, data: str | bytes, *, sync: bool = True,
                 mode: int | None = None) -> None:
    """Replace `path` with `data` so a reader sees the old file or the new one, never half.

    `mode` is set before any byte is written (a key is never readable by others, even
    for an instant). `sync=False` skips the fsyncs for files that are derived state
    (xDS documents are rendered again from the store after a crash), which keeps
    applies fast; with `sync`, the file and then its directory are synced so the
    rename survives a crash."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
            if sync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
