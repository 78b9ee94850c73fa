"""CronJob reconciler: computes status.nextScheduleTime and looks again when it passes.

Schedules are read in `spec.timeZone`, or in the machine's local time zone
when it is unset (as the kube-controller-manager does).  Creating the Jobs
belongs to the job runner, which a later capability adds.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from cloudland.controllers.accepting import (
    AcceptingReconciler,
    Object,
    Readiness,
    Ref,
    env_refs,
)
from cloudland.controllers.base import PermanentError, Result
from cloudland.controllers.context import Context, rfc3339


def next_run(schedule: str, time_zone: str | None, now: float) -> float:
    """The first time strictly after `now` (epoch seconds) that `schedule` fires."""
    if time_zone is None:
        # Naive local times: .timestamp() maps them back through the C library,
        # which knows the local daylight-saving rules.
        start = datetime.fromtimestamp(now)
    else:
        try:
            start = datetime.fromtimestamp(now, ZoneInfo(time_zone))
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise PermanentError(
                f"spec.timeZone: '{time_zone}' is not a known time zone; use an IANA name "
                "such as UTC or Europe/Paris", reason="InvalidTimeZone") from None
    return croniter(schedule, start).get_next(datetime).timestamp()


class CronJobReconciler(AcceptingReconciler):
    kind = "CronJob"
    watches = ("Secret", "ConfigMap")
    awaiting = "the job runner that creates its Jobs is not part of this version yet"

    def references(self, obj: Object) -> list[Ref]:
        template = obj["spec"]["jobTemplate"]
        return env_refs(obj["metadata"]["namespace"], template.get("env", []),
                        "spec.jobTemplate.env")

    def assess(self, obj: Object, status: Object, ctx: Context) -> tuple[Readiness, Result | None]:
        spec, name = obj["spec"], obj["metadata"]["name"]
        if spec.get("suspend"):
            status.pop("nextScheduleTime", None)
            return ("Unknown", "Suspended", f"CronJob {name} is suspended: no Jobs are created"
                    ), None
        now = ctx.clock.time()
        at = next_run(spec["schedule"], spec.get("timeZone"), now)
        status["nextScheduleTime"] = rfc3339(at)
        readiness, _ = super().assess(obj, status, ctx)
        return readiness, Result(requeue_after=max(at - now, 1.0))
