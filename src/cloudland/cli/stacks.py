"""`apply`, `plan` and `destroy`: manifests in files as the source of truth.

Every object applied from a set of files carries the stack label
(`cloudland.io/stack`), so `apply --prune` can delete what the files no longer
declare and `plan` can show what changed outside them (drift).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from cloudland.cli.manifests import Manifest, load, mapping, stack_name
from cloudland.cli.options import HomeOption, NamespaceOption, client_for
from cloudland.cli.output import Format, console, dump, err_console, fail
from cloudland.cli.plan import render_plan
from cloudland.client import Client
from cloudland.errors import CloudLandError, Invalid, NotFound
from cloudland.model.kinds import kind_info

FilesOption = Annotated[list[str], typer.Option(
    "--filename", "-f", help="Manifest file or directory ('-' for stdin); repeatable.")]
RecursiveOption = Annotated[bool, typer.Option(
    "--recursive", "-R", help="Include subdirectories of directories given with -f.")]
StackOption = Annotated[str | None, typer.Option(
    "--stack", help="Stack name recorded on every object (default: name of the first -f).")]

STYLES = {"created": "green", "configured": "yellow", "unchanged": "dim", "deleted": "red"}


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Infrastructure as code")(apply)
    app.command(rich_help_panel="Infrastructure as code")(plan)
    app.command(rich_help_panel="Infrastructure as code")(destroy)


def apply(
    filename: FilesOption,
    recursive: RecursiveOption = False,
    prune: Annotated[bool, typer.Option(
        "--prune", help="Delete objects of this stack that the files no longer declare.")] = False,
    stack: StackOption = None,
    namespace: NamespaceOption = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Wait until every object is ready and every Job complete "
        "(exit 1 if one is not).")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to --wait.")] = 120.0,
    output: Annotated[Format | None, typer.Option("--output", "-o", help="json or yaml")] = None,
    home: HomeOption = None,
) -> None:
    """Create or update everything in the files, all or nothing."""
    manifests, items, stack_label = prepare(filename, recursive, stack, namespace)
    with client_for(home) as client:
        with _progress(f"Applying {len(items)} object(s)…", len(items)):
            result = _call(manifests, lambda: client.apply(items, stack=stack_label, prune=prune))
        if output is not None:
            dump(result, output)
        else:
            _print_results(result["items"])
            for orphan in result.get("orphans", []):
                err_console.print(f"[dim]note: {orphan['kind'].lower()}/{orphan['name']} is in "
                                  f"stack '{stack_label}' but not in the files; "
                                  "--prune deletes it[/]")
        if wait:
            _wait(client, result["items"], timeout)


def plan(
    filename: FilesOption,
    recursive: RecursiveOption = False,
    prune: Annotated[bool, typer.Option(
        "--prune", help="Plan deletions of objects the files no longer declare.")] = False,
    stack: StackOption = None,
    namespace: NamespaceOption = None,
    detailed_exitcode: Annotated[bool, typer.Option(
        "--detailed-exitcode", help="Exit 2 when there are changes, 0 when none.")] = False,
    output: Annotated[Format | None, typer.Option("--output", "-o", help="json or yaml")] = None,
    home: HomeOption = None,
) -> None:
    """Show what apply would create, change and delete — and drift made outside the files."""
    manifests, items, stack_label = prepare(filename, recursive, stack, namespace)
    with client_for(home) as client:
        result = _call(manifests, lambda: client.apply(items, stack=stack_label, prune=prune,
                                                       dry_run=True))
    if output is not None:
        dump(result, output)
        changes = any(r["action"] != "unchanged" for r in result["items"])
    else:
        changes = render_plan(result, stack_label, prune)
    if detailed_exitcode and changes:
        raise typer.Exit(2)


def destroy(
    filename: FilesOption,
    recursive: RecursiveOption = False,
    stack: StackOption = None,
    namespace: NamespaceOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", "--auto-approve",
                                      help="Do not ask for confirmation.")] = False,
    home: HomeOption = None,
) -> None:
    """Delete everything the files declare and everything else in their stack."""
    manifests = load(filename, recursive=recursive)
    stack_label = stack or stack_name(filename)
    refs = [_ref(m, namespace) for m in manifests]
    with client_for(home) as client:
        planned = client.destroy([r for r in refs if r], stack=stack_label, dry_run=True)["items"]
        if not planned:
            console.print("Nothing to destroy.")
            return
        for item in planned:
            console.print(f"  [red]-[/] {item['kind'].lower()}/{item['name']}"
                          f" [dim]({item['namespace']})[/]")
        if not yes and not typer.confirm(f"Destroy these {len(planned)} object(s)?"):
            fail("destroy cancelled; nothing was deleted")
        done = client.destroy([r for r in refs if r], stack=stack_label)["items"]
        console.print(f"[green]✓[/] Destroy complete: {len(done)} deleted.")


# ---- helpers ------------------------------------------------------------------


def prepare(files: list[str], recursive: bool, stack: str | None,
             namespace: str | None) -> tuple[list[Manifest], list[Any], str]:
    manifests = load(files, recursive=recursive)
    if not manifests:
        fail("no documents found in the given files", code=1)
    items = []
    for m in manifests:
        doc = m.doc
        if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
            meta = doc["metadata"]
            if namespace and not meta.get("namespace"):
                meta["namespace"] = namespace
            meta.setdefault("annotations", {})
            if isinstance(meta["annotations"], dict):
                meta["annotations"].setdefault("cloudland.io/source", m.file)
            _absolute_working_dir(doc, m.file)
        items.append(doc)
    return manifests, items, stack or stack_name(files)


def _absolute_working_dir(doc: dict[str, Any], file: str) -> None:
    """A relative workingDir means relative to the manifest's folder, so examples
    run from wherever they are applied."""
    spec = mapping(doc.get("spec"))
    for holder in (spec, mapping(spec.get("jobTemplate"))):
        wd = holder.get("workingDir")
        if isinstance(wd, str) and wd and not os.path.isabs(wd):
            base = Path.cwd() if file == "<stdin>" else Path(file).resolve().parent
            holder["workingDir"] = str((base / wd).resolve())


def _call(manifests: list[Manifest], call: Any) -> dict[str, Any]:
    """Run an apply; map the server's per-document errors back to file and line."""
    try:
        return dict(call())
    except Invalid as err:
        causes = err.causes or [{"field": err.field, "message": err.message}]
        if not any("index" in c for c in causes):
            raise
        for cause in causes:
            m = manifests[int(cause.get("index", 0))]
            where = m.where(cause.get("field"))
            err_console.print(f"[bold red]error:[/] {where}: {m.ref()}: "
                              f"{cause.get('field')}: {cause.get('message')}", soft_wrap=True)
            if cause.get("hint"):
                err_console.print(f"  [dim]hint:[/] {cause['hint']}")
        fail(f"{len(causes)} problem(s) found; nothing was applied")


