"""The store's contract: versions, generations, concurrency, finalizers, history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudland.errors import AlreadyExists, Conflict, Gone, NotFound
from cloudland.model import parse_object
from cloudland.store import Change, Store


def cm(name: str, **data: str) -> dict[str, Any]:
    return parse_object({"apiVersion": "cloudland/v1", "kind": "ConfigMap",
                         "metadata": {"name": name}, "data": data})


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store.db")
    yield s
    s.close()


def test_create_assigns_identity_and_versions(store: Store) -> None:
    a = store.create(cm("a", x="1"))
    b = store.create(cm("b"))
    assert a["metadata"]["generation"] == 1
    assert a["metadata"]["uid"] != b["metadata"]["uid"]
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    assert store.get("ConfigMap", "default", "a") == a
    with pytest.raises(AlreadyExists):
        store.create(cm("a"))


def test_generation_moves_on_intent_only(store: Store) -> None:
    a = store.create(cm("a", x="1"))
    labelled = cm("a", x="1")
    labelled["metadata"]["labels"] = {"team": "web"}
    b = store.update(labelled)
    assert b["metadata"]["generation"] == 1  # labels are not intent
    c = store.update(cm("a", x="2"))
    assert c["metadata"]["generation"] == 2
    e = store.update({**c, "status": {"observedGeneration": 2}}, status=True)
    assert e["metadata"]["generation"] == 2 and e["status"] == {"observedGeneration": 2}
    assert e["data"] == {"x": "2"}
    assert a["metadata"]["uid"] == e["metadata"]["uid"]


def test_spec_write_preserves_status_and_noop_is_not_a_revision(store: Store) -> None:
    store.create(cm("a", x="1"))
    with_status = store.update({**cm("a"), "status": {"phase": "ok"}}, status=True)
    again = store.update(cm("a", x="1"))
    assert again["status"] == {"phase": "ok"}
    assert again["data"] == {"x": "1"}
    rv = again["metadata"]["resourceVersion"]
    assert store.update(cm("a", x="1"))["metadata"]["resourceVersion"] == rv
    assert with_status["metadata"]["resourceVersion"] != "1"


def test_stale_resource_version_conflicts(store: Store) -> None:
    a = store.create(cm("a", x="1"))
    stale = cm("a", x="2")
    stale["metadata"]["resourceVersion"] = a["metadata"]["resourceVersion"]
    store.update(stale)
    stale["data"] = {"x": "3"}
    with pytest.raises(Conflict) as err:
        store.update(stale)
    assert err.value.field == "metadata.resourceVersion"
    with pytest.raises(Conflict):
        store.delete("ConfigMap", "default", "a", rv=a["metadata"]["resourceVersion"])


def test_deletion_waits_for_finalizers(store: Store) -> None:
    obj = cm("a")
    obj["metadata"]["finalizers"] = ["cloudland.io/cleanup"]
    store.create(obj)
    marked = store.delete("ConfigMap", "default", "a")
    assert marked["metadata"]["deletionTimestamp"]
    assert store.get("ConfigMap", "default", "a") is not None
    done = {**marked, "metadata": {**marked["metadata"], "finalizers": []}}
    store.update(done)
    assert store.get("ConfigMap", "default", "a") is None
    assert store.changes_since(0)[-1].type == "DELETED"
    with pytest.raises(NotFound):
        store.delete("ConfigMap", "default", "a")


def test_transaction_is_all_or_nothing_and_notifies_after_commit(store: Store) -> None:
    seen: list[Change] = []
    store.subscribe(seen.append)
    with pytest.raises(AlreadyExists), store.transaction():
        store.create(cm("a"))
        assert seen == []  # nothing is announced before commit
        store.create(cm("a"))
    assert store.get("ConfigMap", "default", "a") is None
    assert seen == []
    before = store.revision
    with store.transaction():
        store.create(cm("a"))
        with pytest.raises(AlreadyExists), store.transaction():  # nested: savepoint
            store.create(cm("b"))
            store.create(cm("b"))
        store.create(cm("c"))
    assert [c.object["metadata"]["name"] for c in seen] == ["a", "c"]
    assert [c.rv for c in seen] == [before + 1, before + 2]


def test_changes_since_replays_in_order_and_survives_reopen(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    for i in range(5):
        s.create(cm(f"o{i}"))
    s.delete("ConfigMap", "default", "o0")
    rv = s.revision
    s.close()
    s = Store(tmp_path / "s.db")
    assert s.revision == rv
    changes = s.changes_since(2)
    assert [c.rv for c in changes] == list(range(3, rv + 1))
    assert changes[-1].type == "DELETED"
    assert s.check() == []
    s.close()


def test_compacted_history_is_gone(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db", history=10)
    for i in range(1100):
        s.create(cm(f"o{i}"))
    with pytest.raises(Gone):
        s.changes_since(5)
    assert len(s.changes_since(s.revision - 5)) == 5
    s.close()
