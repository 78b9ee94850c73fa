"""Rendering Routes and Services into an Envoy snapshot: golden files, determinism,
versions, consistency checks, missing backends and the published files."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest

from cloudland.mesh import Snapshot, render
from cloudland.mesh.render import parse_routes
from cloudland.mesh.snapshot import XdsFiles
from tests.mesh.conftest import check_golden, route, service

A_EPS = ["127.0.0.1:9001", "127.0.0.1:9002"]


def snap(routes: list[dict[str, Any]], services: list[dict[str, Any]],
         access_log: str | None = None, **settings: Any) -> Snapshot:
    return render(routes, services, gateway_port=8080, access_log=access_log,
                  **settings)


def golden_view(snapshot: Snapshot) -> dict[str, Any]:
    return {"version": snapshot.version, "listeners": snapshot.listeners,
            "clusters": snapshot.clusters, "routes": snapshot.routes,
            "endpoints": snapshot.endpoints}


def vhosts(snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    """The gateway's virtual hosts by host name."""
    (config,) = [c for c in snapshot.route_configs() if c["name"] == "gateway"]
    return {v["domains"][0]: v for v in config["virtual_hosts"]}


def ports(snapshot: Snapshot, cluster: str) -> list[int]:
    """The endpoint ports of a cluster's assignment ([] when it has none)."""
    (load,) = [e for e in snapshot.endpoints if e["cluster_name"] == cluster]
    return [e["endpoint"]["address"]["socket_address"]["port_value"]
            for group in load.get("endpoints", []) for e in group["lb_endpoints"]]


# ---- the cases, shared with the Envoy validation test ---------------------------------

def case_service_only() -> Snapshot:
    return snap([], [service("api", A_EPS)])


def case_host_prefix_header() -> Snapshot:
    rt = route("web", {"hosts": ["park.example"], "rules": [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/rides"},
                     "headers": [{"name": "X-Park", "value": "north"}]}],
        "backends": [{"name": "api"}]}]})
    return snap([rt], [service("api", A_EPS)])


def case_canary() -> Snapshot:
    rt = route("shop", {"rules": [{"backends": [{"name": "shop-v1", "weight": 90},
                                                {"name": "shop-v2", "weight": 10}]}]})
    return snap([rt], [service("shop-v1", ["127.0.0.1:9101"]),
                       service("shop-v2", ["127.0.0.1:9201"])])


def case_retries_timeout() -> Snapshot:
    rt = route("pay", {"hosts": ["pay.example"], "rules": [{
        "matches": [{"path": {"type": "Exact", "value": "/charge"}, "method": "POST",
                     "queryParams": [{"name": "mode", "value": "live"}]}],
        "backends": [{"name": "pay"}], "timeout": "1m30s",
        "retries": {"attempts": 3, "retryOn": ["5xx", "connect-failure"],
                    "perTryTimeout": "250ms"}}]})
    return snap([rt], [service("pay", ["127.0.0.1:9301"])], access_log="/tmp/access.log")


def case_regex() -> Snapshot:
    rt = route("rides", {"rules": [{
        "matches": [{"path": {"type": "RegularExpression", "value": "/rides/[0-9]+/wait"}}],
        "backends": [{"name": "board"}]}]})
    return snap([rt], [service("board", ["127.0.0.1:9401"])])


def case_policies() -> Snapshot:
    rt = route("shop", {"hosts": ["shop.example"], "rules": [{
        "backends": [{"name": "shop"}],
        "retries": {"attempts": 2, "backoff": {"base": "10ms", "max": "1s"},
                    "budget": {"percent": 25, "minConcurrency": 2}},
        "circuitBreaker": {"maxConnections": 10, "maxPendingRequests": 5, "maxRequests": 20},
        "outlierDetection": {"consecutive5xx": 3, "interval": "1s", "baseEjectionTime": "5s"},
        "rateLimit": {"requests": 50, "per": "1s", "burst": 100},
        "headers": {"request": {"set": {"x-env": "prod"}, "remove": ["X-Debug"]},
                    "response": {"add": {"x-served-by": "cloudland"}}},
        "rewrite": {"pathPrefix": "/v2", "host": "shop.internal"},
        "cors": {"allowOrigins": ["https://park.example", "*"], "allowHeaders": ["content-type"],
                 "maxAge": "10m", "allowCredentials": True}}]})
    return snap([rt], [service("shop", ["127.0.0.1:9501"])])


