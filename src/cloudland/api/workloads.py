"""Workload sub-resources: an instance's logs (`/log`) and its resource usage (`/top`).

    GET /apis/cloudland/v1/namespaces/{ns}/{services|jobs}/{name}/log
        ?instance=N&follow=true&since=SECONDS&tail=N&previous=true&stream=stdout|stderr|all
    GET /apis/cloudland/v1/namespaces/{ns}/{services|jobs}/{name}/top

Logs are read through `runtime.logs` (the drivers' on-disk format), found
through the workload's status (a Service's `instances`, a Job's `attempts`):
each instance's `logDir` is its current run, and the run before it is the
sibling directory numbered one lower (`previous`).
The answer is NDJSON, one record per line: `{"instance", "index", "stream",
"line", "time"}`, each instance's lines oldest first, stdout and stderr merged
by time.  `time` is when the line reached the disk, known to within one tick of
the drivers' log index (about a second), and `since` filters by it.  `follow`
then streams new lines of every picked instance until the client goes away,
picking up new instances and restarts as the status shows them; a Job's
stream ends once the Job has finished and its last lines are read.

Usage comes from an injected `UsageProvider`; `proc_usage` is one that reads
/proc for the pids in status.  `daemon/` wires both (see `workload_routes`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cloudland.api.http import JSON, query_bool
from cloudland.api.service import ResourceService
from cloudland.errors import BadRequest, Forbidden, NotFound, Unavailable
from cloudland.runtime import logs, procfs

PREFIX = "/apis/cloudland/v1"
# plural -> kind of what has instances with logs, and the status field listing them
WORKLOADS = {"services": "Service", "jobs": "Job"}
INSTANCES = {"Service": "instances", "Job": "attempts"}
STREAMS = logs.STREAMS
BATCH = 1000  # lines per chunk written to the client
QUEUE_LIMIT = 10_000  # followed lines waiting for a slow client
RESYNC = 1.0  # seconds between looks at the workload (new instances, restarts, the end)

# (kind, namespace, name) -> one dict per instance:
# {id, index, pid, cpuSeconds, cpuPercent, memoryBytes}
UsageProvider = Callable[[str, str, str], list[dict[str, Any]]]
Endpoint = Callable[[Request], Awaitable[Response]]
Object = dict[str, Any]


@dataclass(frozen=True)
class Run:
    """One run of one instance: the directory its logs are in."""

    id: str
    index: int
    log_dir: Path


def _records(run: Run, lines: list[logs.LogLine]) -> bytes:
    return b"".join(orjson.dumps({
        "instance": run.id, "index": run.index, "stream": line.stream, "line": line.text,
        "time": round(line.time, 3)}) + b"\n" for line in lines)


# ---- choosing instances ----------------------------------------------------------


def instances_of(obj: Object) -> list[Object]:
    """The instance entries in a workload's status (a Job calls them attempts)."""
    listed = (obj.get("status") or {}).get(INSTANCES.get(obj.get("kind", ""), "instances"))
    return [i for i in listed or [] if isinstance(i, dict)]


def finished(obj: Object) -> bool:
    """Whether a workload has run to its end (a Job Complete or Failed): no new lines come."""
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or []
               if isinstance(c, dict))


@dataclass(frozen=True)
class LogQuery:
    instance: int | None
    follow: bool
    previous: bool
    since: float | None
    tail: int | None
    streams: tuple[str, ...]

    @classmethod
    def parse(cls, request: Request) -> LogQuery:
        q = request.query_params
        stream = q.get("stream", "all")
        if stream not in ("all", *STREAMS):
            raise BadRequest(f"stream: '{stream}' is not a log stream; use stdout, stderr or all",
                             field="stream")
        query = cls(instance=_number(q.get("instance"), "instance", int),
                    follow=query_bool(request, "follow"),
                    previous=query_bool(request, "previous"),
                    since=_number(q.get("since"), "since", float),
                    tail=_number(q.get("tail"), "tail", int),
                    streams=STREAMS if stream == "all" else (stream,))
        if query.follow and query.previous:
            raise BadRequest("follow and previous do not go together: a previous run has ended",
                             field="previous")
        return query


