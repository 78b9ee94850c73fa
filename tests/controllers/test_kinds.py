"""The registered reconcilers on a real store: conditions, references, schedules, restarts."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from cloudland.api.service import ResourceService
from cloudland.controllers import Key, ManualClock
from cloudland.controllers.context import get_condition
from cloudland.controllers.registry import NO_RECONCILER, default_reconcilers
from cloudland.controllers.workload import Runtime
from cloudland.model.kinds import KINDS
from tests.controllers.conftest import doc

Run = Callable[[Coroutine[Any, Any, None]], None]
# No runtime drivers: Services are checked and then reported as unable to run.
# tests/controllers/test_service.py runs them on the real process driver.
NO_DRIVERS = Runtime(drivers={}, log_root=Path("/nonexistent"))
CMD = {"command": ["python3", "-m", "http.server"]}

EVERY_KIND = [
    doc("Service", "web", CMD),
    doc("Function", "fn", {"handler": "app:handle", "triggers": {"events": [{}]}}),
    doc("Route", "front", {"rules": [{"backends": [{"name": "web"},
                                                   {"kind": "Function", "name": "fn"}]}]}),
    doc("Bucket", "photos", {"notifications": [{"sink": {"broker": "default"}}]}),
    doc("Broker", "default", {}),
    doc("Trigger", "on-photo", {"broker": "default",
                                "subscriber": {"ref": {"kind": "Function", "name": "fn"}}}),
    doc("Secret", "db", stringData={"password": "hunter2"}),
    doc("ConfigMap", "settings", data={"mode": "fast"}),
    doc("Policy", "replicas", {"matchKinds": ["Service"],
                               "validations": [{"expression": "true"}]}),
    doc("Job", "migrate", {"command": ["true"]}),
    doc("CronJob", "yearly", {"schedule": "0 0 1 1 *", "timeZone": "UTC",
                              "jobTemplate": {"command": ["true"]}}),
]


def ready(api: ResourceService, kind: str, name: str) -> dict[str, Any]:
    """The object's Ready condition, or {} while it has none."""
    obj = api.find(kind, "default", name)
    return get_condition((obj or {}).get("status") or {}, "Ready") or {}


def reason(api: ResourceService, kind: str, name: str) -> str | None:
    return ready(api, kind, name).get("reason")


def message(api: ResourceService, kind: str, name: str) -> str:
    return str(ready(api, kind, name).get("message", ""))


def versions(api: ResourceService) -> dict[str, str]:
    return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
            for info in KINDS.values() if info.kind != "Event"
            for o in api.list(info.kind)[0]}


def test_every_kind_but_event_has_exactly_one_reconciler() -> None:
    kinds = [r.kind for r in default_reconcilers(NO_DRIVERS)]
    assert sorted(kinds) == sorted(k for k in KINDS if k not in NO_RECONCILER)


