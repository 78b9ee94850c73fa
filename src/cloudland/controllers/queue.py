"""The controllers' work queue: deduplicated keys, one run per key at a time, backoff.

Modelled on client-go's workqueue.  A key is queued at most once however often
it is added; a key added while a worker processes it is queued again when that
run ends (`done`), so one key never runs twice at once while different keys
run in parallel on as many workers as call `get`.  Delayed adds wait on the
injected Clock, and the earliest pending delay for a key wins; an immediate
add supersedes a delayed one, because the run it causes decides when to look
next.  `RateLimiter` gives each key its own exponential backoff, reset by
`forget` after a success.  Used by `controllers.manager`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from cloudland.controllers.clock import Clock, Timer

K = TypeVar("K", bound=Hashable)


class RateLimiter(Generic[K]):
    """Per-key exponential backoff: base, 2*base, 4*base ... up to cap."""

    def __init__(self, base: float = 0.005, cap: float = 300.0) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"backoff needs 0 < base <= cap (got base={base}, cap={cap})")
        self.base = base
        self.cap = cap
        self._failures: dict[K, int] = {}

    def when(self, key: K) -> float:
        """The delay before the next retry of `key`; counts one more failure."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return min(self.base * 2 ** min(n, 64), self.cap)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)


class WorkQueue(Generic[K]):
    def __init__(self, clock: Clock, limiter: RateLimiter[K] | None = None) -> None:
        self.clock = clock
        self.limiter: RateLimiter[K] = limiter or RateLimiter()
        self._ready: deque[K] = deque()
        self._queued: set[K] = set()  # in _ready
        self._processing: set[K] = set()  # handed to a worker, not yet done
        self._dirty: set[K] = set()  # added while processing: queue again when done
        self._delayed: dict[K, tuple[float, Timer]] = {}
        self._available = asyncio.Semaphore(0)  # counts _ready
        self._shut = False

    # ---- adding -----------------------------------------------------------------

    def add(self, key: K, after: float = 0.0) -> None:
        """Queue `key` now, or once `after` seconds have passed."""
        if self._shut:
            return
        if after > 0:
            self._add_later(key, after)
            return
        pending = self._delayed.pop(key, None)
        if pending is not None:
            pending[1].cancel()
        if key in self._queued:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        self._ready.append(key)
        self._queued.add(key)
        self._available.release()

    def add_rate_limited(self, key: K) -> float:
        """Queue `key` after its next backoff delay; returns that delay."""
        delay = self.limiter.when(key)
        self.add(key, after=delay)
        return delay

    def forget(self, key: K) -> None:
        """Reset the backoff of `key` (after it succeeded or went away)."""
        self.limiter.forget(key)

    def _add_later(self, key: K, after: float) -> None:
        due = self.clock.monotonic() + after
        pending = self._delayed.get(key)
        if pending is not None:
            if pending[0] <= due:
                return
            pending[1].cancel()

        def fire() -> None:
            if self._delayed.get(key, (None, None))[1] is timer:
                del self._delayed[key]
                self.add(key)

        timer = self.clock.call_later(after, fire)
        self._delayed[key] = (due, timer)

    # ---- processing ---------------------------------------------------------------

    async def get(self) -> K:
        """Wait for a key; the caller owns it until it calls `done(key)`."""
        await self._available.acquire()
        key = self._ready.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def shutdown(self) -> None:
        """Cancel every delayed add and ignore adds from now on."""
        self._shut = True
        for _, timer in self._delayed.values():
            timer.cancel()
        self._delayed.clear()

    # ---- inspection ------------------------------------------------------------------

    def __len__(self) -> int:
        """Keys ready to run now."""
        return len(self._ready)

    @property
    def waiting(self) -> int:
        """Keys waiting for a delay (backoff or requeue-after) to pass."""
        return len(self._delayed)

    @property
    def processing(self) -> int:
        return len(self._processing)

    def due_in(self, key: K) -> float | None:
        """Seconds until a delayed `key` is queued, or None if it is not waiting."""
        pending = self._delayed.get(key)
        return None if pending is None else pending[0] - self.clock.monotonic()
