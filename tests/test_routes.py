"""Routes through a real CloudLand: admission of conflicts, the Route controller's
verdict, `cloudland routes`, `cloudland mesh status`, and Envoy's metrics on /metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cloudland.client import Client
from cloudland.errors import Invalid
from tests.conftest import Running, wait_for
from tests.test_services import hello_spec, ready_count, service


def route(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "cloudland/v1", "kind": "Route", "metadata": {"name": name},
            "spec": spec}


def assert_refused_together(cloudland: Running, files: Path, command: str, first: str,
                            second: str) -> None:
    """Two Routes for the same host in one `apply`/`plan`: both named, nothing stored."""
    files.mkdir()
    spec = {"hosts": [f"{first}.localhost"], "rules": [{"backends": [{"name": "hello"}]}]}
    (files / "a.yaml").write_text(yaml.safe_dump(route(first, spec)))
    (files / "b.yaml").write_text(yaml.safe_dump(route(second, spec)))
    result = cloudland.cli(command, "-f", str(files))
    assert result.exit_code == 1
    assert f"default/{first}" in result.output and f"default/{second}" in result.output
    with Client(cloudland.api) as client:
        names = {o["metadata"]["name"] for o in client.list("Route", "default")["items"]}
    assert not names & {first, second}


def ready(client: Client, name: str) -> tuple[str, str, str]:
    obj = client.get("Route", "default", name)
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return cond["status"], cond["reason"], cond.get("message", "")
    return "", "", ""


SHOP = {"hosts": ["shop.localhost"], "rules": [{
    "matches": [{"path": {"value": "/api"}}], "backends": [{"name": "hello"}]}]}


def test_conflicting_routes_are_refused_naming_both(cloudland: Running, tmp_path: Path) -> None:
    with Client(cloudland.api) as client:
        client.apply([route("shop", SHOP)])
        try:
            client.apply([route("shop-copy", SHOP)])
        except Invalid as err:
            message = str(err)
        else:
            raise AssertionError("a second Route with the same host and path was accepted")
        assert "default/shop-copy" in message and "default/shop" in message
        assert "shop.localhost" in message and "'/api'" in message
        assert client.list("Route", "default")["items"][0]["metadata"]["name"] == "shop"
        # Same path with a header condition is a different match: accepted.
        canary = {**SHOP, "rules": [{**SHOP["rules"][0], "matches": [{
            "path": {"value": "/api"}, "headers": [{"name": "x-canary", "value": "1"}]}]}]}
        client.apply([route("shop-canary", canary)])
        # The Route may change itself (it does not conflict with its old self).
        client.apply([route("shop", {**SHOP, "rules": [{**SHOP["rules"][0], "timeout": "5s"}]})])

    # Through the CLI, two conflicting Routes in one apply: nothing is applied.
    assert_refused_together(cloudland, tmp_path / "routes", "apply", "first", "second")


def test_routes_report_backends_and_serve_metrics(cloudland: Running, tmp_path: Path) -> None:
    gateway = cloudland.state["gateway"]
    with Client(cloudland.api) as client:
        client.apply([route("front", {"hosts": ["front.localhost"], "rules": [{
            "backends": [{"name": "hello", "weight": 3}, {"name": "later"}]}]})])
        wait_for(lambda: ready(client, "front")[1] == "BackendNotFound", timeout=10,
                 message="the Route to say its backends are missing")
        assert "Service default/later does not exist" in ready(client, "front")[2]
        # Accepted and routed, with nothing behind it (once the gateway has it: 404 before).
        wait_for(lambda: httpx.get(gateway + "/", headers={"Host": "front.localhost"},
                                   timeout=5).status_code == 503, timeout=10,
                 message="the gateway to answer 503 for the Route's missing backend")

        client.apply([service("hello", hello_spec(tmp_path, 2)),
                      service("later", hello_spec(tmp_path, 1, version="v2"))])
        wait_for(lambda: ready(client, "front")[0] == "True", timeout=10,
                 message="the Route to be Ready once its backends exist")
        wait_for(lambda: ready_count(client, "hello", 2) and ready_count(client, "later", 1),
                 timeout=30, message="backends ready")

    def answer() -> str:
        return httpx.get(gateway + "/", headers={"Host": "front.localhost"}, timeout=5).text

    wait_for(lambda: answer() in ("hello v1", "hello v2"), timeout=10, message="traffic flows")
    for _ in range(20):
        assert answer() in ("hello v1", "hello v2")

    listed = cloudland.cli("routes", "-o", "json").json()
    assert listed["gateway"] == gateway
    (row,) = listed["routes"]
    assert row["name"] == "front" and row["hosts"] == ["front.localhost"] and row["ready"] == "True"
    assert [(b["name"], b["weight"], b["readyEndpoints"]) for b in row["backends"]] == [
        ("hello", 3, 2), ("later", 1, 1)]
    text = cloudland.cli("routes").stdout
    assert "front#0" in text and "hello 75% (2/2 ready)" in text

    # Every request is in the gateway's access log (Envoy flushes it about once a second).
    def logged() -> list[str]:
        out = cloudland.cli("mesh", "logs", "--tail", "50").stdout
        return [line for line in out.splitlines() if " 200 GET front.localhost / " in line]

    assert len(wait_for(lambda: len(logged()) >= 21 and logged(), timeout=10,
                        message="requests in the access log")) >= 21
    record = json.loads(cloudland.cli("mesh", "logs", "--tail", "1", "--json").stdout)
    assert record["route"] == "default/front/rule0/match0" and record["status"] == 200

    mesh = cloudland.cli("mesh", "status", "-o", "json").json()
    assert mesh["gateway"]["healthy"] and mesh["gateway"]["config"]
    addresses = {s["name"]: s for s in mesh["services"]}
    assert addresses["hello"]["address"].startswith("127.0.0.1:")
    assert addresses["hello"]["mtls"] == "permissive"
    assert "Envoy healthy" in cloudland.cli("mesh", "status").stdout

    # Envoy's per-route and per-Service series, in Prometheus text, on CloudLand's /metrics;
    # latency histograms appear at Envoy's next stats flush (every second).
    def families() -> dict[str, Any]:
        text = httpx.get(cloudland.api + "/metrics", timeout=5).text
        return {f.name: f for f in text_string_to_metric_families(text)}

    found = wait_for(lambda: (f := families()).get("envoy_cluster_upstream_rq_time") and f,
                     timeout=10, message="latency histograms on /metrics")
    per_route = [s for s in found["envoy_vhost_route_upstream_rq"].samples
                 if s.labels.get("envoy_route") == "default_front_r0"]
    assert sum(s.value for s in per_route) >= 21
    per_service = {s.labels["envoy_cluster_name"]
                   for s in found["envoy_cluster_upstream_rq_time"].samples}
    assert {"svc_default_hello", "svc_default_later"} <= per_service
    kinds = {s.labels["kind"]: s.value for s in found["cloudland_resources"].samples}
    assert kinds["Route"] == 1 and kinds["Service"] == 2


def test_a_route_renamed_in_a_pruning_apply_does_not_conflict_with_its_old_self(
        cloudland: Running) -> None:
    with Client(cloudland.api) as client:
        client.apply([route("old-name", SHOP)], stack="shop")
        client.apply([route("new-name", SHOP)], stack="shop", prune=True)
        names = {o["metadata"]["name"] for o in client.list("Route", "default")["items"]}
    assert names == {"new-name"}


def test_plan_sees_a_conflict_inside_one_batch(cloudland: Running, tmp_path: Path) -> None:
    assert_refused_together(cloudland, tmp_path / "twins", "plan", "twin-a", "twin-b")
