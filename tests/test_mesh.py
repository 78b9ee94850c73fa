"""The mesh end to end: Services call each other through Envoy, and `mtls: strict`
admits only callers with a CloudLand certificate."""

from __future__ import annotations

import http.client
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudland.client import Client
from cloudland.errors import Invalid
from cloudland.mesh.ca import CertificateAuthority, service_dns_names, workload_identity
from tests.conftest import Running, wait_for
from tests.test_services import hello_spec, ready_count, service, status

# An app that calls the Service named by CALLS through its discovery variable.
CALLER = '''
import os, urllib.request

def app(environ, start_response):
    target = os.environ[os.environ["CALLS"].upper() + "_URL"]
    with urllib.request.urlopen(target + "/", timeout=5) as resp:
        body = b"via mesh: " + resp.read()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def caller_spec(tmp_path: Path, calls: str) -> dict[str, Any]:
    (tmp_path / "caller_app.py").write_text(CALLER)
    return {"workingDir": str(tmp_path), "python": {"app": "caller_app:app"},
            "env": [{"name": "CALLS", "value": calls}],
            "readinessProbe": {"tcpSocket": {}, "periodSeconds": 1}}


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def tls_get(where: str, context: ssl.SSLContext, host: str) -> tuple[int, str]:
    """GET / over TLS to `where` ('127.0.0.1:port'), checking the server's certificate
    against `host` (SNI and name), as a mesh client would."""
    with socket.create_connection(address(where), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, resp.read().decode()


def client_context(home: Path, identity: str | None, host: str) -> ssl.SSLContext:
    ca = CertificateAuthority.load_or_create(home / "mesh-ca")
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    if identity is not None:
        issued = ca.issue(identity, dns_names=[])
        (home / "client.crt").write_bytes(issued.cert_pem)
        (home / "client.key").write_bytes(issued.key_pem)
        context.load_cert_chain(home / "client.crt", home / "client.key")
    return context


def refused(fn: Any) -> bool:
    try:
        fn()
    except (ssl.SSLError, ConnectionError, http.client.HTTPException, OSError):
        return True
    return False


def test_services_call_each_other_through_the_mesh_and_strict_needs_a_certificate(
        cloudland: Running, tmp_path: Path) -> None:
    pay_spec = {**hello_spec(tmp_path, 1), "mtls": "strict"}
    with Client(cloudland.api) as client:
        client.apply([service("pay", pay_spec)])
        wait_for(lambda: ready_count(client, "pay", 1), timeout=30, message="pay ready")
        client.apply([service("cart", caller_spec(tmp_path, "pay"))])
        wait_for(lambda: ready_count(client, "cart", 1), timeout=30, message="cart ready")
        pay, cart = status(client, "pay"), status(client, "cart")
    assert pay["address"] != pay["inbound"]
    host = "pay.default.svc.cloudland.local"

    # East-west: cart calls $PAY_URL, Envoy's listener for pay, which reaches the
    # strict Service over mutual TLS with the mesh's own certificate.
    def through(url: str, **kw: Any) -> tuple[int, str]:
        r = httpx.get(url, timeout=5, **kw)
        return r.status_code, r.text

    wait_for(lambda: through(f"http://{cart['address']}/") == (200, "via mesh: hello v1"),
             timeout=10, message="cart -> pay through the mesh")
    # North-south: the gateway reaches it the same way.
    assert through(cloudland.state["gateway"] + "/", headers={"Host": host}) == (200, "hello v1")

    # The inbound listener itself: plain text is refused ...
    def plain() -> None:
        with socket.create_connection(address(pay["inbound"]), timeout=5) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            if not sock.recv(100).startswith(b"HTTP/1.1 200"):
                raise ConnectionError("no HTTP answer")

    assert refused(plain)
    # ... so is TLS without a client certificate, and one from another CA ...
    home = cloudland.home
    anonymous = client_context(home, None, host)
    assert refused(lambda: tls_get(pay["inbound"], anonymous, host))
    stranger = CertificateAuthority.load_or_create(tmp_path / "other-ca")
    foreign = client_context(home, None, host)
    issued = stranger.issue(workload_identity("default", "intruder"), dns_names=[])
    (tmp_path / "f.crt").write_bytes(issued.cert_pem)
    (tmp_path / "f.key").write_bytes(issued.key_pem)
    foreign.load_cert_chain(tmp_path / "f.crt", tmp_path / "f.key")
    assert refused(lambda: tls_get(pay["inbound"], foreign, host))
    # ... and a client with a CloudLand certificate gets through, seeing pay's own
    # certificate for its internal name.
    trusted = client_context(home, workload_identity("default", "tester"), host)
    assert tls_get(pay["inbound"], trusted, host) == (200, "hello v1")
    assert host in service_dns_names("default", "pay")


def test_strict_can_be_turned_off_again(cloudland: Running, tmp_path: Path) -> None:
    spec = {**hello_spec(tmp_path, 1), "mtls": "strict"}
    with Client(cloudland.api) as client:
        client.apply([service("ledger", spec)])
        wait_for(lambda: "inbound" in status(client, "ledger")
                 and ready_count(client, "ledger", 1), timeout=30, message="ledger ready")
        client.apply([service("ledger", {**spec, "mtls": "permissive"})])
        wait_for(lambda: "inbound" not in status(client, "ledger"), timeout=10,
                 message="the inbound address released")
        mesh = status(client, "ledger")["address"]

    def plain_text() -> bool:
        # Until Envoy has taken the new config the mesh address may refuse for a moment
        # (seen once in a loaded full run); what must hold is that it serves again.
        try:
            return httpx.get(f"http://{mesh}/", timeout=5).text == "hello v1"
        except httpx.TransportError:
            return False

    wait_for(plain_text, timeout=10, message="ledger served in plain text again")


@pytest.mark.parametrize("path", ["/a(?=b)", "/x/(abc"])
def test_an_invalid_regex_is_refused_with_its_position(cloudland: Running, path: str) -> None:
    doc = {"apiVersion": "cloudland/v1", "kind": "Route", "metadata": {"name": "bad"},
           "spec": {"rules": [{"matches": [{"path": {"type": "RegularExpression",
                                                     "value": path}}],
                               "backends": [{"name": "web"}]}]}}
    r = httpx.post(cloudland.api + "/apis/cloudland/v1/namespaces/default/routes", json=doc,
                   timeout=5)
    assert r.status_code == 422
    body = r.json()
    assert "invalid regular expression at position" in body["message"]
    assert "spec.rules[0].matches[0].path" in (body.get("field") or "")


def test_spec_port_is_the_mesh_address_and_cannot_be_taken_twice(cloudland: Running,
                                                                 tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Client(cloudland.api) as client:
        client.apply([service("fixed", {**hello_spec(tmp_path, 1), "port": port})])
        wait_for(lambda: ready_count(client, "fixed", 1), timeout=30, message="fixed ready")
        assert status(client, "fixed")["address"] == f"127.0.0.1:{port}"
        try:
            client.apply([service("twin", {**hello_spec(tmp_path, 1), "port": port})])
        except Invalid as err:
            assert "default/fixed" in str(err) and f"spec.port {port}" in str(err)
        else:
            raise AssertionError("a second Service with the same spec.port was accepted")
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "hello v1",
             timeout=10, message="the Service on its own spec.port through Envoy")