def test_every_kind_reports_conditions_and_a_restart_changes_nothing(
        run: Run, api: ResourceService, running: Any, eventually: Any,
        clock: ManualClock) -> None:
    for manifest in EVERY_KIND:
        api.create(manifest)
    reconciled = [m for m in EVERY_KIND if m["kind"] not in NO_RECONCILER]

    async def body() -> None:
        async with running(default_reconcilers(NO_DRIVERS), resync=60) as manager:
            await eventually(lambda: manager.idle and all(
                ready(api, m["kind"], m["metadata"]["name"]) for m in reconciled))
            for m in EVERY_KIND:
                obj = api.get(m["kind"], "default", m["metadata"]["name"])
                if m["kind"] in NO_RECONCILER:
                    assert "status" not in obj  # stored is all there is, as in Kubernetes
                    continue
                status = obj["status"]
                assert status["observedGeneration"] == 1
                conds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
                if m["kind"] in ("Service", "Job"):
                    assert conds["Ready"] == ("False", "RuntimeUnavailable")
                    continue
                if m["kind"] == "CronJob":
                    assert conds["Ready"] == ("True", "Scheduled")
                    continue
                if m["kind"] == "Bucket":  # no object store in these tests
                    assert conds["Ready"] == ("False", "StorageUnavailable")
                    continue
                if m["kind"] == "Route":  # its backends exist; Functions are not served yet
                    assert conds["Ready"] == ("False", "BackendNotServed")
                    assert "Function backends (fn)" in message(api, "Route", "front")
                    continue
                assert conds["Ready"] == ("Unknown", "Accepted"), m["kind"]
                said = message(api, m["kind"], m["metadata"]["name"])
                assert "stored and validated" in said
                assert "not part of this version yet" in said
                assert conds["Progressing"][0] == "False"
                assert conds["Degraded"] == ("False", "AsExpected")
            settled = versions(api)
            clock.advance(60)  # a resync reconciles everything again ...
            await eventually(lambda: manager.idle)
            assert versions(api) == settled  # ... and writes nothing
        async with running(default_reconcilers(NO_DRIVERS)) as manager:  # a restart
            await eventually(lambda: manager.idle)
            assert versions(api) == settled

    run(body())


def test_route_waits_for_its_backends(run: Run, api: ResourceService, running: Any,
                                      eventually: Any) -> None:
    api.create(EVERY_KIND[2])

    async def body() -> None:
        async with running(default_reconcilers(NO_DRIVERS)):
            await eventually(lambda: reason(api, "Route", "front") == "BackendNotFound")
            assert ready(api, "Route", "front")["status"] == "False"
            assert message(api, "Route", "front") == (
                "spec.rules[0].backends[0]: Service default/web does not exist; "
                "spec.rules[0].backends[1]: Function default/fn does not exist")
            api.create(EVERY_KIND[0])
            await eventually(lambda: "Service" not in message(api, "Route", "front"))
            assert reason(api, "Route", "front") == "BackendNotFound"
            api.create(EVERY_KIND[1])
            await eventually(lambda: reason(api, "Route", "front") == "BackendNotServed")
            api.delete("Service", "default", "web")
            await eventually(lambda: reason(api, "Route", "front") == "BackendNotFound")

    run(body())


@pytest.mark.parametrize("manifest", [
    doc("Trigger", "t", {"broker": "events", "subscriber": {"uri": "http://localhost:1/"}}),
    doc("Function", "f", {"handler": "app:handle", "triggers": {"events": [{"broker": "events"}]}}),
    doc("Bucket", "b", {"notifications": [{"sink": {"broker": "events"}}]}),
    doc("Broker", "main", {"delivery": {"deadLetterSink": {"broker": "events"}}}),
], ids=lambda m: m["kind"])
def test_a_missing_broker_is_reported_until_it_exists(
        run: Run, api: ResourceService, running: Any, eventually: Any,
        manifest: dict[str, Any]) -> None:
    api.create(manifest)
    kind, name = manifest["kind"], manifest["metadata"]["name"]

    async def body() -> None:
        async with running(default_reconcilers(NO_DRIVERS)):
            await eventually(lambda: reason(api, kind, name) == "BrokerNotFound")
            assert "Broker default/events does not exist" in message(api, kind, name)
            api.create(doc("Broker", "events", {}))
            # Without an object store (as here) a Bucket says so once its Broker exists.
            after = "StorageUnavailable" if kind == "Bucket" else "Accepted"
            await eventually(lambda: reason(api, kind, name) == after)

    run(body())


def test_trigger_reports_a_missing_subscriber(run: Run, api: ResourceService, running: Any,
                                             eventually: Any) -> None:
    api.create(EVERY_KIND[4])
    api.create(EVERY_KIND[5])

    async def body() -> None:
        async with running(default_reconcilers(NO_DRIVERS)):
            await eventually(lambda: reason(api, "Trigger", "on-photo") == "SubscriberNotFound")
            api.create(EVERY_KIND[1])
            await eventually(lambda: reason(api, "Trigger", "on-photo") == "Accepted")

    run(body())


