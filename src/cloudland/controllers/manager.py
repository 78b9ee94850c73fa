"""The controller manager: watches the store, queues keys, runs reconcilers, handles outcomes.

`daemon/` creates one Manager with `registry.default_reconcilers()`, awaits
`start()` and, on shutdown, `stop()`.  Starting lists every object of every
registered kind and queues it, so a restart is just reconciling again; after
that every committed change queues its key.  Changes that only touch status
(or resourceVersion) are ignored, so a controller's own status write does not
wake it again.  A periodic resync queues everything as a safety net.  The
outcome of each reconcile is handled here (see `controllers.base`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from cloudland.api.service import Change, ResourceService
from cloudland.controllers.base import Key, PermanentError, Reconciler, TemporaryError, Watching
from cloudland.controllers.clock import Clock, LoopClock, Timer
from cloudland.controllers.context import ConditionStatus, Context, get_condition
from cloudland.controllers.queue import RateLimiter, WorkQueue
from cloudland.model.kinds import KINDS

Object = dict[str, Any]
ERROR_REASON = "ReconcileError"
ConditionSpec = tuple[str, ConditionStatus, str, str]  # type, status, reason, message

log = logging.getLogger("cloudland.controllers")


def _intent(obj: Object) -> tuple[Any, ...]:
    """What a change must touch to be worth a reconcile: anything but status."""
    meta = obj["metadata"]
    return (meta.get("uid"), meta.get("generation"), meta.get("deletionTimestamp"),
            tuple(meta.get("finalizers") or ()),
            json.dumps([meta.get("labels"), meta.get("annotations")], sort_keys=True))


class Manager:
    def __init__(self, api: ResourceService, reconcilers: Iterable[Reconciler], *,
                 workers: int = 4, resync: float | None = 300.0, clock: Clock | None = None,
                 backoff_base: float = 0.005, backoff_cap: float = 300.0) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.api = api
        self.clock: Clock = clock or LoopClock()
        self.ctx = Context(api, self.clock)
        self.ctx.enqueue = self.enqueue
        self.queue: WorkQueue[Key] = WorkQueue(self.clock, RateLimiter(backoff_base, backoff_cap))
        self.workers = workers
        self.resync = resync
        self._reconcilers: dict[str, Reconciler] = {}
        self._dependents: dict[str, set[str]] = {}  # watched kind -> kinds to requeue
        for rec in reconcilers:
            if rec.kind not in KINDS:
                raise ValueError(f"reconciler {type(rec).__name__}: unknown kind '{rec.kind}'; "
                                 f"known kinds: {', '.join(KINDS)}")
            if rec.kind in self._reconcilers:
                raise ValueError(f"two reconcilers for {rec.kind}: "
                                 f"{type(self._reconcilers[rec.kind]).__name__} and "
                                 f"{type(rec).__name__}; register one per kind")
            self._reconcilers[rec.kind] = rec
            for watched in rec.watches if isinstance(rec, Watching) else ():
                self._dependents.setdefault(watched, set()).add(rec.kind)
        self._seen: dict[Key, tuple[Any, ...]] = {}
        self._parked: dict[Key, int | None] = {}  # PermanentError at this generation
        self._errors: dict[Key, str] = {}  # last unexpected error of a failing key
        self._fanout: set[str] = set()
        self._fanout_handle: asyncio.Handle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._resync_timer: Timer | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0

    # ---- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Watch the store, queue every existing object, and start the workers."""
        if self._tasks or self._stopped:
            raise RuntimeError("a controller manager starts once; create a new one to restart")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        # Subscribe before listing, so nothing committed in between is missed.
        self._unsubscribe = self.api.subscribe(self._on_change)
        self._queue_all()
        self._tasks = [asyncio.create_task(self._work(), name=f"controller-worker-{i}")
                       for i in range(self.workers)]
        self._schedule_resync()
        log.info("controllers started: %d kinds, %d workers, %d objects queued",
                 len(self._reconcilers), self.workers, len(self.queue))

    async def stop(self) -> None:
        """Stop watching and cancel the workers; returns once none is left running."""
        self._stopped = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._resync_timer is not None:
            self._resync_timer.cancel()
        if self._fanout_handle is not None:
            self._fanout_handle.cancel()
            self._fanout_handle, self._fanout = None, set()
        self.queue.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def health(self) -> dict[str, Any]:
        alive = sum(not t.done() for t in self._tasks)
        return {"healthy": alive == self.workers, "workers": alive, "queued": len(self.queue),
                "waiting": self.queue.waiting, "processing": self.queue.processing,
                "failing": len(self._errors), "parked": len(self._parked)}

    @property
    def idle(self) -> bool:
        """Nothing is queued to run now or running (delayed retries may be pending)."""
        return not (len(self.queue) or self.queue.processing or self._fanout)

    def enqueue(self, key: Key, after: float = 0.0) -> None:
        """Ask for a reconcile of `key`, e.g. when a runtime reports a process exit."""
        self.queue.add(key, after)

    # ---- sources of keys ------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        if threading.get_ident() != self._thread and self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_change, change)
            return
        if change.kind not in self._reconcilers and change.kind not in self._dependents:
            return
        obj = change.object
        key = Key(change.kind, change.namespace, obj["metadata"]["name"])
        if change.type == "DELETED":
            self._seen.pop(key, None)
            self._parked.pop(key, None)
        else:
            intent = _intent(obj)
            if self._seen.get(key) == intent:
                return  # only status or resourceVersion moved
            self._seen[key] = intent
        if key.kind in self._reconcilers:
            self.queue.add(key)
        if key.kind in self._dependents and self._loop is not None:
            # Coalesce: one commit of many Services lists the Routes once.
            self._fanout |= self._dependents[key.kind]
            if self._fanout_handle is None:
                self._fanout_handle = self._loop.call_soon(self._flush_fanout)

    def _flush_fanout(self) -> None:
        kinds, self._fanout, self._fanout_handle = self._fanout, set(), None
        self._queue_all(kinds)

    def _queue_all(self, kinds: Iterable[str] | None = None) -> None:
        watched = set(self._reconcilers) | set(self._dependents)
        for kind in watched if kinds is None else kinds:
            items, _ = self.api.list(kind)
            for obj in items:
                key = Key(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
                self._seen[key] = _intent(obj)
                if kind in self._reconcilers:
                    self.queue.add(key)

    def _schedule_resync(self) -> None:
        if self.resync:
            self._resync_timer = self.clock.call_later(self.resync, self._resync)

    def _resync(self) -> None:
        self._queue_all()
        self._schedule_resync()

    # ---- running reconciles -------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self._process(key)
            except Exception:  # a worker must outlive any failure, e.g. of the store
                log.exception("%s: could not be processed", key)
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    async def _process(self, key: Key) -> None:
        # The generation is read before the reconcile, so a spec edited while it
        # runs is never mistaken for the one that failed permanently.
        obj = self.ctx.find(key)
        generation = obj["metadata"].get("generation") if obj else None
        if key in self._parked:
            if (obj is not None and not obj["metadata"].get("deletionTimestamp")
                    and generation == self._parked[key]):
                return  # failed permanently at this generation; wait for a spec change
            del self._parked[key]
        try:
            result = await self._reconcilers[key.kind].reconcile(key, self.ctx)
        except PermanentError as err:
            log.warning("%s: %s (not retried until its spec changes)", key, err.message)
            self.queue.forget(key)
            if obj is not None:
                self._park(key, err, generation)
        except TemporaryError as err:
            delay = self.queue.limiter.when(key) if err.delay is None else err.delay
            log.info("%s: %s (retrying in %.3gs)", key, err.message, delay)
            self.queue.add(key, after=delay)
        except Exception as err:  # the reconcile boundary: report, back off, retry
            delay = self.queue.add_rate_limited(key)
            self._report_error(key, err, delay)
        else:
            self.queue.forget(key)
            if key in self._errors:
                self._recovered(key)
            if result is not None and result.requeue_after is not None:
                self.queue.add(key, after=result.requeue_after)

    def _report_error(self, key: Key, err: Exception, delay: float) -> None:
        message = f"{type(err).__name__}: {err}"
        if self._errors.get(key) == message:
            log.warning("%s: reconcile failed again (%s); retrying in %.3gs", key, message, delay)
            return
        self._errors[key] = message
        log.error("%s: reconcile failed; retrying in %.3gs", key, delay, exc_info=err)
        self._update_conditions(key, ("Degraded", "True", ERROR_REASON, message))

    def _recovered(self, key: Key) -> None:
        del self._errors[key]
        obj = self.ctx.find(key)
        bad = get_condition(obj.get("status") or {}, "Degraded") if obj else None
        if bad and bad["status"] == "True" and bad["reason"] == ERROR_REASON:
            self._update_conditions(key, ("Degraded", "False", "ReconcileSucceeded", ""))

    def _park(self, key: Key, err: PermanentError, generation: int | None) -> None:
        self._parked[key] = generation
        conditions: list[ConditionSpec] = [("Ready", "False", err.reason, err.message),
                                           ("Progressing", "False", err.reason, "")]
        if self._errors.pop(key, None) is not None:
            conditions.append(("Degraded", "False", "ReconcileStopped",
                               "the last error is permanent; see Ready"))
        self._update_conditions(key, *conditions, observed=generation)

    def _update_conditions(self, key: Key, *conditions: ConditionSpec,
                           observed: int | None = None) -> None:
        """Status written on a reconciler's behalf; a failure here is only logged."""
        try:
            obj = self.ctx.find(key)
            if obj is None:
                return
            generation = observed or obj["metadata"].get("generation")
            status = self.ctx.status_of(obj)
            if observed is not None:
                status["observedGeneration"] = observed
            for type_, value, reason, message in conditions:
                self.ctx.set_condition(status, type_, value, reason, message, generation)
            self.ctx.write_status(obj, status)
        except Exception:
            log.exception("%s: could not write status", key)