def _number(value: str | None, name: str, kind: type[int] | type[float]) -> Any:
    if value is None or value == "":
        return None
    try:
        number = kind(value)
    except ValueError:
        number = -1
    if number < 0 or number != number:  # negative or NaN
        unit = {"since": "seconds, e.g. 300", "tail": "lines, e.g. 100"}.get(name, "e.g. 0")
        raise BadRequest(f"{name}: '{value}' is not a number >= 0 ({unit})", field=name)
    return number


def pick_runs(obj: Object, query: LogQuery, log_root: Path | None, *,
              strict: bool = True) -> list[Run]:
    """The runs whose logs `query` asks for; `strict` turns "nothing there" into errors."""
    meta = obj["metadata"]
    what = f"{obj['kind'].lower()}/{meta['name']}"
    instances = [i for i in instances_of(obj) if i.get("logDir")]
    if query.instance is not None:
        # An index is unique among live instances; one being replaced may share it.
        same = sorted((i for i in instances if i.get("index") == query.instance),
                      key=lambda i: i.get("phase") == "Terminating")
        if not same and strict:
            known = sorted({int(i["index"]) for i in instances if "index" in i})
            raise NotFound(f"{what} has no instance {query.instance}", field="instance",
                           hint=f"its instances are: {', '.join(map(str, known))}" if known
                           else f"{what} has no instances yet")
        instances = same[:1]
    runs = []
    for inst in instances:
        log_dir = Path(inst["logDir"])
        if query.previous:
            restarts = int(inst.get("restarts", 0))
            log_dir = log_dir.parent / str(restarts - 1)
            if restarts < 1 or not log_dir.is_dir():
                continue
        if log_root is not None and not log_dir.resolve().is_relative_to(log_root.resolve()):
            raise Forbidden(f"{what}: instance {inst['id']} logs to {log_dir}, outside "
                            f"{log_root}; refusing to read it", field="status.instances")
        runs.append(Run(str(inst["id"]), int(inst.get("index", 0)), log_dir))
    if query.previous and not runs and strict:
        one = f"instance {query.instance}" if query.instance is not None else "any instance"
        raise NotFound(f"{what}: {one} has no previous run (it has not restarted)",
                       field="previous", hint="drop --previous to see the current run")
    return runs


# ---- streaming -------------------------------------------------------------------


def log_stream(service: ResourceService, kind: str, namespace: str, name: str,
               query: LogQuery, log_root: Path | None, runs: list[Run]
               ) -> AsyncGenerator[bytes, None]:
    """Each run's backlog, then (with `follow`) new lines until the client goes away.

    Every RESYNC seconds the workload is read again: new instances and restarts
    are followed from their first line, runs that ended are let go one RESYNC
    later (so their last lines are read), and so is the whole stream of a
    workload that has finished."""
    ending = False

    def current() -> list[Run] | None:
        nonlocal ending
        obj = service.find(kind, namespace, name)
        if obj is None or ending:
            return None
        ending = finished(obj)
        return pick_runs(obj, query, log_root, strict=False)

    return _stream(runs, query, current)


def dir_log_stream(log_dir: Path, query: LogQuery,
                   source: str) -> AsyncGenerator[bytes, None]:
    """One log directory not tied to a Service (the gateway's access log): its backlog,
    then, with `follow`, new lines until the client goes away."""
    return _stream([Run(source, 0, log_dir)], query, None)