def case_mesh_strict() -> Snapshot:
    """Mesh addresses, a strict-mTLS Service, tracing to an OTLP collector."""
    plain = service("cart", ["127.0.0.1:9601"])
    plain["status"]["address"] = "127.0.0.1:7601"
    strict = service("pay", ["127.0.0.1:9602"])
    strict["spec"]["mtls"] = "strict"
    strict["status"].update(address="127.0.0.1:7602", inbound="127.0.0.1:7702")
    return snap([], [plain, strict], tls=True, otlp_endpoint="http://127.0.0.1:4318")


CASES = {"service_only": case_service_only, "host_prefix_header": case_host_prefix_header,
         "canary": case_canary, "retries_timeout": case_retries_timeout, "regex": case_regex,
         "policies": case_policies, "mesh_strict": case_mesh_strict}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    snapshot = CASES[name]()
    assert snapshot.problems() == []
    check_golden(name, golden_view(snapshot))


# ---- what the golden files say, spelled out ------------------------------------------

def test_service_without_route_gets_internal_host_and_cluster() -> None:
    snapshot = case_service_only()
    (cluster,) = snapshot.clusters
    assert cluster["name"] == "svc_default_api"
    assert cluster["lb_policy"] == "LEAST_REQUEST" and cluster["type"] == "EDS"
    assert ports(snapshot, "svc_default_api") == [9001, 9002]
    (vhost,) = vhosts(snapshot).values()
    assert vhost["domains"] == ["api.default.svc.cloudland.local"]
    assert vhost["routes"][0]["route"]["cluster"] == "svc_default_api"


def test_matches_become_envoy_matchers() -> None:
    match = vhosts(case_host_prefix_header())["park.example"]["routes"][0]["match"]
    assert match == {"path_separated_prefix": "/rides",
                     "headers": [{"name": "x-park", "string_match": {"exact": "north"}}]}
    match = vhosts(case_retries_timeout())["pay.example"]["routes"][0]["match"]
    assert match["path"] == "/charge"
    assert {"name": ":method", "string_match": {"exact": "POST"}} in match["headers"]
    assert match["query_parameters"] == [{"name": "mode", "string_match": {"exact": "live"}}]
    match = vhosts(case_regex())["*"]["routes"][0]["match"]
    assert match == {"safe_regex": {"regex": "/rides/[0-9]+/wait"}}


def test_canary_weights_and_retry_policy() -> None:
    action = vhosts(case_canary())["*"]["routes"][0]["route"]
    assert action["weighted_clusters"]["clusters"] == [
        {"name": "svc_default_shop-v1", "weight": 90},
        {"name": "svc_default_shop-v2", "weight": 10}]
    action = vhosts(case_retries_timeout())["pay.example"]["routes"][0]["route"]
    assert action["timeout"] == "90s"
    policy = action["retry_policy"]
    assert (policy["retry_on"], policy["num_retries"], policy["per_try_timeout"]) == (
        "5xx,connect-failure", 3, "0.25s")
    assert policy["retry_back_off"] == {"base_interval": "0.025s", "max_interval": "0.25s"}


def test_more_specific_matches_come_first() -> None:
    rt = route("site", {"rules": [
        {"matches": [{"path": {"value": "/"}}], "backends": [{"name": "a"}]},
        {"matches": [{"path": {"value": "/api"}}], "backends": [{"name": "a"}]},
        {"matches": [{"path": {"type": "Exact", "value": "/health"}}], "backends": [{"name": "a"}]},
        {"matches": [{"path": {"value": "/api"}, "method": "GET"}], "backends": [{"name": "a"}]},
    ]})
    routes = vhosts(snap([rt], [service("a", A_EPS)]))["*"]["routes"]
    assert [r["name"] for r in routes] == ["default/site/rule2/match0", "default/site/rule3/match0",
                                           "default/site/rule1/match0", "default/site/rule0/match0"]


# ---- determinism and versions ----------------------------------------------------------

