"""Crash-loop back-off of a Service, on a manual clock: at once, then 10 s, then 20 s."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from cloudland.api.service import ResourceService
from cloudland.controllers import ManualClock
from cloudland.controllers.service import ServiceReconciler
from cloudland.controllers.workload import Runtime
from cloudland.runtime.process import ProcessDriver
from tests.controllers.conftest import doc

Run = Callable[[Coroutine[Any, Any, None]], None]


def test_crash_loop_backs_off_on_the_clock(run: Run, api: ResourceService, running: Any,
                                           eventually: Any, clock: ManualClock,
                                           tmp_path: Path) -> None:
    api.create(doc("Service", "crashy", {"command": ["sh", "-c", "exit 1"]}))

    def instance() -> dict[str, Any]:
        insts = (api.get("Service", "default", "crashy").get("status") or {}).get("instances")
        return insts[0] if insts else {}

    async def body() -> None:
        driver = ProcessDriver(tmp_path / "run", cgroup_parent="cloudland-test-backoff")
        reconciler = ServiceReconciler(Runtime({"process": driver}, tmp_path / "logs"))
        try:
            async with running([reconciler], resync=None):
                # The first crash restarts at once; the second backs off 10 s.
                await eventually(lambda: instance().get("phase") == "CrashLoopBackOff"
                                 and instance().get("restarts") == 1, timeout=10)
                assert "back-off 10s" in instance()["message"]
                clock.advance(9.5)
                await eventually(lambda: instance().get("restarts") == 1)
                clock.advance(0.6)
                await eventually(lambda: instance().get("restarts") == 2
                                 and instance().get("phase") == "CrashLoopBackOff", timeout=10)
                assert "back-off 20s" in instance()["message"]
        finally:
            await reconciler.shutdown()
            await driver.close()

    run(body())
