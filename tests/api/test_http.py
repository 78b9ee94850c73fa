"""The API over real HTTP against a real `cloudland up`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx

from cloudland.client import Client
from cloudland.errors import Conflict
from cloudland.model.kinds import KINDS
from cloudland.store import Store
from tests.conftest import Running

NS = "/apis/cloudland/v1/namespaces/default"


def cm(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"apiVersion": "cloudland/v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels or {}}, "data": data}


def test_crud_and_selectors(cloudland: Running) -> None:
    with cloudland.http() as http:
        r = http.post(f"{NS}/configmaps", json=cm("a", {"tier": "web"}, x="1"))
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["metadata"]["generation"] == 1
        http.post(f"{NS}/configmaps", json=cm("b", {"tier": "db"}))
        names = lambda q: [o["metadata"]["name"] for o in  # noqa: E731
                           http.get(f"{NS}/configmaps", params=q).json()["items"]]
        assert names({}) == ["a", "b"]
        assert names({"labelSelector": "tier=web"}) == ["a"]
        assert names({"labelSelector": "tier in (web,db),tier!=web"}) == ["b"]
        assert names({"labelSelector": "!tier"}) == []
        r = http.patch(f"{NS}/configmaps/a", json={"data": {"y": "2"}},
                       headers={"content-type": "application/merge-patch+json"})
        assert r.json()["data"] == {"x": "1", "y": "2"}
        assert r.json()["metadata"]["generation"] == 2
        replaced = {**r.json(), "data": {"z": "3"}}
        del replaced["metadata"]["resourceVersion"]  # controllers may have written status
        r = http.put(f"{NS}/configmaps/a", json=replaced)
        assert r.status_code == 200 and r.json()["data"] == {"z": "3"}
        assert http.delete(f"{NS}/configmaps/a").status_code == 200
        r = http.get(f"{NS}/configmaps/a")
        assert r.status_code == 404 and r.json()["reason"] == "NotFound"


def test_one_error_shape_for_every_bad_request(cloudland: Running) -> None:
    with cloudland.http() as http:
        bad = cm("a")
        bad["data"] = {"x": 1}
        bad["metadata"]["nmae"] = "x"
        r = http.post(f"{NS}/configmaps", json=bad)
        assert r.status_code == 422
        body = r.json()
        assert body["reason"] == "Invalid"
        fields = {c["field"] for c in body["causes"]}
        assert fields == {"metadata.nmae", "data.x"}
        assert "did you mean 'name'" in json.dumps(body)

        cases = [
            (http.post(f"{NS}/configmaps", content=b"{not json"), 400, "BadRequest"),
            (http.post(f"{NS}/configmaps", content=b"a: b",
                       headers={"content-type": "application/yaml"}), 415,
             "UnsupportedMediaType"),
            (http.post(f"{NS}/configmaps", content=b"x" * (9 * 1024 * 1024)), 413,
             "RequestEntityTooLarge"),
            (http.post("/apis/cloudland/v1/namespaces/other/configmaps",
                       json={**cm("a"), "metadata": {"name": "a", "namespace": "default"}}),
             400, "BadRequest"),
            (http.get("/apis/cloudland/v1/nothings"), 404, "NotFound"),
            (http.get(f"{NS}/configmaps", params={"labelSelector": "a in b"}), 400,
             "BadRequest"),
            (http.post(f"{NS}/events", json={"apiVersion": "cloudland/v1", "kind": "Event"}),
             422, "Invalid"),
        ]
        for response, status, reason in cases:
            assert response.status_code == status, response.text
            err = response.json()
            assert err["reason"] == reason and err["code"] == status and err["message"]
        r = http.post(f"{NS}/services", json={
            "apiVersion": "cloudland/v1", "kind": "Service", "metadata": {"name": "Bad_Name"},
            "spec": {"command": ["x"]}})
        assert r.status_code == 422 and r.json()["field"] == "metadata.name"


def test_conflicting_writers_get_409_and_lose_nothing(cloudland: Running) -> None:
    client = Client(cloudland.api)
    client.create(cm("counter", n="0"))
    # Two writers read the same version; exactly one write wins.
    first = client.get("ConfigMap", "default", "counter")
    second = json.loads(json.dumps(first))
    first["data"]["n"] = "1"
    client.replace(first)
    second["data"]["n"] = "99"
    try:
        client.replace(second)
        raise AssertionError("stale write was accepted")
    except Conflict as err:
        assert err.status == 409 and err.field == "metadata.resourceVersion"

    # Many writers doing read-modify-write with retry: every increment lands.
    conflicts = 0
    lock = threading.Lock()

    def writer() -> None:
        nonlocal conflicts
        c = Client(cloudland.api)
        for _ in range(15):
            while True:
                obj = c.get("ConfigMap", "default", "counter")
                obj["data"]["n"] = str(int(obj["data"]["n"]) + 1)
                try:
                    c.replace(obj)
                    break
                except Conflict:
                    with lock:
                        conflicts += 1
        c.close()

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    final = client.get("ConfigMap", "default", "counter")
    assert final["data"]["n"] == str(1 + 8 * 15)
    client.close()


def test_status_subresource_is_separate_from_intent(cloudland: Running) -> None:
    with cloudland.http() as http:
        http.post(f"{NS}/configmaps", json=cm("s", x="1"))
        r = http.put(f"{NS}/configmaps/s/status", json={"status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Done"}]}})
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"x": "1"}
        # A spec write cannot touch status, and keeps the status that is there.
        body = {**cm("s", x="2"), "status": {"observedGeneration": 42}}
        r = http.put(f"{NS}/configmaps/s", json=body)
        assert r.json()["status"]["observedGeneration"] == 1
        r = http.put(f"{NS}/configmaps/s/status", json={"status": {"conditions": [
            {"type": "Ready", "status": "maybe"}]}})
        assert r.status_code == 422 and r.json()["field"].startswith("status.conditions")


def test_watch_resumes_without_gaps_or_duplicates(cloudland: Running) -> None:
    """Events seen across a reconnect are exactly the store's change log."""
    with cloudland.http() as http:
        start = http.get(f"{NS}/configmaps").json()["metadata"]["resourceVersion"]
        http.post(f"{NS}/configmaps", json=cm("w1"))
        params = {"watch": "true", "resourceVersion": start}
        with http.stream("GET", f"{NS}/configmaps", params=params,
                         timeout=httpx.Timeout(10, read=10)) as stream:
            lines = stream.iter_lines()
            got = _read_until(lines, ("ADDED", "w1"))
            http.post(f"{NS}/configmaps", json=cm("w2"))
            got += _read_until(lines, ("ADDED", "w2"))
        last = got[-1]["object"]["metadata"]["resourceVersion"]
        # While disconnected: more changes, including a delete.
        http.post(f"{NS}/configmaps", json=cm("w3"))
        http.delete(f"{NS}/configmaps/w1")
        params["resourceVersion"] = last
        with http.stream("GET", f"{NS}/configmaps", params=params,
                         timeout=httpx.Timeout(10, read=10)) as stream:
            got += _read_until(stream.iter_lines(), ("DELETED", "w1"))
    seen = [(int(e["object"]["metadata"]["resourceVersion"]), e["type"]) for e in got]
    assert [rv for rv, _ in seen] == sorted({rv for rv, _ in seen}), "duplicates or disorder"
    store = Store(cloudland.home / "store.db")
    try:
        logged = [(c.rv, c.type) for c in store.changes_since(int(start))
                  if c.kind == "ConfigMap" and c.rv <= seen[-1][0]]
    finally:
        store.close()
    assert seen == logged


