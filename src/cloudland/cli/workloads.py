"""`logs`, `top`, `scale` and `rollout status|history|undo`: working with running Services
(and reading a Job's logs).

Through `cloudland.client` only.  Logs and usage are the workload's `/log` and
`/top` sub-resources (served by `api/workloads.py`); `scale` and `rollout undo`
write the Service itself; `rollout status` watches it.  Errors are raised as
`CloudLandError` and printed by the app's group.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import httpx
import typer
from rich.text import Text

from cloudland.cli.columns import say
from cloudland.cli.options import HomeOption, NamespaceOption, OutputOption, client_for
from cloudland.cli.output import Format, age, console, dump, table
from cloudland.client import Client
from cloudland.errors import BadRequest, CloudLandError, NotFound, Unavailable
from cloudland.model.kinds import KINDS, kind_info
from cloudland.model.meta import DEFAULT_NAMESPACE, check_duration, parse_duration

Object = dict[str, Any]
PANEL = "Workloads"
PREFIX = "/apis/cloudland/v1"
# Spec fields outside the pod-like template (as controllers/rollout.py's NOT_TEMPLATE):
# scaling and rollout settings, which an undo keeps.
NOT_TEMPLATE = ("replicas", "strategy", "autoscale")
PALETTE = ("cyan", "green", "magenta", "yellow", "blue", "bright_cyan", "bright_green",
           "bright_magenta", "bright_yellow", "bright_blue")

rollout_app = typer.Typer(help="Follow, list and undo rollouts of a Service.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    for command in (logs, top, scale):
        app.command(rich_help_panel=PANEL)(command)
    app.add_typer(rollout_app, name="rollout", rich_help_panel=PANEL)


# ---- naming ----------------------------------------------------------------------

# How each workload kind is named on the command line besides a bare NAME.
FORMS = {"Service": "svc/NAME", "Job": "job/NAME"}


def workload_ref(ref: str, kinds: tuple[str, ...] = ("Service",)) -> tuple[str | None, str]:
    """'web' -> (None, 'web'); 'svc/web' -> ('Service', 'web'); 'job/x' -> ('Job', 'x')
    when Job is one of `kinds`."""
    kind, sep, name = ref.partition("/")
    if not sep:
        return None, ref
    info = kind_info(kind)
    if info is None or info.kind not in kinds or not name or "/" in name:
        forms = ", ".join(["NAME", *(FORMS[k] for k in kinds)])
        raise BadRequest(f"'{ref}' does not name a {' or a '.join(kinds)}; use {forms}",
                         field=kinds[0].upper() if len(kinds) == 1 else "WORKLOAD")
    return info.kind, name


def service_name(ref: str) -> str:
    """'web', 'svc/web' or 'service/web' -> 'web'."""
    return workload_ref(ref)[1]


def _sub(namespace: str, name: str, what: str, kind: str = "Service") -> str:
    return f"{PREFIX}/namespaces/{namespace}/{KINDS[kind].plural}/{name}/{what}"


ServiceArg = Annotated[str, typer.Argument(
    help="The Service: NAME, svc/NAME or service/NAME.", show_default=False)]


# ---- logs ------------------------------------------------------------------------


class Stream(StrEnum):
    all = "all"
    stdout = "stdout"
    stderr = "stderr"


def logs(
    workload: Annotated[str, typer.Argument(
        help="svc/NAME or job/NAME; a bare NAME is the Service, or the Job when no "
             "Service has that name.", show_default=False)],
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing new lines (until Ctrl-C, or the Job's end).")]
    = False,
    instance: Annotated[int | None, typer.Option(
        "--instance", "-i", min=0,
        help="Only the instance with this index (0, 1, ...; a Job's attempt number).",
        show_default=False)] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only lines written in this window, e.g. 5m or 1h.",
        show_default=False)] = None,
    previous: Annotated[bool, typer.Option(
        "--previous", "-p", help="The run before the current one (after a restart).")] = False,
    tail: Annotated[int | None, typer.Option(
        "--tail", min=0, help="Only the last N lines of each instance.",
        show_default=False)] = None,
    stream: Annotated[Stream, typer.Option("--stream", help="stdout, stderr or all.")]
    = Stream.all,
    prefix: Annotated[bool, typer.Option(
        "--prefix/--no-prefix", help="Start each line with its instance.")] = True,
    timestamps: Annotated[bool, typer.Option(
        "--timestamps", help="Start each line with when it was written (UTC).")] = False,
    namespace: NamespaceOption = None,
    home: HomeOption = None,
) -> None:
    """Print the logs of a Service's or a Job's instances, each line prefixed with its
    instance; -f follows until Ctrl-C, or until the Job has finished."""
    ref = workload_ref(workload, tuple(FORMS))  # a bad one fails before connecting
    wanted = {"stream": stream.value, "follow": follow, "previous": previous,
              "instance": instance, "tail": tail,
              "since": None if since is None else seconds(since, "--since")}
    params = {k: str(v).lower() if isinstance(v, bool) else str(v)
              for k, v in wanted.items() if v is not None and v is not False}
    label, printed = _Labels(prefix), 0
    ns = namespace or DEFAULT_NAMESPACE
    with client_for(home) as client:
        kind, name = _workload(client, ns, ref)
        try:
            for record in stream_records(client, _sub(ns, name, "log", kind), params):
                when = _stamp(record.get("time")) if timestamps else ""
                sys.stdout.write(label(record) + when + str(record.get("line", "")) + "\n")
                printed += 1
                if follow:
                    sys.stdout.flush()
            sys.stdout.flush()
            if not printed:
                # A Job may have finished: "yet" would promise lines that never come.
                later = " yet" if kind == "Service" else ""
                say(f"No log lines from {kind.lower()}/{name}{later}.", stderr=True)
        except KeyboardInterrupt:
            return
        except BrokenPipeError:  # the reader (e.g. `head`) is gone: stop quietly
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _stamp(when: Any) -> str:
    if not isinstance(when, int | float):
        return ""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z "


def _workload(client: Client, namespace: str,
              ref: tuple[str | None, str]) -> tuple[str, str]:
    """(kind, name) of a `workload_ref`, a bare NAME's kind asked of the API."""
    kind, name = ref
    return kind or _bare_kind(client, namespace, name), name


