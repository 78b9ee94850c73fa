"""The CloudLand mesh CA: workload certificates for strict mTLS, delivered to Envoy as files.

`CertificateAuthority` is one self-signed ECDSA P-256 root kept in a directory
(`ca.crt`, `ca.key` 0600, directory 0700). It is created once and reused on every
start, so workload certificates stay valid across CloudLand restarts. It issues
short-lived leaf certificates whose identity is a SPIFFE-style URI SAN
(`spiffe://cloudland.local/ns/<namespace>/svc/<name>`) plus the Service's DNS names,
usable both as server and client certificates.

Envoy gets them through file-based SDS: per workload, a secret document
(`<name>.<namespace>.sds.json`) naming the certificate and key files, and one
document for the CA (`ca.sds.json`) naming the trusted CA file. A listener or
cluster refers to the secrets by name with `sds_config(path)`. Rotation writes the
new key and certificate to new files (their names carry the serial) and then renames
the secret document over the old one: Envoy switches to the new pair at that one
rename, without any listener change, and never sees a new key with an old
certificate. Nothing here talks to the store or starts processes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloudland.errors import CloudLandError
from cloudland.mesh.snapshot import write_atomic
from cloudland.model.kinds import internal_host

TRUST_DOMAIN = "cloudland.local"
CA_COMMON_NAME = "CloudLand mesh CA"
CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
CA_SDS_FILE = "ca.sds.json"
CA_SECRET_NAME = "cloudland_mesh_ca"  # no dots: Envoy cuts stat tags at dots
CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(hours=24)
BACKDATE = dt.timedelta(minutes=5)  # notBefore in the past: tolerate clock skew
ROTATE_FRACTION = 3  # reissue when less than 1/3 of the lifetime is left

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
DOWNSTREAM_TLS_TYPE = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                       "DownstreamTlsContext")
UPSTREAM_TLS_TYPE = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "UpstreamTlsContext")

Json = dict[str, Any]


class CorruptCA(CloudLandError):
    """The CA files on disk cannot be read back as a matching certificate and key."""

    status = 500
    reason = "CorruptCA"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def workload_identity(namespace: str, name: str) -> str:
    """'default', 'web' -> 'spiffe://cloudland.local/ns/default/svc/web'."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/svc/{name}"


def parse_identity(identity: str) -> tuple[str, str]:
    """The (namespace, name) of a workload identity; ValueError if it is not one."""
    prefix = f"spiffe://{TRUST_DOMAIN}/ns/"
    parts = identity[len(prefix):].split("/") if identity.startswith(prefix) else []
    if len(parts) != 3 or parts[1] != "svc" or not parts[0] or not parts[2]:
        raise ValueError(f"'{identity}' is not a workload identity "
                         f"({prefix}<namespace>/svc/<name>)")
    return parts[0], parts[2]


def service_dns_names(namespace: str, name: str) -> list[str]:
    """The DNS SANs of a Service: 'web.default.svc.cloudland.local'."""
    return [internal_host(namespace, name)]


