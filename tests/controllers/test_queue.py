"""The work queue on its own: dedupe, per-key serial, delays and backoff on a manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from cloudland.controllers import ManualClock
from cloudland.controllers.queue import RateLimiter, WorkQueue

Run = Callable[[Coroutine[Any, Any, None]], None]


async def take(queue: WorkQueue[str]) -> str | None:
    """The next ready key, or None if nothing is ready (never blocks)."""
    if not len(queue):
        return None
    return await asyncio.wait_for(queue.get(), 1)


def test_a_key_added_many_times_is_queued_once(run: Run, clock: ManualClock) -> None:
    async def body() -> None:
        queue: WorkQueue[str] = WorkQueue(clock)
        for key in ("a", "b", "a", "a", "b"):
            queue.add(key)
        assert len(queue) == 2
        assert [await take(queue), await take(queue), await take(queue)] == ["a", "b", None]

    run(body())


def test_a_key_added_while_processing_runs_again_after_done(run: Run,
                                                            clock: ManualClock) -> None:
    async def body() -> None:
        queue: WorkQueue[str] = WorkQueue(clock)
        queue.add("a")
        assert await take(queue) == "a"
        queue.add("a")
        queue.add("a")
        assert await take(queue) is None, "a key must not be handed out while it is processing"
        assert queue.processing == 1
        queue.done("a")
        assert await take(queue) == "a"
        queue.done("a")
        assert await take(queue) is None

    run(body())


def test_get_waits_for_a_key(run: Run, clock: ManualClock) -> None:
    async def body() -> None:
        queue: WorkQueue[str] = WorkQueue(clock)
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        assert not getter.done()
        queue.add("a")
        assert await asyncio.wait_for(getter, 1) == "a"

    run(body())


def test_delayed_add_waits_for_the_clock_and_the_earliest_delay_wins(
        run: Run, clock: ManualClock) -> None:
    async def body() -> None:
        queue: WorkQueue[str] = WorkQueue(clock)
        queue.add("a", after=10)
        queue.add("a", after=30)  # later than the pending one: ignored
        queue.add("a", after=5)  # earlier: replaces it
        assert (len(queue), queue.waiting, queue.due_in("a")) == (0, 1, 5)
        clock.advance(4.9)
        assert len(queue) == 0
        clock.advance(0.1)
        assert (len(queue), queue.waiting) == (1, 0)
        assert clock.pending() == []

    run(body())


def test_an_immediate_add_supersedes_a_delayed_one(run: Run, clock: ManualClock) -> None:
    async def body() -> None:
        queue: WorkQueue[str] = WorkQueue(clock)
        queue.add("a", after=10)
        queue.add("a")
        assert (len(queue), queue.waiting, clock.pending()) == (1, 0, [])

    run(body())


def test_shutdown_cancels_delays_and_ignores_adds(run: Run, clock: ManualClock) -> None:
    async def body() -> None:
        queue: WorkQueue[str] = WorkQueue(clock)
        queue.add("a", after=10)
        queue.shutdown()
        queue.add("b")
        clock.advance(20)
        assert (len(queue), queue.waiting, clock.pending()) == (0, 0, [])

    run(body())


def test_backoff_doubles_per_key_up_to_the_cap_and_resets_on_forget() -> None:
    limiter: RateLimiter[str] = RateLimiter(base=0.005, cap=300.0)
    delays = [limiter.when("a") for _ in range(18)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[15] == pytest.approx(163.84)
    assert delays[16:] == [300.0, 300.0]
    assert limiter.when("b") == 0.005, "each key backs off on its own"
    limiter.forget("a")
    assert (limiter.failures("a"), limiter.when("a")) == (0, 0.005)
    for _ in range(200):  # no overflow however long a key keeps failing
        assert limiter.when("c") <= 300.0


def test_rate_limited_add_uses_the_backoff(run: Run, clock: ManualClock) -> None:
    async def body() -> None:
        queue: WorkQueue[str] = WorkQueue(clock, RateLimiter(base=1.0, cap=4.0))
        assert [queue.add_rate_limited("a") for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
        assert queue.due_in("a") == 1.0, "the earliest pending retry stands"

    run(body())


def test_bad_backoff_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="0 < base <= cap"):
        RateLimiter(base=0, cap=1)
