"""Streaming watch: replay the change log from a revision, then follow live.

The subscription is taken before the backlog is read and live changes at or
below the last replayed revision are skipped, so a watcher sees every change
after its revision exactly once and in order.  A watcher too slow to keep up
gets an ERROR event (410) and reconnects from its last revision, losing
nothing because the log still has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from cloudland.api.service import ResourceService
from cloudland.errors import Gone
from cloudland.model.selectors import Selector
from cloudland.store import Change

QUEUE_LIMIT = 10_000
BOOKMARK_EVERY = 15.0


def _line(event_type: str, obj: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": event_type, "object": obj}) + b"\n"


async def watch_stream(
    service: ResourceService,
    kind: str | None,
    namespace: str | None,
    selector: Selector | None,
    since: int | None,
) -> AsyncIterator[bytes]:
    def wanted(change: Change) -> bool:
        if kind is not None and change.kind != kind:
            return False
        if namespace is not None and change.namespace != namespace:
            return False
        return selector is None or selector(change.object["metadata"].get("labels") or {})

    queue: asyncio.Queue[Change | None] = asyncio.Queue()  # None: overflowed
    overflow = False

    def notify(change: Change) -> None:
        nonlocal overflow
        if overflow or not wanted(change):
            return
        if queue.qsize() >= QUEUE_LIMIT:
            overflow = True
            queue.put_nowait(None)
            return
        queue.put_nowait(change)

    unsubscribe: Callable[[], None] = service.subscribe(notify)
    try:
        last = service.store.revision
        if since is None:
            # No revision: start with the current state, as Kubernetes does.
            kinds = [kind] if kind else _all_kinds()
            for k in kinds:
                items, _ = service.list(k, namespace, selector)
                for obj in items:
                    yield _line("ADDED", obj)
        else:
            try:
                backlog = service.store.changes_since(since)
            except Gone as err:
                yield _line("ERROR", err.to_dict())
                return
            for change in backlog:
                if wanted(change):
                    yield _line(change.type, change.object)
            last = max(since, backlog[-1].rv if backlog else since, last)
        yield _line("BOOKMARK", _bookmark(last))
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), BOOKMARK_EVERY)
            except TimeoutError:
                yield _line("BOOKMARK", _bookmark(max(last, service.store.revision)))
                continue
            if item is None:
                yield _line("ERROR", Gone(
                    "watch fell too far behind", hint="watch again from your last resourceVersion"
                ).to_dict())
                return
            if item.rv <= last:
                continue
            last = item.rv
            yield _line(item.type, item.object)
    finally:
        unsubscribe()


def _bookmark(rv: int) -> dict[str, Any]:
    return {"kind": "Bookmark", "metadata": {"resourceVersion": str(rv)}}


def _all_kinds() -> list[str]:
    from cloudland.model.kinds import KINDS

    return list(KINDS)