@dataclass(frozen=True)
class IssuedCert:
    """A leaf certificate and its key, PEM-encoded, with what rotation needs to know."""

    identity: str
    serial: int
    cert_pem: bytes
    key_pem: bytes
    issued_at: dt.datetime  # the real issue time (notBefore is BACKDATE earlier)
    not_after: dt.datetime

    @property
    def lifetime(self) -> dt.timedelta:
        return self.not_after - self.issued_at

    def needs_rotation(self, now: dt.datetime) -> bool:
        """True once less than a third of the lifetime is left (or it has expired)."""
        return self.not_after - now < self.lifetime / ROTATE_FRACTION

    @staticmethod
    def from_pem(cert_pem: bytes, key_pem: bytes) -> IssuedCert:
        """Read an issued certificate back from its files' contents."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound as exc:
            raise ValueError("not a workload certificate: it has no subjectAltName") from exc
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        return IssuedCert(identity=uris[0] if uris else "", serial=cert.serial_number,
                          cert_pem=cert_pem, key_pem=key_pem,
                          issued_at=cert.not_valid_before_utc + BACKDATE,
                          not_after=cert.not_valid_after_utc)


class CertificateAuthority:
    """One root certificate and key; issues workload certificates."""

    def __init__(self, directory: Path, cert: x509.Certificate,
                 key: ec.EllipticCurvePrivateKey) -> None:
        self.directory = directory
        self.cert = cert
        self.key = key

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def load_or_create(cls, directory: Path, *, now: dt.datetime | None = None
                       ) -> CertificateAuthority:
        """The CA in `directory`; a new one (written atomically) if there is none yet."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
        if cert_path.exists() or key_path.exists():
            return cls._load(directory)
        key = ec.generate_private_key(ec.SECP256R1())
        start = (now or utcnow()) - BACKDATE
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CloudLand")])
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + CA_LIFETIME)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    key_cert_sign=True, crl_sign=True, encipher_only=False,
                    decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        # Key first: a crash in between leaves a key without a cert, which _load reports.
        write_atomic(key_path, private_key_pem(key), mode=0o600)
        write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return cls(directory, cert, key)

    @classmethod
    def _load(cls, directory: Path) -> CertificateAuthority:
        cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
        hint = (f"delete {directory} to create a new CA (then every workload certificate "
                "is reissued by the new CA), or restore the files from a backup")
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise CorruptCA(f"the mesh CA certificate {cert_path} cannot be read: {exc}",
                            hint=hint) from exc
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise CorruptCA(f"the mesh CA key {key_path} cannot be read: {exc}",
                            hint=hint) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or (
                key.public_key().public_numbers() != _ec_public(cert).public_numbers()):
            raise CorruptCA(f"the mesh CA key {key_path} does not belong to the certificate "
                            f"{cert_path}", hint=hint)
        return cls(directory, cert, key)

    def issue(self, identity: str, *, dns_names: list[str],
              lifetime: dt.timedelta = LEAF_LIFETIME,
              now: dt.datetime | None = None) -> IssuedCert:
        """A new key and a leaf certificate for `identity` (URI SAN) and `dns_names`."""
        namespace, name = parse_identity(identity)
        if lifetime <= dt.timedelta(0):
            raise ValueError(f"a certificate lifetime must be positive, not {lifetime}")
        issued_at = now or utcnow()
        not_after = min(issued_at + lifetime, self.cert.not_valid_after_utc)
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity)]
        sans += [x509.DNSName(dns) for dns in dns_names]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(
                    NameOID.COMMON_NAME, f"{name}.{namespace}"[:64])]))
                .issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(issued_at - BACKDATE).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                               critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False,
                    key_encipherment=True, data_encipherment=False, key_agreement=False,
                    key_cert_sign=False, crl_sign=False, encipher_only=False,
                    decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    _ec_public(self.cert)), critical=False)
                .sign(self.key, hashes.SHA256()))
        return IssuedCert(identity=identity, serial=cert.serial_number,
                          cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                          key_pem=private_key_pem(key), issued_at=issued_at,
                          not_after=cert.not_valid_after_utc)

    def signed(self, cert_pem: bytes) -> bool:
        """Whether `cert_pem` was signed by this CA (signature check only)."""
        try:
            x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


# ---- files and Envoy SDS ------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadFiles:
    """Where one workload's certificates, keys and SDS documents live in `directory`.

    Each certificate and key pair is written under a name carrying its serial
    (`web.default.<serial>.crt`, `.key`) and never changed afterwards; the secret
    document (`web.default.sds.json`) names the current pair. Renaming that one
    document is therefore the single, atomic switch from one pair to the next."""

    directory: Path
    stem: str  # '<name>.<namespace>'

    @staticmethod
    def of(directory: Path, identity: str) -> WorkloadFiles:
        namespace, name = parse_identity(identity)
        return WorkloadFiles(Path(directory).absolute(), f"{name}.{namespace}")

    def cert_for(self, serial: int) -> Path:
        return self.directory / f"{self.stem}.{serial:x}.crt"

    def key_for(self, serial: int) -> Path:
        return self.directory / f"{self.stem}.{serial:x}.key"

    @property
    def sds(self) -> Path:
        """The tls_certificate secret document (secret name: `secret_name`)."""
        return self.directory / f"{self.stem}.sds.json"

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT_FILE

    @property
    def ca_sds(self) -> Path:
        """The validation_context secret document (secret name: CA_SECRET_NAME)."""
        return self.directory / CA_SDS_FILE

    @property
    def secret_name(self) -> str:
        """'cloudland_workload_default_web' (no dots, '_' is in no DNS label)."""
        name, namespace = self.stem.split(".")
        return f"cloudland_workload_{namespace}_{name}"

    def current(self) -> tuple[Path, Path] | None:
        """The (certificate, key) files the secret document names; None if there is none."""
        try:
            secret = json.loads(self.sds.read_text())["resources"][0]["tls_certificate"]
            return (Path(secret["certificate_chain"]["filename"]),
                    Path(secret["private_key"]["filename"]))
        except (OSError, ValueError, LookupError, TypeError):
            return None

    def load(self) -> IssuedCert | None:
        """The certificate Envoy is told to use; None if there is none or it is unreadable."""
        paths = self.current()
        if paths is None:
            return None
        try:
            return IssuedCert.from_pem(paths[0].read_bytes(), paths[1].read_bytes())
        except (OSError, ValueError):
            return None


def tls_certificate_secret(name: str, cert_path: Path, key_path: Path,
                           version: str) -> Json:
    """An SDS DiscoveryResponse with one tls_certificate secret read from files."""
    return {"version_info": version,
            "resources": [{"@type": SECRET_TYPE, "name": name,
                           "tls_certificate": {
                               "certificate_chain": {"filename": str(cert_path)},
                               "private_key": {"filename": str(key_path)}}}]}


