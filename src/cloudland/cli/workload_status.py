"""What `describe` says about a Service's or a Job's status, in place of its raw YAML.

Each view takes the status keys it shows out of the status it is given (what
it leaves is still printed as YAML by `cli.describe`, so nothing is hidden)
and returns `Key: value` lines plus a table of the instances (a Job's attempts)
with their state, address, restarts and how they last ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloudland.cli.columns import NONE
from cloudland.cli.output import duration, span
from cloudland.model.kinds import internal_host

Object = dict[str, Any]
LOOPBACK = "127.0.0.1"  # instances listen here (as status.endpoints say)
ALIVE = ("Running", "Terminating")  # phases whose pid is still the instance's


def _age(inst: Object) -> str:
    started = inst.get("startedAt")
    return span(time.time() - started) if isinstance(started, int | float) else "-"


def last_exit(inst: Object) -> str:
    """'Error (exit 3)', 'SignalKill', or the instance's message (CrashLoopBackOff's why)."""
    ended = inst.get("lastExit") or {}
    code = ended.get("exitCode")
    text = str(ended.get("reason") or "")
    if isinstance(code, int) and text:
        text += f" (exit {code})"
    why = inst.get("message") or ended.get("message")
    return ": ".join(p for p in (text, str(why or "")) if p) or "-"


Cell = Callable[[Object], str]
COLUMNS: dict[str, Cell] = {
    "INSTANCE": lambda i: str(i.get("id", "")),
    "PHASE": lambda i: str(i.get("phase", "")),
    "READY": lambda i: "true" if i.get("ready") else "false",
    "RESTARTS": lambda i: str(i.get("restarts", 0)),
    "PID": lambda i: str(i.get("pid") or "-") if i.get("phase") in ALIVE else "-",
    "ADDRESS": lambda i: f"{LOOPBACK}:{i['port']}" if i.get("port") else "-",
    "REVISION": lambda i: str(i.get("revision") or "-"),
    "AGE": _age,
    "LAST EXIT": last_exit,
}
SERVICE_COLUMNS = tuple(COLUMNS)
JOB_COLUMNS = ("INSTANCE", "PHASE", "PID", "AGE", "LAST EXIT")


@dataclass
class StatusView:
    fields: list[tuple[str, str]] = field(default_factory=list)
    table_title: str = "Instances"
    headers: tuple[str, ...] = SERVICE_COLUMNS
    instances: list[Object] = field(default_factory=list)

    def rows(self) -> list[list[str]]:
        return [[COLUMNS[h](i) for h in self.headers] for i in self.instances]


def _counts(status: Object, *keys: str) -> list[int]:
    return [int(status.pop(k, 0) or 0) for k in keys]


def service_view(obj: Object, status: Object) -> StatusView:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    total, updated, ready, _ = _counts(status, "replicas", "updatedReplicas", "readyReplicas",
                                       "availableReplicas")
    view = StatusView([("Replicas", f"{spec.get('replicas', 1)} desired | {updated} updated | "
                                    f"{total} total | {ready} ready")])
    revision, history = status.pop("revision", None), status.pop("history", None) or []
    if revision is not None:
        view.fields.append(("Revision", f"{revision} (template {status.pop('templateHash', '?')}"
                                        f"; {len(history)} in history: cloudland rollout "
                                        f"history {meta['name']})"))
    address, inbound = status.pop("address", None), status.pop("inbound", None)
    if address:
        mesh = f"{internal_host(meta['namespace'], meta['name'])} -> {address}"
        view.fields.append(("Mesh Address", mesh + (f" (mTLS inbound {inbound})"
                                                    if inbound else "")))
    view.fields.append(("Endpoints", ", ".join(status.pop("endpoints", None) or []) or NONE))
    runtime = status.pop("runtime", None)
    if isinstance(runtime, dict):
        view.fields.append(("Runtime", _runtime(runtime)))
    view.instances = list(status.pop("instances", None) or [])
    return view


def _runtime(runtime: Object) -> str:
    cgroups = "cgroups" if runtime.get("cgroups") else "no cgroups"
    text = f"{runtime.get('driver')} (isolation: {runtime.get('isolation')}, {cgroups})"
    return text + (f"; {runtime['note']}" if runtime.get("note") else "")


def job_view(obj: Object, status: Object) -> StatusView:
    spec = obj.get("spec") or {}
    active, succeeded, failed, started = _counts(status, "active", "succeeded", "failed",
                                                 "attemptsStarted")
    start, end = status.pop("startTime", None), status.pop("completionTime", None)
    retry_at = status.pop("retryAt", None)
    view = StatusView([
        ("Completions", f"{succeeded}/{spec.get('completions', 1)}"),
        ("Attempt Statuses", f"{active} running / {succeeded} succeeded / {failed} failed "
                     f"({started} started, backoffLimit {spec.get('backoffLimit', 6)})"),
        ("Start Time", start or NONE)], table_title="Attempts", headers=JOB_COLUMNS)
    if end:  # kubectl's "Completed At" is for a success only
        failed_for_good = any(c.get("type") == "Failed" and c.get("status") == "True"
                              for c in (obj.get("status") or {}).get("conditions") or []
                              if isinstance(c, dict))
        view.fields.append(("Failed At" if failed_for_good else "Completed At", end))
    if start:
        view.fields.append(("Duration", duration(start, end)))
    if isinstance(retry_at, int | float) and not end and retry_at > time.time():
        view.fields.append(("Next Attempt", f"in {span(retry_at - time.time())}"))
    view.instances = list(status.pop("attempts", None) or [])
    return view


VIEWS: dict[str, Callable[[Object, Object], StatusView]] = {
    "Service": service_view, "Job": job_view}


def status_view(obj: Object, status: Object) -> StatusView | None:
    """The view of `obj`'s kind, taking what it shows out of `status`; None for other kinds."""
    view = VIEWS.get(obj.get("kind", ""))
    return None if view is None else view(obj, status)

