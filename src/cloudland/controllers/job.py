"""Job controller: run a workload to completion on the runtime drivers.

`parallelism` attempts run at once until `completions` have exited 0; a failed
attempt is retried after a back-off (10 s doubling, capped at 6 min, as
Kubernetes does) until `backoffLimit` failures mark the Job Failed;
`activeDeadlineSeconds` bounds the whole run; `ttlSecondsAfterFinished`
deletes a finished Job.  Counts live in status so a restart resumes them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cloudland.controllers.accepting import Object
from cloudland.controllers.base import Key, Result
from cloudland.controllers.context import Context, get_condition, rfc3339
from cloudland.controllers.instances import Instance, Supervision
from cloudland.controllers.workload import Runtime, resolve_env
from cloudland.runtime import Handle

FINALIZER = "cloudland.io/instances"
RETRY_START, RETRY_CAP = 10.0, 360.0
KEEP_ATTEMPTS = 10


@dataclass
class JobState:
    instances: dict[str, Instance] = field(default_factory=dict)
    counted: set[str] = field(default_factory=set)
    supervision: Supervision | None = None
    adopted: bool = False


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def finished(status: Object) -> str | None:
    """'Complete' or 'Failed' once the Job has finished, else None."""
    for kind in ("Complete", "Failed"):
        cond = get_condition(status, kind)
        if cond and cond["status"] == "True":
            return kind
    return None


class JobReconciler:
    kind = "Job"
    watches = ("Secret", "ConfigMap")

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.jobs: dict[Key, JobState] = {}

    async def reconcile(self, key: Key, ctx: Context) -> Result | None:
        obj = ctx.find(key)
        state = self.jobs.setdefault(key, JobState())
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            await self._stop_all(state)
            self.jobs.pop(key, None)
            if obj is not None:
                ctx.remove_finalizer(obj, FINALIZER)
            return None
        status = ctx.status_of(obj)
        done = finished(status)
        if done:
            await self._stop_all(state)
            return self._expire(ctx, obj, status)
        obj = ctx.add_finalizer(obj, FINALIZER)
        spec, generation = obj["spec"], obj["metadata"]["generation"]
        env, problems = resolve_env(ctx, key.namespace, spec.get("env", []), "spec.env")
        status["observedGeneration"] = generation
        if problems:
            ctx.set_condition(status, "Ready", "False", "ConfigNotFound", "; ".join(problems),
                              generation)
            ctx.write_status(obj, status)
            return None
        sup = self._supervision(key, ctx, state, spec)
        now = ctx.clock.time()
        status.setdefault("startTime", rfc3339(now))
        if not state.adopted:
            await self._adopt(key, state, sup, status, spec, env)
        self._count(state, status, now)
        verdict = self._verdict(spec, status, now)
        if verdict is None:
            await self._start_attempts(key, state, sup, spec, env, status, ctx)
        else:
            await self._stop_all(state)
            reason, message = verdict
            kind = "Complete" if reason == "Completed" else "Failed"
            status["completionTime"] = rfc3339(now)
            ctx.set_condition(status, kind, "True", reason, message, generation)
            # Ready's change is recorded as the event (write_status): not told twice.
            ctx.set_condition(status, "Ready", "True" if kind == "Complete" else "False",
                              reason, message, generation)
        self._write(ctx, obj, state, status, spec)
        return self._next_look(ctx, state, spec, status)

    # ---- steps -----------------------------------------------------------------------

    def _supervision(self, key: Key, ctx: Context, state: JobState, spec: Object) -> Supervision:
        driver = self.runtime.driver(spec.get("runtime", "process"))
        if state.supervision is None or state.supervision.driver is not driver:
            state.supervision = Supervision(driver, notify=lambda: ctx.enqueue(key, 0.0),
                                            monotonic=ctx.clock.monotonic, wall=ctx.clock.time)
        return state.supervision

    async def _adopt(self, key: Key, state: JobState, sup: Supervision, status: Object,
                     spec: Object, env: dict[str, str]) -> None:
        state.adopted = True
        for record in status.get("attempts", []):
            if record.get("phase") != "Running" or not record.get("handle"):
                continue
            inst = Instance(record["id"], int(record.get("index", 0)), "", 0,
                            self.runtime.log_root / f"{key.namespace}.{record['id']}",
                            handle=Handle.from_dict(record["handle"]))
            if await sup.adopt(inst, spec, env):
                state.instances[inst.id] = inst

    def _count(self, state: JobState, status: Object, now: float) -> None:
        """Fold attempts that ended into the succeeded/failed counters, once each;
        after a failure the next attempt waits its back-off."""
        for inst in state.instances.values():
            if inst.alive or inst.id in state.counted or inst.last_exit is None:
                continue
            state.counted.add(inst.id)
            ok = inst.last_exit.get("exitCode") == 0
            field_name = "succeeded" if ok else "failed"
            status[field_name] = int(status.get(field_name, 0)) + 1
            inst.phase, inst.message = ("Succeeded" if ok else "Failed"), ""
            if not ok:
                failed = int(status["failed"])
                status["retryAt"] = now + min(RETRY_START * 2 ** (failed - 1), RETRY_CAP)

    @staticmethod
    def _verdict(spec: Object, status: Object, now: float) -> tuple[str, str] | None:
        completions = int(spec.get("completions", 1))
        if int(status.get("succeeded", 0)) >= completions:
            return "Completed", f"{completions}/{completions} completions succeeded"
        failed, limit = int(status.get("failed", 0)), int(spec.get("backoffLimit", 6))
        if failed > limit:
            attempts = "attempt" if failed == 1 else "attempts"
            return "BackoffLimitExceeded", f"{failed} {attempts} failed (backoffLimit {limit})"
        deadline = spec.get("activeDeadlineSeconds")
        started = _parse_time(status.get("startTime"))
        if deadline and started is not None and now - started >= float(deadline):
            return "DeadlineExceeded", f"still running after activeDeadlineSeconds={deadline}"
        return None

    async def _start_attempts(self, key: Key, state: JobState, sup: Supervision, spec: Object,
                              env: dict[str, str], status: Object, ctx: Context) -> None:
        active = [i for i in state.instances.values() if i.alive or i.phase == "Pending"]
        remaining = int(spec.get("completions", 1)) - int(status.get("succeeded", 0))
        want = min(int(spec.get("parallelism", 1)), remaining) - len(active)
        retry_at = float(status.get("retryAt", 0))
        if want <= 0 or ctx.clock.time() < retry_at:
            return
        attempts = []
        for _ in range(want):
            number = int(status.get("attemptsStarted", 0))
            status["attemptsStarted"] = number + 1
            inst_id = f"{key.name}-{number}"
            inst = Instance(inst_id, number, "", 0,
                            self.runtime.log_root / f"{key.namespace}.{inst_id}")
            state.instances[inst_id] = inst
            attempts.append(inst)
        await asyncio.gather(*(sup.start(i, spec, env) for i in attempts))

    def _write(self, ctx: Context, obj: Object, state: JobState, status: Object,
               spec: Object) -> None:
        attempts = sorted(state.instances.values(), key=lambda i: i.index)[-KEEP_ATTEMPTS:]
        status["active"] = sum(i.alive for i in state.instances.values())
        status["attempts"] = [i.to_status() for i in attempts]
        status.setdefault("succeeded", 0)
        status.setdefault("failed", 0)
        if not finished(status):
            generation = obj["metadata"]["generation"]
            ctx.set_condition(status, "Ready", "Unknown", "Running",
                              f"{status['succeeded']}/{spec.get('completions', 1)} completed, "
                              f"{status['active']} running, {status['failed']} failed",
                              generation)
        ctx.write_status(obj, status)

    def _next_look(self, ctx: Context, state: JobState, spec: Object,
                   status: Object) -> Result | None:
        if finished(status):
            ttl = spec.get("ttlSecondsAfterFinished")
            return Result(requeue_after=float(ttl) + 0.01) if ttl is not None else None
        looks = []
        if status.get("retryAt"):
            looks.append(float(status["retryAt"]) - ctx.clock.time())
        deadline, started = spec.get("activeDeadlineSeconds"), _parse_time(
            status.get("startTime"))
        if deadline and started is not None:
            looks.append(started + float(deadline) - ctx.clock.time())
        return Result(requeue_after=max(min(looks), 0.01)) if looks else None

    def _expire(self, ctx: Context, obj: Object, status: Object) -> Result | None:
        """Delete a finished Job once its ttlSecondsAfterFinished has passed."""
        ttl = obj["spec"].get("ttlSecondsAfterFinished")
        done_at = _parse_time(status.get("completionTime"))
        if ttl is None or done_at is None:
            return None
        left = done_at + float(ttl) - ctx.clock.time()
        if left > 0:
            return Result(requeue_after=left)
        ctx.remove_finalizer(obj, FINALIZER)
        meta = obj["metadata"]
        ctx.api.delete("Job", meta["namespace"], meta["name"])
        return None

    async def _stop_all(self, state: JobState) -> None:
        sup = state.supervision
        if sup is not None:
            await asyncio.gather(*(sup.stop(i, 10.0) for i in state.instances.values()
                                   if i.alive))

    async def shutdown(self) -> None:
        await asyncio.gather(*(self._stop_all(s) for s in self.jobs.values()))
