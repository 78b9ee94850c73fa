"""`apply --wait`'s verdicts, on a scripted sequence of statuses (the real waits are in
tests/test_stacks.py; a crash within milliseconds of a start is a race there)."""

from __future__ import annotations

from typing import Any

import pytest

from cloudland.cli import stacks
from cloudland.errors import CloudLandError


class Statuses:
    """Answers `get` with the next Ready status of a Service, the last one for ever."""

    def __init__(self, *ready: str) -> None:
        self.ready = list(ready)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        status = self.ready.pop(0) if len(self.ready) > 1 else self.ready[0]
        return {"kind": kind, "metadata": {"name": name, "generation": 1},
                "spec": {"command": ["app"]},
                "status": {"observedGeneration": 1, "conditions": [
                    {"type": "Ready", "status": status, "reason": f"Was{status}",
                     "message": ""}]}}


ITEM = {"kind": "Service", "name": "web", "namespace": "default", "action": "created"}


def test_a_service_ready_for_an_instant_then_crashing_is_not_ready() -> None:
    crashing = Statuses("True", "False")  # started (no probe: ready), then exited
    with pytest.raises(CloudLandError) as late:
        stacks._wait(crashing, [ITEM], timeout=1.5)  # type: ignore[arg-type]
    assert "1 object(s) not ready" in str(late.value)


def test_a_service_that_stays_ready_is_ready_after_the_settle_time() -> None:
    steady = Statuses("False", "True")
    stacks._wait(steady, [ITEM], timeout=stacks.SETTLE_S + 5)  # type: ignore[arg-type]
