"""Versioned resource CRUD on SQLite with a change log that watches replay.

Every write takes the next global revision (like etcd's), stores the object
with that `resourceVersion`, and appends a row to `changes`.  Watchers resume
from any revision still in the log: they get exactly the changes after it, in
order, none twice.  Subscribers are told after the outermost transaction
commits, so nobody ever sees a write that was rolled back.

The store is used from one thread (the daemon's event loop).  Each operation is
a handful of indexed SQLite statements (tens of microseconds), cheaper than a
hop to a worker thread.  WAL with synchronous=NORMAL survives a kill -9 of the
process with every committed write; set CLOUDLAND_STORE_SYNC=full to also
survive power loss at the cost of an fsync per commit.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from cloudland.errors import AlreadyExists, Conflict, Gone, NotFound
from cloudland.model.kinds import KINDS
from cloudland.model.selectors import Selector
from cloudland.store.migrations import migrate

Object = dict[str, Any]


@dataclass(frozen=True)
class Change:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    object: Object

    @property
    def kind(self) -> str:
        return str(self.object["kind"])

    @property
    def namespace(self) -> str:
        return str(self.object["metadata"]["namespace"])


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dumps(obj: Object) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


class Store:
    def __init__(self, path: Path | str, *, history: int = 100_000) -> None:
        self.path = str(path)
        self.history = history
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        sync = "FULL" if os.environ.get("CLOUDLAND_STORE_SYNC") == "full" else "NORMAL"
        self._db.execute(f"PRAGMA synchronous={sync}")
        self._db.execute("PRAGMA busy_timeout=5000")
        migrate(self._db)
        # Checkpoints copy the WAL into the database file and fsync it: tens of
        # milliseconds that would stall the event loop inside some unlucky commit.
        # A background thread with its own connection does them instead.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = _Checkpointer(self.path)
        row = self._db.execute("SELECT max(rv) FROM changes").fetchone()
        compacted = self._meta("compacted")
        self._revision = max(row[0] or 0, compacted)
        self._depth = 0
        self._pending: builtins.list[Change] = []
        self._subscribers: builtins.list[Callable[[Change], None]] = []
        self._writes_since_compact = 0

    # ---- lifecycle and transactions ------------------------------------------

    def close(self) -> None:
        self._checkpointer.stop()
        self._db.close()

    @property
    def revision(self) -> int:
        return self._revision

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all; nests via savepoints."""
        outer = self._depth == 0
        savepoint = f"sp{self._depth}"
        start_rev, start_pending = self._revision, len(self._pending)
        self._db.execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {savepoint}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            self._db.execute("ROLLBACK" if outer else f"ROLLBACK TO {savepoint}")
            if not outer:
                self._db.execute(f"RELEASE {savepoint}")
            self._revision = start_rev
            del self._pending[start_pending:]
            raise
        self._depth -= 1
        if not outer:
            self._db.execute(f"RELEASE {savepoint}")
            return
        self._db.execute("COMMIT")
        pending, self._pending = self._pending, []
        for change in pending:
            for notify in list(self._subscribers):
                notify(change)
        self._maybe_compact(len(pending))

    def subscribe(self, notify: Callable[[Change], None]) -> Callable[[], None]:
        """Call `notify` with each committed change; returns the unsubscribe function."""
        self._subscribers.append(notify)
        return lambda: self._subscribers.remove(notify) if notify in self._subscribers else None

    # ---- reads ----------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> Object | None:
        row = self._db.execute(
            "SELECT body FROM resources WHERE kind=? AND namespace=? AND name=?",
            (kind, namespace, name),
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    def list(
        self, kind: str, namespace: str | None = None, selector: Selector | None = None
    ) -> tuple[builtins.list[Object], int]:
        """Objects of a kind (in one namespace or all), sorted, and the revision read at."""
        if namespace is None:
            rows = self._db.execute(
                "SELECT body FROM resources WHERE kind=? ORDER BY namespace, name", (kind,)
            )
        else:
            rows = self._db.execute(
                "SELECT body FROM resources WHERE kind=? AND namespace=? ORDER BY name",
                (kind, namespace),
            )
        items = [orjson.loads(r[0]) for r in rows]
        if selector is not None:
            items = [o for o in items if selector(o["metadata"].get("labels") or {})]
        return items, self._revision

    def counts(self) -> dict[str, int]:
        """How many objects of each kind are stored (kinds with none are absent)."""
        rows = self._db.execute("SELECT kind, COUNT(*) FROM resources GROUP BY kind")
        return {str(kind): int(n) for kind, n in rows}

    def changes_since(self, rv: int) -> builtins.list[Change]:
        """Every change after revision `rv`; Gone if some were compacted away."""
        if rv < self._meta("compacted"):
            raise Gone(
                f"resourceVersion {rv} is too old (history starts after "
                f"{self._meta('compacted')})",
                field="resourceVersion",
                hint="list again and watch from the list's resourceVersion",
            )
        rows = self._db.execute(
            "SELECT rv, type, body FROM changes WHERE rv > ? ORDER BY rv", (rv,)
        )
        return [Change(r[0], r[1], orjson.loads(r[2])) for r in rows]

    # ---- writes ---------------------------------------------------------------

    def create(self, obj: Object) -> Object:
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        with self.transaction():
            if self.get(*key) is not None:
                raise AlreadyExists(
                    f"{key[0]} {key[1]}/{key[2]} already exists",
                    field="metadata.name",
                    hint="use apply or replace to change it",
                )
            new = dict(obj)
            new["metadata"] = {
                **meta,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": now_rfc3339(),
            }
            new["metadata"].pop("deletionTimestamp", None)
            new.pop("status", None)
            return self._write("ADDED", new)

    def update(self, obj: Object, *, status: bool = False) -> Object:
        """Replace an object's intent (or, with status=True, only its status).

        A `metadata.resourceVersion` in `obj` must match the stored one (409 if
        not).  Server-owned fields are kept; generation moves only when a spec
        field changes; a write that changes nothing is not a new revision.
        """
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        with self.transaction():
            current = self.get(*key)
            if current is None:
                raise NotFound.object(*key)
            self._check_version(current, meta.get("resourceVersion"))
            if status:
                new = {**current, "status": obj.get("status") or {}}
            else:
                new = self._merge_intent(current, obj)
            if _same(new, current):
                return current
            cur_meta = new["metadata"]
            if cur_meta.get("deletionTimestamp") and not cur_meta.get("finalizers"):
                return self._remove(new)
            return self._write("MODIFIED", new)

    def delete(self, kind: str, namespace: str, name: str, *, rv: str | None = None) -> Object:
        """Remove an object, or mark it deleting while finalizers remain."""
        with self.transaction():
            current = self.get(kind, namespace, name)
            if current is None:
                raise NotFound.object(kind, namespace, name)
            self._check_version(current, rv)
            meta = current["metadata"]
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return current
                new = {**current, "metadata": {**meta, "deletionTimestamp": now_rfc3339()}}
                return self._write("MODIFIED", new)
            return self._remove(current)

    # ---- internals ------------------------------------------------------------

    def _merge_intent(self, current: Object, obj: Object) -> Object:
        spec_fields = KINDS[obj["kind"]].spec_fields
        new = {k: v for k, v in obj.items() if k != "status"}
        if "status" in current:
            new["status"] = current["status"]
        meta = dict(obj["metadata"])
        cur_meta = current["metadata"]
        for owned in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
            if owned in cur_meta:
                meta[owned] = cur_meta[owned]
            else:
                meta.pop(owned, None)
        meta.pop("resourceVersion", None)
        if any(current.get(f) != new.get(f) for f in spec_fields):
            meta["generation"] = int(cur_meta.get("generation", 1)) + 1
        new["metadata"] = meta
        return new

    @staticmethod
    def _check_version(current: Object, rv: str | None) -> None:
        if rv is not None and str(rv) != current["metadata"]["resourceVersion"]:
            name = current["metadata"]["name"]
            raise Conflict(
                f"{current['kind']} {current['metadata']['namespace']}/{name} was changed by "
                f"someone else (you had resourceVersion {rv}, it is now "
                f"{current['metadata']['resourceVersion']})",
                field="metadata.resourceVersion",
                hint="read it again, reapply your change, and retry",
            )

    def _next_rv(self) -> int:
        self._revision += 1
        return self._revision

    def _write(self, change_type: str, obj: Object) -> Object:
        rv = self._next_rv()
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}
        meta = obj["metadata"]
        body = _dumps(obj)
        self._db.execute(
            "INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?, ?)",
            (obj["kind"], meta["namespace"], meta["name"], rv, body),
        )
        self._log(rv, change_type, obj, body)
        return obj

    def _remove(self, obj: Object) -> Object:
        rv = self._next_rv()
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}
        meta = obj["metadata"]
        self._db.execute(
            "DELETE FROM resources WHERE kind=? AND namespace=? AND name=?",
            (obj["kind"], meta["namespace"], meta["name"]),
        )
        self._log(rv, "DELETED", obj, _dumps(obj))
        return obj

    def _log(self, rv: int, change_type: str, obj: Object, body: bytes) -> None:
        self._db.execute(
            "INSERT INTO changes VALUES (?, ?, ?, ?, ?)",
            (rv, change_type, obj["kind"], obj["metadata"]["namespace"], body),
        )
        self._pending.append(Change(rv, change_type, obj))

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _maybe_compact(self, writes: int) -> None:
        """Trim the change log to the last `history` revisions, now and then."""
        self._writes_since_compact += writes
        if self._writes_since_compact < 1000:
            return
        self._writes_since_compact = 0
        floor = self._revision - self.history
        if floor <= self._meta("compacted"):
            return
        with self.transaction():
            self._db.execute("DELETE FROM changes WHERE rv <= ?", (floor,))
            self._db.execute("UPDATE meta SET value=? WHERE key='compacted'", (floor,))

    def check(self) -> builtins.list[str]:
        """Consistency problems, if any (used after crashes and by tests)."""
        problems = [r[0] for r in self._db.execute("PRAGMA integrity_check") if r[0] != "ok"]
        for kind, ns, name, rv, body in self._db.execute("SELECT * FROM resources"):
            obj = orjson.loads(body)
            if obj["metadata"]["resourceVersion"] != str(rv) or rv > self._revision:
                problems.append(f"{kind} {ns}/{name}: resourceVersion {rv} out of step")
        return problems


class _Checkpointer(threading.Thread):
    """Runs PASSIVE WAL checkpoints off the writer's thread, never blocking it."""

    def __init__(self, path: str, interval: float = 0.5, min_bytes: int = 4 << 20) -> None:
        super().__init__(name="store-checkpointer", daemon=True)
        self.path, self.interval, self.min_bytes = path, interval, min_bytes
        self._stopping = threading.Event()
        self.start()

    def run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stopping.wait(self.interval):
                try:
                    if os.path.getsize(self.path + "-wal") >= self.min_bytes:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except (OSError, sqlite3.Error):
                    continue  # retried next round; a busy database is not a failure
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass
        finally:
            db.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)


def _same(a: Object, b: Object) -> bool:
    strip = ("resourceVersion",)
    am = {k: v for k, v in a["metadata"].items() if k not in strip}
    bm = {k: v for k, v in b["metadata"].items() if k not in strip}
    return am == bm and {k: v for k, v in a.items() if k != "metadata"} == {
        k: v for k, v in b.items() if k != "metadata"
    }