def _bare_kind(client: Client, namespace: str, name: str) -> str:
    """A bare NAME is a Service, or the Job of that name when no Service has it."""
    try:
        client.get("Service", namespace, name)
    except NotFound as missing:
        try:
            client.get("Job", namespace, name)
        except NotFound:
            raise missing from None
        return "Job"
    return "Service"


def stream_records(client: Client, path: str, params: dict[str, str]) -> Iterator[Object]:
    """The NDJSON records of a log endpoint, as they arrive."""
    read = None if params.get("follow") == "true" else 60.0
    try:
        with client._http.stream("GET", path, params=params,
                                 timeout=httpx.Timeout(30.0, read=read)) as response:
            if not response.is_success:
                response.read()
                Client._decode(response)
            for line in response.iter_lines():
                if line:
                    yield json.loads(line)
    except httpx.TransportError as exc:
        raise Unavailable(f"the log stream from {client.base_url} broke off: {exc}",
                          hint="is CloudLand still running? check with: cloudland status") from None


class _Labels:
    """'[instance-id] ' or '[instance-id stderr] ', coloured per instance in terminals."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.cache: dict[tuple[str, str], str] = {}

    def __call__(self, record: Object) -> str:
        if not self.enabled:
            return ""
        key = (str(record.get("instance")), str(record.get("stream")))
        if key not in self.cache:
            text = Text(f"[{key[0]}", style=PALETTE[int(record.get("index") or 0) % len(PALETTE)])
            if key[1] == "stderr":
                text.append(" stderr", style="red")
            text.append("]")
            with console.capture() as captured:
                console.print(text, end="", soft_wrap=True)
            self.cache[key] = captured.get() + " "
        return self.cache[key]


def seconds(value: str, option: str) -> float:
    """'5m' -> 300.0; a plain number is seconds."""
    with contextlib.suppress(ValueError):
        return float(value)
    try:
        return parse_duration(check_duration(value))
    except ValueError as exc:
        raise BadRequest(f"{option}: {exc}", field=option) from None


# ---- top -------------------------------------------------------------------------


def top(
    workload: Annotated[str | None, typer.Argument(
        help="One Service or Job (NAME, svc/NAME or job/NAME); without it, every Service.",
        show_default=False)] = None,
    namespace: NamespaceOption = None,
    all_namespaces: Annotated[bool, typer.Option(
        "--all-namespaces", "-A", help="Across all namespaces.")] = False,
    output: OutputOption = Format.table,
    home: HomeOption = None,
) -> None:
    """Show CPU and memory of each instance of one Service or Job, or of every Service."""
    if workload and all_namespaces:
        raise BadRequest("give a WORKLOAD or -A, not both")
    ns = None if all_namespaces else (namespace or DEFAULT_NAMESPACE)
    with client_for(home) as client:
        if workload:
            one = ns or DEFAULT_NAMESPACE
            targets = [(one, *_workload(client, one, workload_ref(workload, tuple(FORMS))))]
        else:
            targets = [(o["metadata"]["namespace"], "Service", o["metadata"]["name"])
                       for o in client.list("Service", ns)["items"]]
        items = _usage(client, targets, one=bool(workload))
    if output in (Format.json, Format.yaml):
        dump({"items": items}, output)
        return
    if not items:
        where = f"{targets[0][1].lower()}/{targets[0][2]}" if workload else (
            f"namespace {ns}" if ns else "any namespace")
        say(f"No instances running in {where}.", stderr=True)
        return
    lead = ["namespace"] * (ns is None) + ["service"] * (not workload)
    rows = [[*(i[k] for k in lead), str(i.get("id")), _or_dash(i.get("pid")),
             _or_dash(i.get("cpuPercent"), "{:.1f}%"), human_bytes(i.get("memoryBytes"))]
            for i in items]
    table([*(k.upper() for k in lead), "INSTANCE", "PID", "CPU%", "MEMORY"], rows)


def _usage(client: Client, targets: list[tuple[str, str, str]], *,
           one: bool) -> list[Object]:
    """Each (namespace, kind, name) target's `/top` items, with its namespace and name
    (under `service` or `job`); a Service deleted since it was listed is skipped unless
    it is the `one` asked for."""
    items = []
    for namespace, kind, name in targets:
        try:
            found = client.request("GET", _sub(namespace, name, "top", kind))["items"]
        except NotFound:
            if one:
                raise
            continue
        items += [{"namespace": namespace, kind.lower(): name, **i} for i in found]
    return items


def _or_dash(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def human_bytes(value: Any) -> str:
    """1536 -> '1.5KiB'; None -> '-'."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}TiB"


