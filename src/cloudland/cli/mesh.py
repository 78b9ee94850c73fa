"""`cloudland routes` and `cloudland mesh status`: what the gateway and the mesh do now.

Both read the API only: Routes and Services (whose status holds ready endpoints and
mesh addresses) and the gateway's health from `/healthz`. A backend's endpoint
count is live (ready instances right now); a Route's READY column is its
controller's verdict (do its backends exist and can the gateway serve them).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.text import Text

from cloudland.cli.columns import say
from cloudland.cli.options import HomeOption, NamespaceOption, OutputOption, client_for
from cloudland.cli.output import Format, console, dump, table
from cloudland.cli.workloads import seconds, stream_records
from cloudland.model.kinds import internal_host
from cloudland.model.meta import DEFAULT_NAMESPACE

Object = dict[str, Any]
PANEL = "Gateway and mesh"
PREFIX = "/apis/cloudland/v1"

mesh_app = typer.Typer(help="The service mesh: Envoy, mesh addresses, mTLS.",
                       no_args_is_help=True)
AllNamespaces = Annotated[bool, typer.Option("--all-namespaces", "-A",
                                             help="Across all namespaces.")]


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=PANEL)(routes)
    app.add_typer(mesh_app, name="mesh", rich_help_panel=PANEL)


def _key(obj: Object) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def _ready(obj: Object) -> tuple[str, str]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status")), str(cond.get("reason") or "")
    return "Unknown", ""


def _match_text(match: Object) -> str:
    path = match.get("path") or {}
    kind = {"Exact": "=", "RegularExpression": "~"}.get(path.get("type", ""), "")
    method = f"{match['method']} " if match.get("method") else ""
    text = f"{method}{kind}{path.get('value', '/')}"
    extra = len(match.get("headers") or []) + len(match.get("queryParams") or [])
    return text + (f" +{extra}" if extra else "")


def route_rows(routes: list[Object], services: list[Object]) -> list[Object]:
    """One entry per Route rule: hosts, matches, backends with weights and endpoints."""
    endpoints = {_key(s): len((s.get("status") or {}).get("endpoints") or []) for s in services}
    wanted = {_key(s): (s.get("spec") or {}).get("replicas", 1) for s in services}
    rows = []
    for route in sorted(routes, key=_key):
        ns, name = _key(route)
        ready, reason = _ready(route)
        for index, rule in enumerate(route["spec"]["rules"]):
            backends = []
            for ref in rule["backends"]:
                target = (ref.get("namespace") or ns, ref["name"])
                known = ref.get("kind", "Service") == "Service" and target in endpoints
                backends.append({
                    "kind": ref.get("kind", "Service"), "namespace": target[0],
                    "name": target[1], "weight": ref.get("weight", 1),
                    "readyEndpoints": endpoints.get(target, 0) if known else None,
                    "replicas": wanted.get(target) if known else None})
            rows.append({"namespace": ns, "name": name, "rule": index,
                         "hosts": route["spec"].get("hosts") or ["*"],
                         "matches": [_match_text(m) for m in rule.get("matches") or [{}]],
                         "backends": backends, "ready": ready, "reason": reason})
    return rows


def _backend_text(backends: list[Object]) -> Text:
    total = sum(b["weight"] for b in backends) or 1
    text = Text()
    for i, b in enumerate(backends):
        if i:
            text.append(", ")
        share = f" {100 * b['weight'] / total:.0f}%" if len(backends) > 1 else ""
        text.append(f"{b['name']}{share} ")
        if b["readyEndpoints"] is None:
            text.append("(missing)", style="red")
        else:
            ok = b["readyEndpoints"] > 0
            text.append(f"({b['readyEndpoints']}/{b['replicas']} ready)",
                        style="green" if ok else "red")
    return text


def routes(
    namespace: NamespaceOption = None,
    all_namespaces: AllNamespaces = False,
    output: OutputOption = Format.table,
    home: HomeOption = None,
) -> None:
    """Routes with their hosts, matches, backends, weights and endpoint health."""
    ns = None if all_namespaces else (namespace or DEFAULT_NAMESPACE)
    with client_for(home) as client:
        rows = route_rows(client.list("Route", ns)["items"], client.list("Service")["items"])
        gateway = (client.health().get("parts") or {}).get("gateway") or {}
    if output in (Format.json, Format.yaml):
        dump({"gateway": gateway.get("url"), "routes": rows}, output)
        return
    if not rows:
        say(f"No Routes in {'namespace ' + ns if ns else 'any namespace'}.", stderr=True)
        return
    lead = ["NAMESPACE"] * (ns is None)
    table([*lead, "ROUTE", "HOSTS", "MATCH", "BACKENDS", "READY"],
          [[*[r["namespace"]] * (ns is None), f"{r['name']}#{r['rule']}", ", ".join(r["hosts"]),
            ", ".join(r["matches"]), _backend_text(r["backends"]),
            Text(r["ready"] if not r["reason"] else f"{r['ready']} ({r['reason']})",
                 style="green" if r["ready"] == "True" else "yellow")]
           for r in rows])
    if gateway.get("url"):
        say(f"gateway: {gateway['url']}", stderr=True)


def service_rows(services: list[Object]) -> list[Object]:
    rows = []
    for svc in sorted(services, key=_key):
        ns, name = _key(svc)
        status = svc.get("status") or {}
        rows.append({"namespace": ns, "name": name, "host": internal_host(ns, name),
                     "address": status.get("address"),
                     "mtls": (svc.get("spec") or {}).get("mtls", "permissive"),
                     "inbound": status.get("inbound"),
                     "readyEndpoints": len(status.get("endpoints") or [])})
    return rows


def access_line(record: Object) -> str:
    """One access-log record as a line: time, status, method, host, path, duration, upstream."""
    try:
        entry = json.loads(record.get("line") or "")
    except ValueError:
        return str(record.get("line", ""))
    if not isinstance(entry, dict):
        return str(record.get("line", ""))
    flags = entry.get("flags")
    return " ".join(str(part) for part in (
        entry.get("time"), entry.get("status"), entry.get("method"), entry.get("authority"),
        entry.get("path"), f"{entry.get('duration_ms')}ms", entry.get("upstream") or "-",
        *([flags] if flags not in (None, "-") else [])))


@mesh_app.command("logs")
def mesh_logs(
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="Keep printing new requests (Ctrl-C stops).")
                      ] = False,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only requests in this window, e.g. 5m.", show_default=False)] = None,
    tail: Annotated[int | None, typer.Option("--tail", min=0, help="Only the last N requests.",
                                             show_default=False)] = None,
    raw: Annotated[bool, typer.Option("--json", help="Print Envoy's JSON records as they are.")
                   ] = False,
    home: HomeOption = None,
) -> None:
    """The gateway's access log: one line per request through Envoy (gateway and mesh)."""
    wanted = {"follow": "true" if follow else None, "tail": tail, "stream": "stdout",
              "since": None if since is None else seconds(since, "--since")}
    params = {k: str(v) for k, v in wanted.items() if v is not None}
    printed = 0
    with client_for(home) as client:
        try:
            for record in stream_records(client, f"{PREFIX}/gateway/log", params):
                sys.stdout.write((str(record.get("line", "")) if raw else access_line(record))
                                 + "\n")
                printed += 1
                if follow:
                    sys.stdout.flush()
        except KeyboardInterrupt:
            return
    sys.stdout.flush()
    if not printed:
        say("No requests through the gateway yet.", stderr=True)


