"""The gateway end to end: Routes and Services become Envoy config, traffic flows."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from cloudland.client import Client
from tests.conftest import Running, start_cloudland, wait_for
from tests.test_services import hello_spec, ready_count, service


def route(name: str, host: str, backend: str) -> dict:  # type: ignore[type-arg]
    return {"apiVersion": "cloudland/v1", "kind": "Route", "metadata": {"name": name},
            "spec": {"hosts": [host], "rules": [{"backends": [{"name": backend}]}]}}


def test_routes_and_internal_names_reach_the_instances(cloudland: Running,
                                                       tmp_path: Path) -> None:
    gateway = cloudland.state["gateway"]
    info = cloudland.cli("status", "-o", "json").json()
    assert info["addresses"]["gateway"] == gateway and info["parts"]["gateway"]["healthy"]
    with Client(cloudland.api) as client:
        client.apply([service("hello", hello_spec(tmp_path, 2)),
                      route("front", "park.localhost", "hello"),
                      route("nowhere", "void.localhost", "missing")])
        wait_for(lambda: ready_count(client, "hello", 2), timeout=30, message="hello ready")

    def answer(host: str) -> tuple[int, str]:
        r = httpx.get(gateway + "/", headers={"Host": host}, timeout=5)
        return r.status_code, r.text

    wait_for(lambda: answer("park.localhost") == (200, "hello v1"), timeout=10,
             message="the Route to serve through Envoy")
    assert answer("hello.default.svc.cloudland.local") == (200, "hello v1")
    assert answer("void.localhost")[0] == 503  # a Route to a missing backend: no upstream
    assert answer("unknown.localhost")[0] == 404


def test_a_busy_gateway_port_is_reported_not_fatal(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        running = start_cloudland(tmp_path / "home", "--gateway-port", str(port))
        try:
            info = running.cli("status", "-o", "json").json()
            assert info["health"] == "degraded"
            assert "gateway" not in info["addresses"]
            assert f"port {port} is already in use" in info["parts"]["gateway"]["error"]
            assert info["parts"]["api"]["healthy"]  # the rest of CloudLand runs on
        finally:
            running.stop()