def test_env_from_a_missing_secret_or_key_is_config_not_found(
        run: Run, api: ResourceService, running: Any, eventually: Any) -> None:
    env = [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
           {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "y",
                                                              "optional": True}}}]
    api.create(doc("Service", "web", {**CMD, "env": env}))

    async def body() -> None:
        async with running(default_reconcilers(NO_DRIVERS)):
            await eventually(lambda: reason(api, "Service", "web") == "ConfigNotFound")
            assert message(api, "Service", "web") == (
                "spec.env[0].valueFrom.secretKeyRef: Secret default/db does not exist")
            api.create(doc("Secret", "db", stringData={"user": "app"}))
            await eventually(lambda: "has no key 'pw'" in message(api, "Service", "web"))
            api.patch({"stringData": {"pw": "s3cret"}}, kind="Secret", namespace="default",
                      name="db")
            await eventually(lambda: reason(api, "Service", "web") == "RuntimeUnavailable")

    run(body())


def test_cronjob_computes_its_next_run_and_looks_again_then(
        run: Run, api: ResourceService, running: Any, eventually: Any,
        clock: ManualClock) -> None:
    job = {"command": ["true"]}
    api.create(doc("CronJob", "often", {"schedule": "*/5 * * * *", "timeZone": "UTC",
                                        "jobTemplate": job}))
    api.create(doc("CronJob", "paris", {"schedule": "0 9 * * *", "timeZone": "Europe/Paris",
                                        "jobTemplate": job}))
    api.create(doc("CronJob", "mars", {"schedule": "0 9 * * *", "timeZone": "Mars/Olympus",
                                       "jobTemplate": job}))

    def next_run(name: str) -> str | None:
        return (api.get("CronJob", "default", name).get("status") or {}).get("nextScheduleTime")

    async def body() -> None:
        async with running(default_reconcilers(NO_DRIVERS), resync=None) as manager:
            # The manual clock starts at 2026-01-01T00:00:00Z.
            await eventually(lambda: manager.idle and next_run("often") and next_run("paris"))
            assert next_run("often") == "2026-01-01T00:05:00Z"
            assert next_run("paris") == "2026-01-01T08:00:00Z"  # 09:00 in Paris in winter
            assert manager.queue.due_in(Key("CronJob", "default", "often")) == 300
            clock.advance(300)
            await eventually(lambda: next_run("often") == "2026-01-01T00:10:00Z")
            assert next_run("paris") == "2026-01-01T08:00:00Z"

            await eventually(lambda: reason(api, "CronJob", "mars") == "InvalidTimeZone")
            assert "'Mars/Olympus' is not a known time zone" in message(api, "CronJob", "mars")
            assert manager.health()["parked"] == 1
            api.patch({"spec": {"timeZone": "UTC"}}, kind="CronJob", namespace="default",
                      name="mars")
            await eventually(lambda: next_run("mars") == "2026-01-01T09:00:00Z")
            assert manager.health()["parked"] == 0

    run(body())


def test_route_events_mark_its_transitions(run: Run, api: ResourceService, running: Any,
                                           eventually: Any) -> None:
    api.create(doc("Route", "front", {"rules": [{"backends": [{"name": "web"}]}]}))

    def seen() -> list[tuple[str, str]]:
        return [(e["type"], e["reason"]) for e in api.list("Event", "default")[0]
                if e["involvedObject"]["kind"] == "Route"]

    async def body() -> None:
        async with running(default_reconcilers(NO_DRIVERS)):
            await eventually(lambda: seen() == [("Warning", "BackendNotFound")], timeout=1)
            api.create(EVERY_KIND[0])
            await eventually(lambda: ("Normal", "Routed") in seen())
            # The Service was accepted on first sight: no news, no event.
            assert sorted(seen()) == [("Normal", "Routed"), ("Warning", "BackendNotFound")]

    run(body())
