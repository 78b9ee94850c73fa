"""Pure rendering: Routes and Services (API JSON, with status) -> one Envoy `Snapshot`.

This module owns how the model maps onto Envoy's v3 API: one HTTP gateway listener
with the route table inline, one virtual host per host name, one static cluster per
backend (`svc.<namespace>.<name>`) whose endpoints are the Service's ready
`status.endpoints`, and a built-in host `NAME.NAMESPACE.svc.cloudland.local` for
every Service. It reads nothing but its arguments, so the same model always renders
the same snapshot (and version).

Route precedence within a host follows Gateway API: exact paths first, then regular
expressions, then prefixes longest first; ties go to the match with a method, then
more headers, then more query conditions, then to the Route's namespace/name.
"""

from __future__ import annotations

from typing import Any

from cloudland.mesh.snapshot import HCM_TYPE, Snapshot
from cloudland.model.kinds import BackendRef, RouteMatch, RouteRule, RouteSpec
from cloudland.model.meta import DEFAULT_NAMESPACE, parse_duration

Json = dict[str, Any]

INTERNAL_DOMAIN = "svc.cloudland.local"
LISTENER_NAME = "gateway"
CONNECT_TIMEOUT = "1s"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

# One JSON object per request: what CloudLand's log collector and `cloudland routes` read.
ACCESS_LOG_FORMAT: dict[str, str] = {
    "time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "authority": "%REQ(:AUTHORITY)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "route": "%ROUTE_NAME%",
    "cluster": "%UPSTREAM_CLUSTER%",
    "upstream": "%UPSTREAM_HOST%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "traceparent": "%REQ(TRACEPARENT)%",
    "user_agent": "%REQ(USER-AGENT)%",
}


def _key(obj: Json) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or DEFAULT_NAMESPACE, meta["name"]


def cluster_name(kind: str, namespace: str, name: str) -> str:
    """The Envoy cluster of a backend: 'svc.default.web', 'fn.default.resize'."""
    return f"{'svc' if kind == 'Service' else 'fn'}.{namespace}.{name}"


def internal_host(namespace: str, name: str) -> str:
    """The stable in-mesh name of a Service: 'web.default.svc.cloudland.local'."""
    return f"{name}.{namespace}.{INTERNAL_DOMAIN}"


def duration(text: str) -> str:
    """A CloudLand duration ('1m30s', '250ms') as a protobuf JSON Duration ('90s', '0.25s')."""
    seconds = f"{parse_duration(text):.9f}".rstrip("0").rstrip(".")
    return f"{seconds}s"


def _backend(route_ns: str, ref: BackendRef) -> tuple[str, str, str]:
    return ref.kind, ref.namespace or route_ns, ref.name


def _endpoint(address: str) -> Json:
    host, _, port = address.rpartition(":")
    return {"endpoint": {"address": {"socket_address": {
        "address": host.strip("[]"), "port_value": int(port)}}}}


def _cluster(name: str, endpoints: list[str]) -> Json:
    """A static cluster; with no endpoints Envoy answers 503 (no healthy upstream)."""
    load: Json = {"cluster_name": name}
    if endpoints:
        load["endpoints"] = [{"lb_endpoints": [_endpoint(a) for a in sorted(endpoints)]}]
    return {"name": name, "type": "STATIC", "connect_timeout": CONNECT_TIMEOUT,
            "lb_policy": "LEAST_REQUEST", "load_assignment": load}


def _string_match(kind: str, value: str) -> Json:
    return {"safe_regex": {"regex": value}} if kind == "RegularExpression" else {"exact": value}


def _match(m: RouteMatch) -> Json:
    """A CloudLand RouteMatch as an Envoy RouteMatch."""
    path = m.path
    out: Json
    if path.type == "Exact":
        out = {"path": path.value}
    elif path.type == "RegularExpression":
        out = {"safe_regex": {"regex": path.value}}
    else:
        out = {"prefix": path.value}
    headers = [{"name": ":method", "string_match": {"exact": m.method}}] if m.method else []
    headers += [{"name": h.name.lower(), "string_match": _string_match(h.type, h.value)}
                for h in sorted(m.headers, key=lambda h: (h.name.lower(), h.value))]
    if headers:
        out["headers"] = headers
    if m.queryParams:
        out["query_parameters"] = [
            {"name": q.name, "string_match": _string_match(q.type, q.value)}
            for q in sorted(m.queryParams, key=lambda q: (q.name, q.value))]
    return out


def _action(route_ns: str, rule: RouteRule) -> Json:
    """Where a rule sends traffic: a RouteAction, or a fixed 503 if every weight is 0."""
    weighted = sorted((cluster_name(*_backend(route_ns, b)), b.weight)
                      for b in rule.backends if b.weight > 0)
    if not weighted:
        return {"direct_response": {"status": 503}}
    action: Json
    if len(weighted) == 1:
        action = {"cluster": weighted[0][0]}
    else:
        action = {"weighted_clusters": {"clusters": [{"name": n, "weight": w}
                                                     for n, w in weighted]}}
    if rule.timeout is not None:
        action["timeout"] = duration(rule.timeout)
    if rule.retries is not None and rule.retries.attempts > 0:
        retry: Json = {"retry_on": ",".join(rule.retries.on),
                       "num_retries": rule.retries.attempts}
        if rule.retries.perTryTimeout is not None:
            retry["per_try_timeout"] = duration(rule.retries.perTryTimeout)
        action["retry_policy"] = retry
    return {"route": action}