async def _stream(runs: list[Run], query: LogQuery,
                  current: Callable[[], list[Run] | None] | None
                  ) -> AsyncGenerator[bytes, None]:
    """The runs' backlogs, then (with `follow`) their new lines; every RESYNC seconds
    `current` says which runs to follow now (None: the source is gone, stop). Without
    `current`, the runs are fixed.

    Following starts before the backlog is read, so lines written while it is
    sent are not lost (at worst a line written in that instant comes twice)."""
    lines: asyncio.Queue[tuple[Run, logs.LogLine]] = asyncio.Queue(maxsize=QUEUE_LIMIT)

    async def pump(run: Run, from_start: bool) -> None:
        async for line in logs.follow(run.log_dir, from_start=from_start):
            if line.stream in query.streams:
                await lines.put((run, line))  # blocks while the client reads slowly

    def tail(run: Run, from_start: bool) -> asyncio.Task[None]:
        return asyncio.create_task(pump(run, from_start), name=f"follow {run.id}")

    tasks = {run: tail(run, False) for run in runs} if query.follow else {}
    await asyncio.sleep(0)  # let each tail note where the files end now
    since = None if query.since is None else time.time() - query.since
    try:
        for run in runs if query.tail != 0 else []:  # (read_lines takes tail=0 as "all")
            backlog = await asyncio.to_thread(logs.read_lines, run.log_dir, since, query.tail,
                                              query.streams)
            for start in range(0, len(backlog), BATCH):
                yield _records(run, backlog[start:start + BATCH])
        ended: set[Run] = set()
        while query.follow:
            async for chunk in _drain(lines, time.monotonic() + RESYNC):
                yield chunk
            following = runs if current is None else current()
            if following is None:
                return
            now = set(following)
            for run in ended - now:
                tasks.pop(run).cancel()
            ended = tasks.keys() - now
            for run in now - tasks.keys():  # a new instance, or a restart: all of it is new
                tasks[run] = tail(run, True)
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def _drain(lines: asyncio.Queue[tuple[Run, logs.LogLine]],
                 deadline: float) -> AsyncIterator[bytes]:
    """Followed lines as they come until `deadline`, a run's lines batched together."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            run, line = await asyncio.wait_for(lines.get(), left)
        except TimeoutError:
            return
        batch = [line]
        while not lines.empty() and len(batch) < BATCH:
            more_run, more = lines.get_nowait()
            if more_run != run:
                yield _records(run, batch)
                run, batch = more_run, []
            batch.append(more)
        yield _records(run, batch)


# ---- usage -----------------------------------------------------------------------


def proc_usage(service: ResourceService) -> UsageProvider:
    """A provider reading /proc for the pids in a workload's status: CPU time and RSS
    summed over each instance's process group.  CPU% (100 = one core) is over the
    time since the previous look at the same process (if within a minute), else
    since it started, as `ps` does."""
    seen: dict[tuple[int, int], tuple[float, float]] = {}  # (pid, start) -> (cpu, when)

    def usage(kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
        obj = service.get(kind, namespace, name)
        groups: dict[int, list[procfs.ProcStat]] | None = None
        now = time.monotonic()
        items = []
        for inst in instances_of(obj):
            item: dict[str, Any] = {"id": inst.get("id"), "index": inst.get("index"),
                                    "pid": None, "cpuSeconds": None, "cpuPercent": None,
                                    "memoryBytes": None}
            items.append(item)
            handle, pid = inst.get("handle") or {}, inst.get("pid")
            if not isinstance(pid, int):
                continue
            ticks = handle.get("start_ticks")
            stat = procfs.same_process(pid, ticks) if ticks else procfs.read_stat(pid)
            if stat is None or stat.exited:
                continue
            members = [stat]
            if stat.pgid == pid:  # the instance leads its own group: count its children
                if groups is None:
                    groups = _process_groups()
                members = groups.get(pid, members)
            cpu = sum(m.cpu_seconds for m in members)
            before = seen.get((pid, stat.start_ticks))
            if before and 0.05 < now - before[1] < 60:
                percent = (cpu - before[0]) / (now - before[1]) * 100
            else:
                percent = cpu / max(_uptime() - stat.start_ticks / procfs.CLK_TCK, 0.01) * 100
            seen[(pid, stat.start_ticks)] = (cpu, now)
            item.update(pid=pid, cpuSeconds=round(cpu, 3), cpuPercent=round(max(percent, 0), 1),
                        memoryBytes=sum(m.rss_pages for m in members) * procfs.PAGE_SIZE)
        for key in [k for k, (_, when) in seen.items() if now - when > 300]:
            del seen[key]
        return items

    return usage


def _process_groups() -> dict[int, list[procfs.ProcStat]]:
    groups: dict[int, list[procfs.ProcStat]] = {}
    for pid in procfs.all_pids():
        stat = procfs.read_stat(pid)
        if stat is not None and not stat.exited:
            groups.setdefault(stat.pgid, []).append(stat)
    return groups


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


# ---- routes and their description ------------------------------------------------


def workload_routes(service: ResourceService, usage: UsageProvider | None, *,
                    guard: Callable[[Endpoint], Endpoint] = lambda e: e,
                    log_root: Path | None = None,
                    gateway_logs: Path | None = None) -> list[Route]:
    """The routes of this module.  `guard` wraps each endpoint (authentication);
    with `log_root`, log directories outside it are refused. `gateway_logs` is the
    directory of the gateway's access log (JSON lines on its stdout stream)."""

    async def gateway_log(request: Request) -> Response:
        if gateway_logs is None:
            raise Unavailable("this CloudLand runs no gateway, so there is no access log",
                              hint="cloudland status says why the gateway is not running")
        query = LogQuery.parse(request)
        return StreamingResponse(dir_log_stream(gateway_logs, query, "gateway"),
                                 media_type="application/x-ndjson")

    def endpoints(kind: str) -> tuple[Endpoint, Endpoint]:
        async def log(request: Request) -> Response:
            ns, name = request.path_params["namespace"], request.path_params["name"]
            query = LogQuery.parse(request)
            obj = service.get(kind, ns, name)
            if finished(obj):  # nothing more will come: send what there is and end
                query = replace(query, follow=False)
            runs = pick_runs(obj, query, log_root)
            stream = log_stream(service, kind, ns, name, query, log_root, runs)
            return StreamingResponse(stream, media_type="application/x-ndjson")

        async def top(request: Request) -> Response:
            ns, name = request.path_params["namespace"], request.path_params["name"]
            service.get(kind, ns, name)
            if usage is None:
                raise Unavailable("resource usage is not available: this CloudLand has no "
                                  "usage provider wired", hint="logs still work: cloudland logs")
            return JSON({"items": usage(kind, ns, name)})

        return log, top

    routes = []
    for plural, kind in WORKLOADS.items():
        log, top = endpoints(kind)
        base = f"{PREFIX}/namespaces/{{namespace}}/{plural}/{{name}}"
        routes += [Route(base + "/log", guard(log), methods=["GET"]),
                   Route(base + "/top", guard(top), methods=["GET"])]
    routes.append(Route(f"{PREFIX}/gateway/log", guard(gateway_log), methods=["GET"]))
    return routes


