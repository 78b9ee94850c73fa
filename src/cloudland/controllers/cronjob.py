"""CronJob controller: create a Job each time the schedule fires.

Schedules are read in `spec.timeZone`, or in the machine's local time zone
when it is unset (as the kube-controller-manager does).  A run that was due
while CloudLand was down is started once on return (not once per miss);
`concurrencyPolicy` decides what happens when the previous Job still runs;
finished Jobs beyond the history limits are deleted, oldest first.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from cloudland.controllers.accepting import Object, env_refs, missing
from cloudland.controllers.base import Key, PermanentError, Result
from cloudland.controllers.context import Context, rfc3339
from cloudland.controllers.job import finished

CRONJOB_LABEL = "cloudland.io/cronjob"


def _zone(time_zone: str | None) -> ZoneInfo | None:
    if time_zone is None:
        return None
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise PermanentError(
            f"spec.timeZone: '{time_zone}' is not a known time zone; use an IANA name "
            "such as UTC or Europe/Paris", reason="InvalidTimeZone") from None


def _start(now: float, time_zone: str | None) -> datetime:
    # Naive local times: .timestamp() maps them back through the C library,
    # which knows the local daylight-saving rules.
    zone = _zone(time_zone)
    return datetime.fromtimestamp(now) if zone is None else datetime.fromtimestamp(now, zone)


def next_run(schedule: str, time_zone: str | None, now: float) -> float:
    """The first time strictly after `now` (epoch seconds) that `schedule` fires."""
    return float(croniter(schedule, _start(now, time_zone)).get_next(datetime).timestamp())


def last_run(schedule: str, time_zone: str | None, now: float) -> float:
    """The latest time at or before `now` that `schedule` fired."""
    return float(croniter(schedule, _start(now + 1e-3, time_zone)).get_prev(datetime)
                 .timestamp())


def _parse(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class CronJobReconciler:
    kind = "CronJob"
    watches = ("Secret", "ConfigMap", "Job")

    async def reconcile(self, key: Key, ctx: Context) -> Result | None:
        obj = ctx.find(key)
        jobs = self._jobs(ctx, key)
        if obj is None:
            for job in jobs:  # the CronJob is gone: so are the Jobs it made
                ctx.api.delete("Job", key.namespace, job["metadata"]["name"])
            return None
        spec, generation = obj["spec"], obj["metadata"]["generation"]
        status = ctx.status_of(obj)
        status["observedGeneration"] = generation
        problems = [why for ref in env_refs(key.namespace, spec["jobTemplate"].get("env", []),
                                            "spec.jobTemplate.env") if (why := missing(ctx, ref))]
        active = [j for j in jobs if not finished(j.get("status") or {})]
        result = None
        if problems:
            ready = ("False", "ConfigNotFound", "; ".join(problems))
        elif spec.get("suspend"):
            status.pop("nextScheduleTime", None)
            ready = ("True", "Suspended", "suspended: no Jobs are created")
        else:
            now = ctx.clock.time()
            active = self._fire(ctx, obj, status, active, now)
            at = next_run(spec["schedule"], spec.get("timeZone"), now)
            status["nextScheduleTime"] = rfc3339(at)
            result = Result(requeue_after=max(at - now, 0.5))
            ready = ("True", "Scheduled", f"next run at {status['nextScheduleTime']}")
        self._trim_history(ctx, key, spec, jobs)
        status["active"] = [j["metadata"]["name"] for j in active]
        ctx.set_condition(status, "Ready", *ready, generation=generation)  # type: ignore[arg-type]
        ctx.write_status(obj, status)
        return result

    def _jobs(self, ctx: Context, key: Key) -> list[Object]:
        items, _ = ctx.api.list("Job", key.namespace,
                                lambda labels: labels.get(CRONJOB_LABEL) == key.name)
        return sorted(items, key=lambda j: j["metadata"].get("creationTimestamp", ""))

    def _fire(self, ctx: Context, obj: Object, status: Object, active: list[Object],
              now: float) -> list[Object]:
        """Create the Job for the latest due run, if there is one not yet started."""
        spec, meta = obj["spec"], obj["metadata"]
        since = _parse(status.get("lastScheduleTime")) or _parse(meta.get("creationTimestamp"))
        due = last_run(spec["schedule"], spec.get("timeZone"), now)
        if since is not None and due <= since:
            return active
        status["lastScheduleTime"] = rfc3339(due)
        policy = spec.get("concurrencyPolicy", "Allow")
        if active and policy == "Forbid":
            ctx.record_event(obj, "Normal", "JobSkipped",
                             f"previous Job {active[-1]['metadata']['name']} is still running")
            return active
        if active and policy == "Replace":
            for job in active:
                ctx.api.delete("Job", meta["namespace"], job["metadata"]["name"])
            active = []
        name = f"{meta['name'][:50]}-{int(due // 60)}"
        if ctx.api.find("Job", meta["namespace"], name) is not None:
            return active
        job = ctx.api.create({
            "apiVersion": "cloudland/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": meta["namespace"],
                         "labels": {CRONJOB_LABEL: meta["name"]}},
            "spec": spec["jobTemplate"]})
        ctx.record_event(obj, "Normal", "SuccessfulCreate", f"created Job {name}")
        return [*active, job]

    @staticmethod
    def _trim_history(ctx: Context, key: Key, spec: Object, jobs: list[Object]) -> None:
        for verdict, limit in (("Complete", spec.get("successfulJobsHistoryLimit", 3)),
                               ("Failed", spec.get("failedJobsHistoryLimit", 1))):
            done = [j for j in jobs if finished(j.get("status") or {}) == verdict]
            for job in done[: max(len(done) - int(limit), 0)]:
                ctx.api.delete("Job", key.namespace, job["metadata"]["name"])
