"""A failed Job attempt is retried only after its back-off (on a manual clock)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from cloudland.api.service import ResourceService
from cloudland.controllers import ManualClock
from cloudland.controllers.job import JobReconciler
from cloudland.controllers.workload import Runtime
from cloudland.runtime.process import ProcessDriver
from tests.controllers.conftest import doc

Run = Callable[[Coroutine[Any, Any, None]], None]


def test_failed_attempt_waits_for_its_backoff(run: Run, api: ResourceService, running: Any,
                                              eventually: Any, clock: ManualClock,
                                              tmp_path: Path) -> None:
    api.create(doc("Job", "flaky", {"command": ["sh", "-c", "exit 1"], "backoffLimit": 1}))

    def status() -> dict[str, Any]:
        return api.get("Job", "default", "flaky").get("status") or {}

    async def body() -> None:
        driver = ProcessDriver(tmp_path / "run", cgroup_parent="cloudland-test-jobs")
        runtime = Runtime({"process": driver}, tmp_path / "logs")
        reconciler = JobReconciler(runtime)
        try:
            async with running([reconciler], resync=None):
                await eventually(lambda: status().get("failed") == 1, timeout=10)
                assert status()["attemptsStarted"] == 1
                clock.advance(9)  # not yet: the first retry waits 10 s
                await eventually(lambda: status().get("failed") == 1)
                assert status()["attemptsStarted"] == 1
                clock.advance(1.1)
                await eventually(lambda: status().get("failed") == 2, timeout=10)
                reasons = [c["reason"] for c in status()["conditions"] if c["type"] == "Failed"]
                assert reasons == ["BackoffLimitExceeded"]
                # Told once: one event, not the verdict's and Ready's both (count 2).
                events, _ = api.list("Event", "default")
                told = [(e["reason"], e["count"]) for e in events
                        if e["involvedObject"]["name"] == "flaky"
                        and e["reason"] == "BackoffLimitExceeded"]
                assert told == [("BackoffLimitExceeded", 1)], told
        finally:
            await reconciler.shutdown()
            await driver.close()

    run(body())


def test_the_verdict_counts_failed_attempts_in_words() -> None:
    assert JobReconciler._verdict({"backoffLimit": 0}, {"failed": 1}, 0.0) == (
        "BackoffLimitExceeded", "1 attempt failed (backoffLimit 0)")
    assert JobReconciler._verdict({"backoffLimit": 1}, {"failed": 2}, 0.0) == (
        "BackoffLimitExceeded", "2 attempts failed (backoffLimit 1)")