# ---- scale -----------------------------------------------------------------------


def scale(
    service: ServiceArg,
    replicas: Annotated[int, typer.Option("--replicas", min=0,
                                          help="How many instances to run.")],
    namespace: NamespaceOption = None,
    home: HomeOption = None,
) -> None:
    """Set how many instances of a Service run."""
    name = service_name(service)
    with client_for(home) as client:
        client.patch("Service", namespace or DEFAULT_NAMESPACE, name,
                     {"spec": {"replicas": replicas}})
    say(f"service/{name} scaled to {replicas}")


# ---- rollout status --------------------------------------------------------------


def progress(obj: Object) -> tuple[bool, str]:
    """Whether the rollout is done, and a kubectl-like line saying where it is."""
    meta, status = obj["metadata"], obj.get("status") or {}
    want = int((obj.get("spec") or {}).get("replicas", 1))
    wait = "Waiting for rollout to finish: "
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 1):
        return False, wait + "the new spec has not been picked up yet..."
    updated, ready, total = (int(status.get(k) or 0)
                             for k in ("updatedReplicas", "readyReplicas", "replicas"))
    if updated < want:
        return False, wait + f"{updated} out of {want} new replicas have been updated..."
    if total > want:
        return False, wait + f"{total - want} old replicas are pending termination..."
    if ready < want:
        return False, wait + f"{ready} of {want} updated replicas are ready..."
    return True, f"service/{meta['name']} successfully rolled out"