def _park() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    routes = [route("web", {"hosts": ["park.example", "www.park.example"], "rules": [
                  {"matches": [{"path": {"value": "/rides"}}], "backends": [{"name": "rides"}]},
                  {"backends": [{"name": "web", "weight": 3}, {"name": "web-next"}]}]}),
              route("board", {"hosts": ["board.example"], "rules": [
                  {"backends": [{"name": "board", "namespace": "ops"}]}]})]
    services = [service("rides", ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]),
                service("web", ["127.0.0.1:9010"]), service("web-next", ["127.0.0.1:9011"]),
                service("board", ["127.0.0.1:9020"], namespace="ops")]
    return routes, services


def test_same_model_in_another_order_renders_the_same_version() -> None:
    routes, services = _park()
    first = snap(routes, services)
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(routes)
        rng.shuffle(services)
        for svc in services:
            rng.shuffle(svc["status"]["endpoints"])
        again = snap(routes, services)
        assert again.version == first.version
        assert again.listeners == first.listeners and again.clusters == first.clusters


def test_version_changes_when_an_endpoint_changes() -> None:
    routes, services = _park()
    before = snap(routes, services).version
    services[0]["status"]["endpoints"] = services[0]["status"]["endpoints"][:-1]
    after = snap(routes, services).version
    assert len(before) == len(after) == 16 and before != after


# ---- consistency ----------------------------------------------------------------------

def test_problems_names_both_routes_claiming_the_same_host_and_path() -> None:
    spec = {"hosts": ["park.example"],
            "rules": [{"matches": [{"path": {"value": "/rides"}}], "backends": [{"name": "a"}]}]}
    snapshot = snap([route("one", spec), route("two", spec, namespace="ops")],
                    [service("a", A_EPS)])
    (problem,) = snapshot.problems()
    assert "default/one" in problem and "ops/two" in problem
    assert "park.example" in problem and "/rides" in problem


def test_same_path_with_different_headers_is_not_a_conflict() -> None:
    base = {"hosts": ["park.example"], "rules": [{"backends": [{"name": "a"}]}]}
    canary = {"hosts": ["park.example"], "rules": [{
        "matches": [{"headers": [{"name": "x-canary", "value": "1"}]}],
        "backends": [{"name": "a"}]}]}
    assert snap([route("base", base), route("canary", canary)],
                [service("a", A_EPS)]).problems() == []


def test_every_cluster_a_route_names_exists() -> None:
    routes, services = _park()
    routes.append(route("lost", {"rules": [{"backends": [{"name": "nowhere"}]}]}))
    snapshot = snap(routes, services)
    assert snapshot.referenced_clusters() <= {c["name"] for c in snapshot.clusters}
    assert snapshot.problems() == []


def test_problems_catch_a_dangling_cluster_and_duplicate_names() -> None:
    good = case_canary()
    broken = dataclasses.replace(good, listeners=good.listeners + good.listeners,
                                 clusters=good.clusters[:1])
    problems = broken.problems()
    assert any("duplicate listener name 'gateway'" in p for p in problems)
    assert any("'svc_default_shop-v2', which does not exist" in p for p in problems)


# ---- missing backends -------------------------------------------------------------------

def test_missing_backends_render_empty_clusters() -> None:
    # Why such a Route is not ready is the Route controller's (tests/controllers).
    routes = [route("shop", {"rules": [{"backends": [
        {"name": "shop-v1"}, {"name": "gone"}, {"name": "cold"},
        {"kind": "Function", "name": "resize"}]}]}),
        route("fine", {"rules": [{"backends": [{"name": "shop-v1"}]}]})]
    services = [service("shop-v1", ["127.0.0.1:9101"]), service("cold", [])]
    snapshot = snap(routes, services)
    clusters = {c["name"]: c for c in snapshot.clusters}
    assert "svc_default_gone" in clusters and "fn_default_resize" in clusters
    assert ports(snapshot, "svc_default_gone") == ports(snapshot, "svc_default_cold") == []


def test_a_stored_route_that_no_longer_validates_is_reported_and_left_out() -> None:
    routes = [route("ok", {"rules": [{"backends": [{"name": "a"}]}]}),
              route("bad", {"rules": [{"backends": []}]})]
    parsed = parse_routes(routes)
    assert [name for _, name, _ in parsed.valid] == ["ok"]
    assert parsed.invalid == {"default/bad": "spec.rules.0.backends: List should have at "
                                             "least 1 item after validation, not 0"}
    services = [service("a", A_EPS)]
    assert snap(routes, services).version == render(
        parsed, services, gateway_port=8080).version == snap(routes[:1], services).version