def _read_until(lines: Iterator[str], wanted: tuple[str, str]) -> list[dict[str, Any]]:
    events = []
    for line in lines:
        event = json.loads(line)
        if event["type"] == "BOOKMARK":
            continue
        events.append(event)
        if (event["type"], event["object"]["metadata"]["name"]) == wanted:
            return events
    raise AssertionError(f"stream ended before {wanted}")


def test_watch_without_version_starts_with_current_state(cloudland: Running) -> None:
    client = Client(cloudland.api)
    client.create(cm("pre"))
    events = client.watch("ConfigMap", "default")
    first = next(events)
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "pre")
    client.create(cm("post"))
    second = next(events)
    assert (second["type"], second["object"]["metadata"]["name"]) == ("ADDED", "post")
    events.close()
    client.close()


def test_openapi_describes_every_kind(cloudland: Running) -> None:
    with cloudland.http() as http:
        spec = http.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for kind in ("Service", "Function", "Route", "Bucket", "Broker", "Trigger", "Secret",
                 "ConfigMap", "Policy", "Job", "CronJob"):
        assert kind in schemas
        path = f"/apis/cloudland/v1/namespaces/{{namespace}}/{KINDS[kind].plural}"
        assert {"get", "post"} <= set(spec["paths"][path])
    assert schemas["ServiceSpec"]["additionalProperties"] is False