def _why(obj: Object) -> str:
    """The Degraded or not-Ready condition of a Service, as 'Type: Reason: message'."""
    conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
    for type_, bad in (("Degraded", "True"), ("Ready", "False")):
        cond = conditions.get(type_)
        if cond and cond.get("status") == bad:
            return ": ".join(str(p) for p in (type_, cond.get("reason"), cond.get("message"))
                             if p)
    return "no condition says why"


def _watch_one(client: Client, namespace: str, name: str, rv: str) -> queue.Queue[Any]:
    """Watch events of one Service, delivered by a thread so the caller can time out."""
    events: queue.Queue[Any] = queue.Queue()

    def pump() -> None:
        try:
            for event in client.watch("Service", namespace, resource_version=rv):
                if event["object"]["metadata"]["name"] == name:
                    events.put(event)
        except Exception as exc:  # the stream ends with the client; report, never raise
            events.put(exc)

    threading.Thread(target=pump, name=f"watch service/{name}", daemon=True).start()
    return events


@rollout_app.command("status")
def rollout_status(
    service: ServiceArg,
    timeout: Annotated[str, typer.Option(
        "--timeout", help="Give up after this long: seconds or a duration like 2m.")] = "120",
    watch: Annotated[bool, typer.Option(
        "--watch/--no-watch", "-w", help="Wait for the rollout to finish.")] = True,
    namespace: NamespaceOption = None,
    home: HomeOption = None,
) -> None:
    """Wait until every instance runs the current template and is ready."""
    name, ns = service_name(service), namespace or DEFAULT_NAMESPACE
    limit = seconds(timeout, "--timeout")
    deadline = time.monotonic() + limit
    with client_for(home) as client:
        obj = client.get("Service", ns, name)
        done, line = progress(obj)
        say(line)
        if done or not watch:
            return
        events = _watch_one(client, ns, name, str(obj["metadata"]["resourceVersion"]))
        while not done:
            try:
                event = events.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise CloudLandError(
                    f"timed out after {limit:g}s waiting for service/{name} to roll out; "
                    f"{line.removeprefix('Waiting for rollout to finish: ').rstrip('.')}; "
                    f"{_why(obj)}", hint=f"see: cloudland describe service {name} -n {ns}"
                ) from None
            if isinstance(event, CloudLandError):
                raise event
            if isinstance(event, Exception):
                raise Unavailable(f"lost the watch of service/{name}: {event}")
            if event["type"] == "DELETED":
                raise NotFound(f"service/{name} was deleted during the rollout")
            obj = event["object"]
            done, new_line = progress(obj)
            if new_line != line:
                say(new_line)
                line = new_line


# ---- rollout history and undo ----------------------------------------------------