def test_all_weights_zero_answers_503_without_a_cluster() -> None:
    rt = route("off", {"rules": [{"backends": [{"name": "a", "weight": 0}]}]})
    entry = vhosts(snap([rt], [service("a", A_EPS)]))["*"]["routes"][0]
    assert entry["direct_response"] == {"status": 503} and "route" not in entry


def test_a_route_on_an_internal_name_precedes_the_builtin_fallback() -> None:
    rt = route("api-v2", {"hosts": ["api.default.svc.cloudland.local"], "rules": [{
        "matches": [{"path": {"value": "/v2"}}], "backends": [{"name": "api-next"}]}]})
    snapshot = snap([rt], [service("api", A_EPS), service("api-next", ["127.0.0.1:9005"])])
    routes = vhosts(snapshot)["api.default.svc.cloudland.local"]["routes"]
    assert [r["name"] for r in routes] == ["default/api-v2/rule0/match0", "svc:default/api"]
    assert snapshot.problems() == []


# ---- publishing -------------------------------------------------------------------------

def test_to_files_writes_one_document_per_subscription(tmp_path: Path) -> None:
    snapshot = case_canary()
    written = snapshot.to_files(tmp_path)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["xds/cds.json", "xds/eds/svc_default_shop-v1.json",
                     "xds/eds/svc_default_shop-v2.json", "xds/lds.json",
                     "xds/rds/gateway.json"]  # and no temporary file left behind
    assert [d.path for d in written][-1] == "xds/lds.json"  # listeners last
    cds = json.loads((tmp_path / "xds/cds.json").read_text())
    assert {r["@type"] for r in cds["resources"]} == {
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"}
    lds = json.loads((tmp_path / "xds/lds.json").read_text())
    assert [r["name"] for r in lds["resources"]] == ["gateway"]
    # Each document is versioned by its own content: an endpoint change touches one file.
    services = [service("shop-v1", ["127.0.0.1:9101"]), service("shop-v2", ["127.0.0.1:9299"])]
    changed = snap([route("shop", {"rules": [{"backends": [
        {"name": "shop-v1", "weight": 90}, {"name": "shop-v2", "weight": 10}]}]})], services)
    assert [d.path for d in changed.to_files(tmp_path, only_changed=True)] == [
        "xds/eds/svc_default_shop-v2.json"]
    assert changed.to_files(tmp_path, only_changed=True) == []


def test_stale_files_are_removed(tmp_path: Path) -> None:
    case_canary().to_files(tmp_path)
    only = snap([], [service("shop-v1", ["127.0.0.1:9101"])])
    only.to_files(tmp_path)
    only.remove_stale_files(tmp_path)
    assert sorted(p.name for p in (tmp_path / "xds/eds").iterdir()) == ["svc_default_shop-v1.json"]


def test_xds_files_compare_with_what_they_wrote_and_else_with_the_disk(
        tmp_path: Path) -> None:
    canary = case_canary()
    files = XdsFiles(tmp_path)
    files.write(canary.documents())
    (tmp_path / "xds/lds.json").unlink()  # not read back: the memory says it is written
    assert files.changed(canary.documents()) == []
    # A new writer (CloudLand restarted) has no memory: it goes by the files on disk.
    assert [d.path for d in XdsFiles(tmp_path).changed(canary.documents())] == [
        "xds/lds.json"]
    services = [service("shop-v1", ["127.0.0.1:9101"]), service("shop-v2", ["127.0.0.1:9299"])]
    moved = snap([route("shop", {"rules": [{"backends": [
        {"name": "shop-v1", "weight": 90}, {"name": "shop-v2", "weight": 10}]}]})], services)
    assert [d.path for d in files.changed(moved.documents())] == [
        "xds/eds/svc_default_shop-v2.json"]


def test_bootstrap_points_at_the_files_and_keeps_admin_on_loopback() -> None:
    boot = Snapshot.bootstrap(9901)
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1",
                                                          "port_value": 9901}
    lds = boot["dynamic_resources"]["lds_config"]["path_config_source"]
    assert lds == {"path": "xds/lds.json", "watched_directory": {"path": "xds"}}
    assert boot["node"]["id"]
