"""CronJobs create Jobs when the schedule fires, honour concurrency and trim history."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from cloudland.api.service import ResourceService
from cloudland.controllers import ManualClock
from cloudland.controllers.cronjob import CRONJOB_LABEL, CronJobReconciler
from tests.controllers.conftest import doc

Run = Callable[[Coroutine[Any, Any, None]], None]


def jobs(api: ResourceService) -> list[str]:
    items, _ = api.list("Job", "default", lambda lb: CRONJOB_LABEL in lb)
    return sorted(j["metadata"]["name"] for j in items)


def finish(api: ResourceService, name: str, verdict: str) -> None:
    api.update_status("Job", "default", name, {"conditions": [
        {"type": verdict, "status": "True", "reason": "Test"}]})


def test_schedule_creates_jobs_and_forbid_skips(run: Run, api: ResourceService, running: Any,
                                                 eventually: Any) -> None:
    clock = ManualClock(wall=time.time())  # so creationTimestamp is "now"
    api.create(doc("CronJob", "tick", {"schedule": "* * * * *", "timeZone": "UTC",
                                       "concurrencyPolicy": "Forbid",
                                       "successfulJobsHistoryLimit": 1,
                                       "jobTemplate": {"command": ["true"]}}))

    async def body() -> None:
        async with running([CronJobReconciler()], clock=clock, resync=None) as manager:
            await eventually(lambda: manager.idle)
            assert jobs(api) == []  # nothing was due since it was created
            clock.advance(60)
            await eventually(lambda: len(jobs(api)) == 1)
            first = jobs(api)[0]
            cron = api.get("CronJob", "default", "tick")["status"]
            assert cron["active"] == [first] and cron["lastScheduleTime"]
            clock.advance(60)  # still running: Forbid skips this run
            await eventually(lambda: manager.idle)
            assert jobs(api) == [first]
            finish(api, first, "Complete")
            clock.advance(60)
            await eventually(lambda: len(jobs(api)) == 2)
            second = next(j for j in jobs(api) if j != first)
            finish(api, second, "Complete")
            # Job status changes are read at the next run (status-only changes of a
            # watched kind do not wake the controller); history limit 1 then drops
            # the older finished Job.
            clock.advance(60)
            await eventually(lambda: len(jobs(api)) == 2 and first not in jobs(api))
            assert second in jobs(api)

    run(body())


def test_deleting_the_cronjob_deletes_its_jobs(run: Run, api: ResourceService, running: Any,
                                               eventually: Any) -> None:
    clock = ManualClock(wall=time.time())
    api.create(doc("CronJob", "tick", {"schedule": "* * * * *", "timeZone": "UTC",
                                       "jobTemplate": {"command": ["true"]}}))

    async def body() -> None:
        async with running([CronJobReconciler()], clock=clock, resync=None):
            clock.advance(60)
            await eventually(lambda: len(jobs(api)) == 1)
            api.delete("CronJob", "default", "tick")
            await eventually(lambda: jobs(api) == [])

    run(body())