@mesh_app.command("status")
def mesh_status(
    output: OutputOption = Format.table,
    home: HomeOption = None,
) -> None:
    """Envoy's health and config version, and every Service's mesh address and mTLS mode."""
    with client_for(home) as client:
        gateway = (client.health().get("parts") or {}).get("gateway") or {}
        rows = service_rows(client.list("Service")["items"])
    if output in (Format.json, Format.yaml):
        dump({"gateway": gateway, "services": rows}, output)
        return
    healthy = gateway.get("healthy")
    state = Text("healthy", style="green") if healthy else Text("unhealthy", style="red")
    console.print(Text.assemble("Envoy ", state, f"  {gateway.get('version') or ''}".rstrip()))
    for label, key in (("gateway", "url"), ("pid", "pid"), ("config", "config"),
                       ("restarts", "restarts"), ("error", "error")):
        if gateway.get(key) not in (None, ""):
            say(f"  {label:<9}{gateway[key]}")
    if not rows:
        say("No Services in the mesh.", stderr=True)
        return
    table(["NAMESPACE", "SERVICE", "MESH ADDRESS", "MTLS", "INBOUND", "READY"],
          [[r["namespace"], r["name"], r["address"] or "-",
            Text(r["mtls"], style="bold" if r["mtls"] == "strict" else ""),
            r["inbound"] or "-", r["readyEndpoints"]] for r in rows])
