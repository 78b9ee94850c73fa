"""The manager on a real store: what it queues, how it runs keys, how it handles outcomes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from cloudland.api.service import ResourceService
from cloudland.controllers import (
    Context,
    Key,
    Manager,
    ManualClock,
    PermanentError,
    Result,
    TemporaryError,
)
from cloudland.controllers.context import get_condition
from tests.controllers.conftest import doc

Run = Callable[[Coroutine[Any, Any, None]], None]
Behaviour = Callable[[Key, Context], Awaitable[Result | None]]


class Probe:
    """A ConfigMap reconciler that records its calls and does what the test tells it."""

    kind = "ConfigMap"

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.calls: list[Key] = []
        self.behaviour = behaviour

    def count(self, name: str) -> int:
        return Counter(k.name for k in self.calls)[name]

    async def reconcile(self, key: Key, ctx: Context) -> Result | None:
        self.calls.append(key)
        return await self.behaviour(key, ctx) if self.behaviour else None


def cm(name: str, **data: str) -> dict[str, Any]:
    return doc("ConfigMap", name, data=data)


def set_data(api: ResourceService, name: str, **data: str) -> None:
    api.patch({"data": data}, kind="ConfigMap", namespace="default", name=name)


def key(name: str) -> Key:
    return Key("ConfigMap", "default", name)


def events(api: ResourceService, name: str) -> list[dict[str, Any]]:
    items, _ = api.list("Event", "default")
    return [e for e in items if e["involvedObject"]["name"] == name]


def condition(api: ResourceService, name: str, type_: str) -> dict[str, Any] | None:
    return get_condition(api.get("ConfigMap", "default", name).get("status") or {}, type_)


def test_start_queues_existing_objects_then_follows_changes(run: Run, api: ResourceService,
                                                            running: Any, eventually: Any) -> None:
    api.create(cm("a"))
    api.create(cm("b"))

    async def body() -> None:
        probe = Probe()
        async with running([probe]) as manager:
            await eventually(lambda: sorted(k.name for k in probe.calls) == ["a", "b"])
            api.create(cm("c"))
            set_data(api, "a", x="1")
            api.create(doc("Broker", "other", {}))
            await eventually(lambda: manager.idle and probe.count("c") == 1)
            assert probe.count("a") == 2
            assert {k.kind for k in probe.calls} == {"ConfigMap"}

    run(body())


def test_changes_to_a_queued_key_are_coalesced(run: Run, api: ResourceService, running: Any,
                                               eventually: Any) -> None:
    api.create(cm("a"))

    async def body() -> None:
        probe = Probe()
        async with running([probe]) as manager:
            for i in range(5):  # no await in between: the workers have not run yet
                set_data(api, "a", x=str(i))
            await eventually(lambda: manager.idle and probe.calls)
            assert probe.count("a") == 1

    run(body())


def test_one_key_runs_serially_and_different_keys_in_parallel(
        run: Run, api: ResourceService, running: Any, eventually: Any) -> None:
    names = ["a", "b", "c", "d"]
    for name in names:
        api.create(cm(name))
    active: Counter[str] = Counter()
    most = {"total": 0, "per_key": 0}
    gate = asyncio.Event()

    async def hold(key: Key, ctx: Context) -> None:
        active[key.name] += 1
        most["total"] = max(most["total"], sum(active.values()))
        most["per_key"] = max(most["per_key"], active[key.name])
        try:
            await gate.wait()
        finally:
            active[key.name] -= 1

    async def body() -> None:
        probe = Probe(hold)
        async with running([probe], workers=4) as manager:
            await eventually(lambda: sum(active.values()) == 4, what="4 reconciles at once")
            for i in range(3):  # "a" changes while it is being reconciled
                set_data(api, "a", x=str(i))
            await asyncio.sleep(0)
            assert active["a"] == 1
            gate.set()
            await eventually(lambda: manager.idle and probe.count("a") == 2)
            assert [probe.count(n) for n in names] == [2, 1, 1, 1]
            assert most == {"total": 4, "per_key": 1}

    run(body())


def test_failures_back_off_exponentially_then_recover(
        run: Run, api: ResourceService, running: Any, eventually: Any,
        clock: ManualClock) -> None:
    api.create(cm("a"))
    failing = {"on": True}

    async def flaky(key: Key, ctx: Context) -> None:
        if failing["on"]:
            raise RuntimeError("disk on fire")

    async def body() -> None:
        probe = Probe(flaky)
        async with running([probe]) as manager:
            await eventually(lambda: manager.queue.due_in(key("a")) is not None)
            delays: list[float] = []
            while len(delays) < 20:  # up to the 300 s cap, without waiting for it
                delay = manager.queue.due_in(key("a"))
                assert delay is not None
                delays.append(delay)
                clock.advance(delay)
                await eventually(lambda n=len(delays): probe.count("a") == n + 1)
                await eventually(lambda: manager.queue.due_in(key("a")) is not None)
            assert delays[:5] == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
            assert delays[-3:] == [300.0, 300.0, 300.0]
            assert manager.health()["failing"] == 1

            degraded = condition(api, "a", "Degraded")
            assert degraded is not None
            assert (degraded["status"], degraded["reason"]) == ("True", "ReconcileError")
            assert "RuntimeError: disk on fire" in degraded["message"]

            failing["on"] = False
            clock.advance(300)
            await eventually(lambda: manager.idle and manager.health()["failing"] == 0)
            assert manager.queue.limiter.failures(key("a")) == 0
            assert manager.queue.waiting == 0
            degraded = condition(api, "a", "Degraded")
            assert degraded is not None
            assert (degraded["status"], degraded["reason"]) == ("False", "ReconcileSucceeded")

    run(body())


def test_temporary_error_retries_after_its_delay_without_degrading(
        run: Run, api: ResourceService, running: Any, eventually: Any,
        clock: ManualClock) -> None:
    api.create(cm("a"))

    async def later(key: Key, ctx: Context) -> None:
        raise TemporaryError("port not open yet", delay=7)

    async def body() -> None:
        probe = Probe(later)
        async with running([probe]) as manager:
            await eventually(lambda: manager.queue.due_in(key("a")) == 7)
            clock.advance(7)
            await eventually(lambda: probe.count("a") == 2)
            assert condition(api, "a", "Degraded") is None
            assert events(api, "a") == []

    run(body())


def test_requeue_after_looks_again_at_the_time_asked(
        run: Run, api: ResourceService, running: Any, eventually: Any,
        clock: ManualClock) -> None:
    api.create(cm("a"))

    async def again(key: Key, ctx: Context) -> Result:
        return Result(requeue_after=30)

    async def body() -> None:
        probe = Probe(again)
        async with running([probe]) as manager:
            await eventually(lambda: manager.queue.due_in(key("a")) == 30)
            clock.advance(29.9)
            assert manager.idle and probe.count("a") == 1
            clock.advance(0.1)
            await eventually(lambda: probe.count("a") == 2)

    run(body())


def test_resync_queues_every_object_again(run: Run, api: ResourceService, running: Any,
                                          eventually: Any, clock: ManualClock) -> None:
    api.create(cm("a"))
    api.create(cm("b"))

    async def body() -> None:
        probe = Probe()
        async with running([probe], resync=60) as manager:
            await eventually(lambda: manager.idle and len(probe.calls) == 2)
            clock.advance(59)
            assert len(probe.calls) == 2
            clock.advance(1)
            await eventually(lambda: len(probe.calls) == 4)
            clock.advance(60)
            await eventually(lambda: len(probe.calls) == 6)

    run(body())


def test_permanent_error_waits_for_a_new_generation(
        run: Run, api: ResourceService, running: Any, eventually: Any,
        clock: ManualClock) -> None:
    api.create(cm("a", mode="bad"))

    async def strict(key: Key, ctx: Context) -> None:
        obj = ctx.find(key)
        if obj and obj["data"].get("mode") == "bad":
            raise PermanentError("data.mode: 'bad' is not a mode; use good",
                                 reason="InvalidMode")

    async def body() -> None:
        probe = Probe(strict)
        async with running([probe], resync=60) as manager:
            await eventually(lambda: condition(api, "a", "Ready"))
            ready = condition(api, "a", "Ready")
            assert ready is not None
            assert (ready["status"], ready["reason"]) == ("False", "InvalidMode")
            assert api.get("ConfigMap", "default", "a")["status"]["observedGeneration"] == 1
            assert manager.queue.waiting == 0, "no retry is scheduled"

            clock.advance(600)  # ten resyncs
            api.patch({"metadata": {"labels": {"team": "x"}}}, kind="ConfigMap",
                      namespace="default", name="a")  # not a spec change
            await eventually(lambda: manager.idle)
            assert probe.count("a") == 1
            assert manager.health()["parked"] == 1

            set_data(api, "a", mode="good")
            await eventually(lambda: manager.idle and probe.count("a") == 2)
            assert manager.health()["parked"] == 0

    run(body())


def test_a_spec_edited_during_a_failing_reconcile_is_still_reconciled(
        run: Run, api: ResourceService, running: Any, eventually: Any) -> None:
    api.create(cm("a", mode="bad"))

    async def edited_meanwhile(key: Key, ctx: Context) -> None:
        obj = ctx.find(key)
        if obj and obj["data"]["mode"] == "bad":
            set_data(api, "a", mode="good")  # the user fixes it while the reconcile runs
            raise PermanentError("data.mode: 'bad' is not a mode", reason="InvalidMode")

    async def body() -> None:
        probe = Probe(edited_meanwhile)
        async with running([probe]) as manager:
            await eventually(lambda: manager.idle and probe.count("a") == 2)
            assert manager.health()["parked"] == 0
            assert api.get("ConfigMap", "default", "a")["status"]["observedGeneration"] == 1

    run(body())


def test_events_are_recorded_on_transitions_only(
        run: Run, api: ResourceService, running: Any, eventually: Any,
        clock: ManualClock) -> None:
    api.create(cm("a", mode="crash"))

    async def moody(key: Key, ctx: Context) -> None:
        obj = ctx.find(key)
        mode = obj["data"].get("mode") if obj else None
        if mode == "crash":
            raise RuntimeError("disk on fire")
        if mode == "bad":
            raise PermanentError("data.mode: 'bad' is not a mode", reason="InvalidMode")

    def seen() -> list[tuple[str, str, int]]:
        return sorted((e["type"], e["reason"], e["count"]) for e in events(api, "a"))

    async def body() -> None:
        probe = Probe(moody)
        async with running([probe]) as manager:
            for _ in range(5):  # a streak of failures is one event, not one per retry
                await eventually(lambda: manager.queue.due_in(key("a")) is not None)
                clock.advance(manager.queue.due_in(key("a")) or 0)
            await eventually(lambda: probe.count("a") >= 6)
            assert seen() == [("Warning", "ReconcileError", 1)]

            set_data(api, "a", mode="bad")
            await eventually(lambda: manager.health()["parked"] == 1)
            assert seen() == [("Warning", "InvalidMode", 1), ("Warning", "ReconcileError", 1)]

            set_data(api, "a", mode="fine")
            await eventually(lambda: manager.idle and manager.health()["parked"] == 0)
            assert seen() == [("Warning", "InvalidMode", 1), ("Warning", "ReconcileError", 1)]
            manager.enqueue(key("a"))
            await eventually(lambda: manager.idle and probe.count("a") >= 9)
            assert len(seen()) == 2, "a reconcile that changes nothing records nothing"

    run(body())


def test_status_is_written_only_when_it_changes_and_does_not_retrigger(
        run: Run, api: ResourceService, running: Any, eventually: Any) -> None:
    api.create(cm("a"))

    async def report(key: Key, ctx: Context) -> None:
        obj = ctx.find(key)
        assert obj is not None
        status = ctx.status_of(obj)
        status["observedGeneration"] = obj["metadata"]["generation"]
        ctx.set_condition(status, "Ready", "True", "Stored", "", obj["metadata"]["generation"])
        ctx.write_status(obj, status)

    async def body() -> None:
        probe = Probe(report)
        async with running([probe]) as manager:
            await eventually(lambda: manager.idle and condition(api, "a", "Ready"))
            first = api.get("ConfigMap", "default", "a")
            await asyncio.sleep(0.01)
            assert probe.count("a") == 1, "its own status write must not wake the controller"
            manager.enqueue(key("a"))
            await eventually(lambda: manager.idle and probe.count("a") == 2)
            second = api.get("ConfigMap", "default", "a")
            assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
            assert second["status"] == first["status"]

    run(body())


def test_a_finalizer_holds_deletion_until_the_controller_cleans_up(
        run: Run, api: ResourceService, running: Any, eventually: Any) -> None:
    api.create(cm("a"))
    cleaned: list[str] = []

    async def guard(key: Key, ctx: Context) -> None:
        obj = ctx.find(key)
        if obj is None:
            return
        if obj["metadata"].get("deletionTimestamp"):
            cleaned.append(key.name)
            ctx.remove_finalizer(obj, "cloudland.io/test")
        else:
            ctx.add_finalizer(obj, "cloudland.io/test")

    async def body() -> None:
        probe = Probe(guard)
        async with running([probe]) as manager:
            await eventually(lambda: api.get("ConfigMap", "default", "a")["metadata"]
                             .get("finalizers"))
            api.delete("ConfigMap", "default", "a")
            held = api.find("ConfigMap", "default", "a")
            assert held is not None and held["metadata"]["deletionTimestamp"]
            await eventually(lambda: api.find("ConfigMap", "default", "a") is None)
            await eventually(lambda: manager.idle)
            assert cleaned == ["a"]
            assert probe.calls[-1] == key("a"), "the removal itself is reconciled too"

    run(body())


def test_stop_cancels_busy_workers_and_leaves_nothing_running(
        run: Run, api: ResourceService, clock: ManualClock, eventually: Any) -> None:
    api.create(cm("a"))
    api.create(cm("b"))
    started = asyncio.Event()

    async def forever(key: Key, ctx: Context) -> Result:
        if key.name == "a":
            started.set()
            await asyncio.Event().wait()
        return Result(requeue_after=60)

    async def body() -> None:
        manager = Manager(api, [Probe(forever)], workers=3, clock=clock, resync=300)
        await manager.start()
        assert manager.health()["workers"] == 3
        await asyncio.wait_for(started.wait(), 5)
        await eventually(lambda: manager.queue.waiting == 1)
        await manager.stop()
        health = manager.health()
        assert (health["healthy"], health["workers"], health["processing"]) == (False, 0, 0)
        assert clock.pending() == [], "resync and requeue timers are cancelled"
        api.create(cm("c"))  # no longer watching
        assert len(manager.queue) == 0
        # `run` fails the test if any task is still alive here.

    run(body())


def test_the_real_clock_drives_retries(run: Run, api: ResourceService,
                                       eventually: Any) -> None:
    api.create(cm("a"))

    async def twice(key: Key, ctx: Context) -> Result | None:
        if len(probe.calls) <= 2:
            raise RuntimeError(f"attempt {len(probe.calls)}")
        return None

    probe = Probe(twice)

    async def body() -> None:
        manager = Manager(api, [probe], backoff_base=0.001)
        await manager.start()
        try:
            await eventually(lambda: len(probe.calls) == 3 and manager.idle)
            assert manager.health()["failing"] == 0
        finally:
            await manager.stop()

    run(body())


def test_changes_committed_on_another_thread_are_handed_to_the_loop(
        run: Run, api: ResourceService, running: Any, eventually: Any) -> None:
    async def body() -> None:
        probe = Probe()
        async with running([probe]):
            await asyncio.to_thread(api.create, cm("a"))
            await eventually(lambda: probe.count("a") == 1)

    run(body())


def test_health_reports_the_workers(run: Run, api: ResourceService, running: Any) -> None:
    async def body() -> None:
        async with running([Probe()], workers=2) as manager:
            assert manager.health() == {"healthy": True, "workers": 2, "queued": 0,
                                        "waiting": 0, "processing": 0, "failing": 0,
                                        "parked": 0}

    run(body())


def test_reconcilers_are_one_per_known_kind(api: ResourceService) -> None:
    with pytest.raises(ValueError, match="workers must be at least 1"):
        Manager(api, [Probe()], workers=0)
    with pytest.raises(ValueError, match="two reconcilers for ConfigMap"):
        Manager(api, [Probe(), Probe()])
    stranger = Probe()
    stranger.kind = "Gizmo"
    with pytest.raises(ValueError, match="unknown kind 'Gizmo'"):
        Manager(api, [stranger])
