"""The gateway/mesh: pure rendering of Envoy config from Routes and Services.

`render` turns the model into one whole `Snapshot` (listeners + clusters, with a
content-hash version); the snapshot checks itself (`problems`) and writes the
file-based xDS documents Envoy watches (`to_files`, `bootstrap`). Nothing here
talks to the store or starts processes.
"""

from cloudland.mesh.render import cluster_name, internal_host, missing_backends, render
from cloudland.mesh.snapshot import Snapshot

__all__ = ["Snapshot", "cluster_name", "internal_host", "missing_backends", "render"]
