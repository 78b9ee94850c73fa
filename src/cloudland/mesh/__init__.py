"""The gateway/mesh: Envoy config rendered from Routes and Services, and Envoy run.

`render` turns the model into one whole `Snapshot` (listeners, clusters, route
configs, endpoints, with a content-hash version); the snapshot checks itself
(`problems`) and writes the file-based xDS documents Envoy watches (`to_files`,
`bootstrap`). `envoy.ManagedEnvoy` runs and supervises the Envoy process; `ca`
issues the mesh's certificates. Nothing here talks to the store.
"""

from cloudland.mesh.render import (
    cluster_name,
    internal_host,
    render,
    route_conflicts,
)
from cloudland.mesh.snapshot import Snapshot

__all__ = ["Snapshot", "cluster_name", "internal_host", "render", "route_conflicts"]