def changed_paths(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths where two templates differ; env entries by name (env.NAME)."""
    if old == new:
        return []
    if path == "env" and isinstance(old, list) and isinstance(new, list):
        before = {e.get("name"): e for e in old if isinstance(e, dict)}
        after = {e.get("name"): e for e in new if isinstance(e, dict)}
        names = [*after, *(n for n in before if n not in after)]
        return [f"env.{n}" for n in names if before.get(n) != after.get(n)] or ["env"]
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [*new, *(k for k in old if k not in new)]
        return [p for k in keys
                for p in changed_paths(old.get(k), new.get(k), f"{path}.{k}" if path else k)]
    return [path or "template"]


def change_summary(previous: Object | None, entry: Object, limit: int = 3) -> str:
    if previous is None:
        return "initial" if int(entry.get("revision", 0)) == 1 else "-"
    paths = changed_paths(previous.get("template") or {}, entry.get("template") or {})
    shown = ", ".join(paths[:limit])
    return shown + (f" +{len(paths) - limit} more" if len(paths) > limit else "") or "-"


def _history(obj: Object) -> tuple[list[Object], int | None]:
    status = obj.get("status") or {}
    current = status.get("revision")
    return list(status.get("history") or []), None if current is None else int(current)


@rollout_app.command("history")
def rollout_history(
    service: ServiceArg,
    revision: Annotated[int | None, typer.Option(
        "--revision", help="Print the template of this revision.", show_default=False)] = None,
    output: OutputOption = Format.table,
    namespace: NamespaceOption = None,
    home: HomeOption = None,
) -> None:
    """List the revisions of a Service and what changed in each; * marks the current one."""
    name = service_name(service)
    with client_for(home) as client:
        obj = client.get("Service", namespace or DEFAULT_NAMESPACE, name)
    entries, current = _history(obj)
    structured = output in (Format.json, Format.yaml)
    if revision is not None:
        dump(_revision(entries, revision, name, "--revision")["template"],
             output if structured else "yaml")
        return
    if structured:
        dump({"current": current, "items": entries}, output)
        return
    if not entries:
        say(f"No rollout history for service/{name} yet.", stderr=True)
        return
    rows = [["*" if int(e["revision"]) == current else "", e["revision"],
             age(e.get("createdAt")) or "-", change_summary(entries[i - 1] if i else None, e)]
            for i, e in enumerate(entries)]
    table(("CURRENT", "REVISION", "CREATED", "CHANGE"), rows)


def _revision(entries: list[Object], number: int, name: str, option: str) -> Object:
    for entry in entries:
        if int(entry["revision"]) == number:
            return entry
    known = ", ".join(str(e["revision"]) for e in entries) or "none yet"
    raise NotFound(f"service/{name} has no revision {number}", field=option,
                   hint=f"its revisions: {known}")


@rollout_app.command("undo")
def rollout_undo(
    service: ServiceArg,
    to_revision: Annotated[int | None, typer.Option(
        "--to-revision", help="The revision to go back to (default: the previous one).",
        show_default=False)] = None,
    namespace: NamespaceOption = None,
    home: HomeOption = None,
) -> None:
    """Roll a Service back to an earlier revision's template (replicas and strategy stay)."""
    name = service_name(service)
    with client_for(home) as client:
        obj = client.get("Service", namespace or DEFAULT_NAMESPACE, name)
        entries, current = _history(obj)
        if to_revision is None:
            at = next((i for i, e in enumerate(entries) if int(e["revision"]) == current), -1)
            if at < 1:
                raise BadRequest(f"service/{name} has no earlier revision to roll back to",
                                 hint=f"see: cloudland rollout history {name}")
            target = entries[at - 1]
        else:
            target = _revision(entries, to_revision, name, "--to-revision")
        spec = obj.get("spec") or {}
        template = {k: v for k, v in spec.items() if k not in NOT_TEMPLATE}
        if template == target["template"]:
            say(f"service/{name} skipped rollback: it already runs revision "
                f"{target['revision']}'s template")
            return
        obj["spec"] = {**target["template"], **{k: spec[k] for k in NOT_TEMPLATE if k in spec}}
        obj.pop("status", None)
        client.replace(obj)  # carries resourceVersion: a concurrent change is a conflict
    say(f"service/{name} rolled back to revision {target['revision']}")