def _precedence(m: RouteMatch) -> tuple[int, int, int, int, int]:
    rank = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}[m.path.type]
    length = -len(m.path.value) if m.path.type == "PathPrefix" else 0
    return rank, length, 0 if m.method else 1, -len(m.headers), -len(m.queryParams)


def _hosts(spec: RouteSpec) -> list[str]:
    return sorted({h.lower() for h in spec.hosts}) or ["*"]


def _route_entries(routes: list[Json]) -> dict[str, list[tuple[Any, Json]]]:
    """Host -> (sort key, Envoy route) for every match of every rule of every Route."""
    by_host: dict[str, list[tuple[Any, Json]]] = {}
    for obj in routes:
        ns, name = _key(obj)
        spec = RouteSpec.model_validate(obj["spec"])
        for r, rule in enumerate(spec.rules):
            action = _action(ns, rule)
            for i, m in enumerate(rule.matches):
                entry = {"name": f"{ns}/{name}/rule{r}/match{i}", "match": _match(m), **action}
                for host in _hosts(spec):
                    by_host.setdefault(host, []).append(
                        ((_precedence(m), ns, name, r, i), entry))
    return by_host


def _virtual_hosts(routes: list[Json], services: list[Json]) -> list[Json]:
    by_host = _route_entries(routes)
    fallbacks: dict[str, Json] = {}
    for svc in services:
        ns, name = _key(svc)
        fallbacks[internal_host(ns, name)] = {
            "name": f"svc:{ns}/{name}", "match": {"prefix": "/"},
            "route": {"cluster": cluster_name("Service", ns, name)}}
    vhosts = []
    for host in sorted(set(by_host) | set(fallbacks)):
        entries = [e for _, e in sorted(by_host.get(host, []), key=lambda pair: pair[0])]
        if host in fallbacks:
            entries.append(fallbacks[host])  # a Route on the internal name takes precedence
        vhosts.append({"name": host, "domains": [host], "routes": entries})
    return vhosts


def _access_log(path: str) -> list[Json]:
    return [{"name": "envoy.access_loggers.file",
             "typed_config": {"@type": FILE_LOG_TYPE, "path": path,
                              "log_format": {"json_format": ACCESS_LOG_FORMAT}}}]


def _listener(port: int, vhosts: list[Json], access_log: str | None) -> Json:
    hcm: Json = {
        "@type": HCM_TYPE,
        "stat_prefix": LISTENER_NAME,
        "codec_type": "AUTO",
        # Hosts match with or without a port (web.default.svc.cloudland.local:8080).
        "strip_any_host_port": True,
        "route_config": {"name": LISTENER_NAME, "virtual_hosts": vhosts},
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": ROUTER_TYPE}}],
    }
    if access_log:
        hcm["access_log"] = _access_log(access_log)
    return {
        "name": LISTENER_NAME,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }


def _service_endpoints(services: list[Json]) -> dict[tuple[str, str], list[str]]:
    return {_key(s): list((s.get("status") or {}).get("endpoints") or []) for s in services}


def render(routes: list[Json], services: list[Json], *, gateway_port: int, admin_port: int,
           access_log: str | None) -> Snapshot:
    """The whole Envoy config for these Routes and Services (order does not matter).

    `admin_port` is not part of the dynamic config (it lives in the bootstrap, see
    `Snapshot.bootstrap`); it is accepted so callers pass one set of gateway settings.
    """
    del admin_port
    endpoints = _service_endpoints(services)
    clusters = {cluster_name("Service", ns, name): _cluster(cluster_name("Service", ns, name),
                                                            eps)
                for (ns, name), eps in endpoints.items()}
    for obj in routes:
        ns, _ = _key(obj)
        for rule in RouteSpec.model_validate(obj["spec"]).rules:
            for ref in rule.backends:
                kind, bns, bname = _backend(ns, ref)
                name = cluster_name(kind, bns, bname)
                clusters.setdefault(name, _cluster(name, []))
    listener = _listener(gateway_port, _virtual_hosts(routes, services), access_log)
    return Snapshot(listeners=[listener], clusters=[clusters[n] for n in sorted(clusters)])


def missing_backends(routes: list[Json], services: list[Json]) -> dict[str, list[str]]:
    """'namespace/route' -> why some of its backends cannot serve; Routes that are fine are absent.

    The Route controller turns these into a NotReady condition; the route itself is
    still rendered (its cluster has no endpoints, so Envoy answers 503).
    """
    endpoints = _service_endpoints(services)
    found: dict[str, list[str]] = {}
    for obj in sorted(routes, key=_key):
        ns, name = _key(obj)
        reasons: list[str] = []
        for rule in RouteSpec.model_validate(obj["spec"]).rules:
            for ref in rule.backends:
                kind, bns, bname = _backend(ns, ref)
                if kind != "Service":
                    reason = f"{kind} {bns}/{bname}: Function backends are not served yet"
                elif (bns, bname) not in endpoints:
                    reason = f"Service {bns}/{bname} does not exist"
                elif not endpoints[(bns, bname)]:
                    reason = f"Service {bns}/{bname} has no ready endpoints"
                else:
                    continue
                if reason not in reasons:
                    reasons.append(reason)
        if reasons:
            found[f"{ns}/{name}"] = reasons
    return found