def workload_paths() -> dict[str, Any]:
    """OpenAPI path items for `workload_routes`, to merge into the document."""
    def param(name: str, where: str, schema: Object, about: str) -> Object:
        return {"name": name, "in": where, "required": where == "path", "schema": schema,
                "description": about}

    def responses(media: str, schema: Object) -> Object:
        return {"200": {"description": "OK", "content": {media: {"schema": schema}}},
                "default": {"description": "Error", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Error"}}}}}

    number = {"type": "number", "minimum": 0}
    record = {"type": "object", "properties": {
        "instance": {"type": "string"}, "index": {"type": "integer"},
        "stream": {"type": "string", "enum": list(STREAMS)}, "line": {"type": "string"},
        "time": {"type": ["number", "null"]}}}
    usage_item = {"type": "object", "properties": {
        "id": {"type": "string"}, "index": {"type": "integer"},
        "pid": {"type": ["integer", "null"]}, "cpuSeconds": {"type": ["number", "null"]},
        "cpuPercent": {"type": ["number", "null"]}, "memoryBytes": {"type": ["integer", "null"]}}}
    paths: dict[str, Any] = {}
    for plural, kind in WORKLOADS.items():
        base = f"{PREFIX}/namespaces/{{namespace}}/{plural}/{{name}}"
        where = [param("namespace", "path", {"type": "string"}, "namespace"),
                 param("name", "path", {"type": "string"}, f"the {kind}'s name")]
        paths[base + "/log"] = {"get": {
            "operationId": f"read{kind}Log", "tags": [kind],
            "summary": "Log lines of its instances, as NDJSON; follow streams new ones",
            "parameters": [*where,
                param("instance", "query", {"type": "integer", "minimum": 0},
                      "only the instance with this index"),
                param("follow", "query", {"type": "boolean"}, "keep streaming new lines"),
                param("previous", "query", {"type": "boolean"}, "the run before the current"),
                param("since", "query", number,
                      "seconds; skip log files not written in this window"),
                param("tail", "query", {"type": "integer", "minimum": 0},
                      "only the last N lines of each instance"),
                param("stream", "query", {"type": "string", "enum": ["all", *STREAMS]},
                      "which output (default all)")],
            "responses": responses("application/x-ndjson", record)}}
        paths[base + "/top"] = {"get": {
            "operationId": f"read{kind}Usage", "tags": [kind],
            "summary": "CPU and memory of each instance",
            "parameters": where,
            "responses": responses("application/json", {"type": "object", "properties": {
                "items": {"type": "array", "items": usage_item}}})}}
    return paths