def _progress(message: str, count: int) -> Any:
    import contextlib

    return console.status(message) if count > 20 else contextlib.nullcontext()


def _print_results(items: list[dict[str, Any]]) -> None:
    counts = {a: 0 for a in STYLES}
    lines = []
    for item in items:
        action = item["action"]
        counts[action] = counts.get(action, 0) + 1
        ns = "" if item["namespace"] == "default" else f" -n {item['namespace']}"
        lines.append(f"{item['kind'].lower()}/{item['name']}{ns} "
                     f"[{STYLES.get(action, 'white')}]{action}[/]")
    if lines:
        console.print("\n".join(lines))  # one print: rich is slow per call
    console.print(f"[bold]Apply complete:[/] {counts['created']} created, "
                  f"{counts['configured']} configured, {counts['unchanged']} unchanged, "
                  f"{counts['deleted']} deleted.")


def _ref(m: Manifest, namespace: str | None) -> dict[str, str] | None:
    doc = mapping(m.doc)
    meta = mapping(doc.get("metadata"))
    if not isinstance(doc.get("kind"), str) or not isinstance(meta.get("name"), str):
        return None
    return {"kind": doc["kind"], "name": meta["name"],
            "namespace": meta.get("namespace") or namespace or "default"}


def _wait(client: Client, items: list[dict[str, Any]], timeout: float) -> None:
    """Wait until every applied object is ready (see `_not_ready`); a Job that has
    failed for good ends the wait at once, and objects still not ready at the
    timeout are named with their reason."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    pending = [i for i in items if i["action"] != "deleted"]
    deadline = time.monotonic() + timeout
    why: dict[str, str] = {}
    uids: dict[str, str] = {}  # each Job's, once seen: its events outlive it
    ready_since: dict[str, float] = {}  # SETTLING objects seen ready, since when
    with Progress(TextColumn("Waiting until ready"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as bar:
        total = len(pending)
        task = bar.add_task("wait", total=total)
        while pending and time.monotonic() < deadline:
            still = []
            for item in pending:
                kind, name = item["kind"].lower(), item["name"]
                verdict = _verdict(client, item, uids)
                if verdict is None and item["kind"] in SETTLING:
                    verdict = _settling(f"{kind}/{name}", ready_since)
                elif verdict is not None:
                    ready_since.pop(f"{kind}/{name}", None)
                if verdict is None:
                    continue
                failed, reason = verdict
                if failed:
                    raise CloudLandError(f"{kind}/{name} failed: {reason}",
                                         hint=f"see: cloudland describe {kind} {name}")
                why[f"{kind}/{name}"] = reason
                still.append(item)
            bar.update(task, completed=total - len(still))
            pending = still
            if pending:
                time.sleep(0.1)
    if pending:
        for item in pending:
            ref = f"{item['kind'].lower()}/{item['name']}"
            err_console.print(f"[yellow]not ready:[/] {ref}: {escape(why.get(ref, ''))}",
                              soft_wrap=True)
        first = pending[0]
        raise CloudLandError(f"{len(pending)} object(s) not ready after {timeout:.0f}s",
                             hint=f"see: cloudland describe {first['kind'].lower()} "
                                  f"{first['name']}, or cloudland events")
    console.print("[green]✓[/] All objects ready.")


JOB_VERDICTS = {"Completed": False, "BackoffLimitExceeded": True, "DeadlineExceeded": True}
# Kinds whose readiness can come and go: a process without a readiness probe is ready
# the moment it starts, so one that crashes as it starts is ready for a few
# milliseconds. They count once they have stayed ready for SETTLE_S (as a Deployment's
# minReadySeconds).
SETTLING = frozenset({"Service"})
SETTLE_S = 1.0


def _settling(ref: str, ready_since: dict[str, float]) -> tuple[bool, str] | None:
    """None once `ref`, ready now, has been ready for SETTLE_S; else why it waits."""
    now = time.monotonic()
    if now - ready_since.setdefault(ref, now) >= SETTLE_S:
        return None
    return False, f"ready, and to stay so for {SETTLE_S:.0f} s"


def _verdict(client: Client, item: dict[str, Any],
             uids: dict[str, str]) -> tuple[bool, str] | None:
    """`_not_ready` of the applied object as it is now. A Job may be gone already:
    `ttlSecondsAfterFinished` deletes it once finished, so its verdict is read from
    the events it left (the latest about the Job seen, or about any of that name)."""
    try:
        obj = client.get(item["kind"], item["namespace"], item["name"])
    except NotFound:
        if item["kind"] != "Job":
            raise
        return _gone_job(client, item, uids.get(f"{item['namespace']}/{item['name']}"))
    if item["kind"] == "Job":
        uids[f"{item['namespace']}/{item['name']}"] = str(obj["metadata"].get("uid"))
    return _not_ready(obj)


def _gone_job(client: Client, item: dict[str, Any], uid: str | None) -> tuple[bool, str] | None:
    told = sorted((e for e in client.list("Event", item["namespace"])["items"]
                   if e["involvedObject"].get("kind") == "Job"
                   and e["involvedObject"].get("name") == item["name"]
                   and (uid is None or e["involvedObject"].get("uid") == uid)
                   and e.get("reason") in JOB_VERDICTS),
                  key=lambda e: str(e.get("lastTimestamp")))
    if not told:
        return True, "deleted before it finished"
    last = told[-1]
    return None if not JOB_VERDICTS[last["reason"]] else (
        True, f"{last['reason']}: {last.get('message')} (then removed)")


def _not_ready(obj: dict[str, Any]) -> tuple[bool, str] | None:
    """None when `obj` is ready: data (ConfigMaps, Secrets) at once, other kinds once
    their controller has acted on this generation and Ready is not False (kinds still
    to be built say Unknown); a Job once it is complete. Otherwise (failed for good?,
    why): a Failed condition (a Job out of retries) is for good."""
    info = kind_info(obj["kind"])
    if info is None or "spec" not in info.spec_fields:
        return None
    status = obj.get("status") or {}
    if status.get("observedGeneration", 0) < obj["metadata"].get("generation", 1):
        return False, "waiting for its controller"
    conditions = {c.get("type"): c for c in status.get("conditions", []) if isinstance(c, dict)}
    failed, ready, degraded = (conditions.get(t) or {} for t in ("Failed", "Ready", "Degraded"))
    if failed.get("status") == "True":
        return True, _because(failed)
    if obj["kind"] == "Job":  # done only once complete (helm's --wait-for-jobs), not running
        complete = (conditions.get("Complete") or {}).get("status") == "True"
        return None if complete else (False, _because(ready) if ready else "not started")
    if ready.get("status") != "False":
        return None
    # Degraded says why an instance keeps failing (CrashLoopBackOff: command not found).
    return False, _because(ready) + (f"; {_because(degraded)}"
                                     if degraded.get("status") == "True" else "")


def _because(condition: dict[str, Any]) -> str:
    return f"{condition.get('reason')}: {condition.get('message')}"