def validation_context_secret(name: str, ca_path: Path, version: str) -> Json:
    """An SDS DiscoveryResponse with one validation_context secret: trust `ca_path`."""
    return {"version_info": version,
            "resources": [{"@type": SECRET_TYPE, "name": name,
                           "validation_context": {"trusted_ca": {"filename": str(ca_path)}}}]}


def sds_config(path: Path) -> Json:
    """The ConfigSource that makes Envoy read a secret from `path` and follow its renames.

    A relative `path` is resolved against Envoy's working directory (the gateway's
    run directory), which keeps rendered config independent of where it runs.
    Envoy watches `path` itself for moves (no watched_directory: renames of other files
    in the directory, such as a new certificate written before its document, must not
    reload this secret) and watches the files the secret names, which never change."""
    return {"resource_api_version": "V3", "path_config_source": {"path": str(path)}}


def common_tls_context(files: WorkloadFiles) -> Json:
    """This workload's certificate, and the CloudLand CA as the only trusted root."""
    return {"tls_certificate_sds_secret_configs": [
                {"name": files.secret_name, "sds_config": sds_config(files.sds)}],
            "validation_context_sds_secret_config": {
                "name": CA_SECRET_NAME, "sds_config": sds_config(files.ca_sds)}}


def downstream_transport_socket(files: WorkloadFiles) -> Json:
    """A listener's TLS for `mtls: strict`: callers must present a CloudLand certificate."""
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": DOWNSTREAM_TLS_TYPE,
                             "require_client_certificate": True,
                             "common_tls_context": common_tls_context(files)}}


def upstream_transport_socket(files: WorkloadFiles, sni: str) -> Json:
    """A cluster's TLS towards a strict Service: present our certificate, trust the CA."""
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": UPSTREAM_TLS_TYPE, "sni": sni,
                             "common_tls_context": common_tls_context(files)}}


def write_ca_files(directory: Path, ca: CertificateAuthority) -> None:
    """`ca.crt` and its validation_context document, rewritten only if the CA changed."""
    target = Path(directory).absolute()
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(target, 0o700)
    write_if_changed(target / CA_CERT_FILE, ca.cert_pem, mode=0o644)
    write_if_changed(target / CA_SDS_FILE, json_bytes(validation_context_secret(
        CA_SECRET_NAME, target / CA_CERT_FILE, format(ca.cert.serial_number, "x"))),
        mode=0o644)


def write_workload_files(directory: Path, issued: IssuedCert, ca: CertificateAuthority
                         ) -> WorkloadFiles:
    """Write the pair, the CA certificate and both SDS documents, each atomically.

    The new key and certificate go to new files; then the secret document is renamed
    over the old one, which is the moment Envoy switches, seeing both new files at
    once. Pairs older than the one just replaced are removed."""
    files = WorkloadFiles.of(Path(directory), issued.identity)
    write_ca_files(directory, ca)
    previous = files.current()
    cert, key = files.cert_for(issued.serial), files.key_for(issued.serial)
    write_atomic(key, issued.key_pem, mode=0o600)
    write_atomic(cert, issued.cert_pem, mode=0o644)
    write_atomic(files.sds, json_bytes(tls_certificate_secret(
        files.secret_name, cert, key, format(issued.serial, "x"))), mode=0o644)
    # Keep the previous pair: an Envoy that read the old document a moment ago may still
    # be loading it. Anything older is unreferenced.
    keep = {cert, key, *(previous or ())}
    for old in (*files.directory.glob(f"{files.stem}.*.crt"),
                *files.directory.glob(f"{files.stem}.*.key")):
        if old not in keep:
            old.unlink(missing_ok=True)
    return files


def rotate_if_needed(ca: CertificateAuthority, directory: Path, identity: str, *,
                     dns_names: list[str], lifetime: dt.timedelta = LEAF_LIFETIME,
                     now: dt.datetime | None = None) -> bool:
    """Issue and write a new certificate for `identity` if the one on disk is missing,
    unreadable, from another CA, for other names, or near its end; True if it did."""
    now = now or utcnow()
    files = WorkloadFiles.of(Path(directory), identity)
    write_ca_files(directory, ca)
    current = files.load()
    if (current is not None and not current.needs_rotation(now) and ca.signed(current.cert_pem)
            and _dns_names(current.cert_pem) == sorted(dns_names)):
        return False
    write_workload_files(directory, ca.issue(identity, dns_names=dns_names, lifetime=lifetime,
                                             now=now), ca)
    return True


# ---- helpers --------------------------------------------------------------------------


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _ec_public(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise CorruptCA(f"the mesh CA certificate has a {type(public).__name__}, "
                        "not an ECDSA key")
    return public


def _dns_names(cert_pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(san.get_values_for_type(x509.DNSName))


def json_bytes(document: Json) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def write_if_changed(path: Path, data: bytes, *, mode: int) -> None:
    """`write_atomic` unless the file already holds `data` (a rename makes Envoy reload)."""
    try:
        if path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    write_atomic(path, data, mode=mode)


