"""The upload pipeline: every stage sees every block in order, stages run at once, the
event loop never gets more than `ahead` blocks in front, errors stop the upload."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from cloudland.storage.pipeline import Block, Pipeline


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def test_each_stage_sees_every_block_in_order(pool: ThreadPoolExecutor) -> None:
    seen: dict[str, list[bytes]] = {"a": [], "b": []}

    async def main() -> None:
        pipeline = Pipeline(pool, [lambda blk: seen["a"].extend(blk),
                                   lambda blk: seen["b"].extend(blk)], ahead=3)
        for n in range(200):
            await pipeline.push([str(n).encode()])
        await pipeline.finish()

    asyncio.run(main())
    expected = [str(n).encode() for n in range(200)]
    assert seen["a"] == expected and seen["b"] == expected


def test_stages_overlap_and_the_loop_stays_at_most_ahead(pool: ThreadPoolExecutor) -> None:
    """A slow stage holds the loop back after `ahead` blocks, while the fast stage has
    already taken them: the two ran at once."""
    gate = threading.Event()
    fast: list[Block] = []

    def slow(block: Block) -> None:
        assert gate.wait(10)

    async def main() -> None:
        pipeline = Pipeline(pool, [slow, fast.append], ahead=2)
        await pipeline.push([b"1"])
        pushing = asyncio.ensure_future(pipeline.push([b"2"]))
        await asyncio.sleep(0)  # let push run up to its wait
        deadline = asyncio.get_running_loop().time() + 10
        while len(fast) < 2:  # the fast lane took both while the slow one is stuck
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.001)
        assert not pushing.done()  # two blocks not through every lane: the loop waits
        gate.set()
        await pushing
        await pipeline.finish()

    asyncio.run(main())
    assert fast == [[b"1"], [b"2"]]


def test_a_stage_error_stops_the_upload_and_skips_the_rest(pool: ThreadPoolExecutor) -> None:
    ran: list[Block] = []

    def failing(block: Block) -> None:
        ran.append(block)
        raise ValueError("too big")

    async def main() -> None:
        pipeline = Pipeline(pool, [failing], ahead=1)
        await pipeline.push([b"1"])  # waits for it: ahead=1
        with pytest.raises(ValueError, match="too big"):
            await pipeline.push([b"2"])  # the error is known: the block is not taken
        with pytest.raises(ValueError, match="too big"):
            await pipeline.finish()

    asyncio.run(main())
    assert ran == [[b"1"]]


def test_stop_skips_queued_blocks_and_waits_for_the_running_one(
        pool: ThreadPoolExecutor) -> None:
    started, gate = threading.Event(), threading.Event()
    ran: list[Block] = []

    def stage(block: Block) -> None:
        started.set()
        assert gate.wait(10)
        ran.append(block)

    async def main() -> None:
        pipeline = Pipeline(pool, [stage], ahead=10)
        for n in range(5):
            await pipeline.push([str(n).encode()])
        await asyncio.to_thread(started.wait, 10)
        stopping = asyncio.ensure_future(pipeline.stop())
        await asyncio.sleep(0.01)
        assert not stopping.done()  # a block is still being run: its file stays
        gate.set()
        await stopping

    asyncio.run(main())
    assert ran == [[b"0"]]  # the four queued blocks were skipped


def test_uploads_share_one_budget_of_blocks(pool: ThreadPoolExecutor) -> None:
    """However many upload at once, no more than `budget` blocks are held in all; a
    block's permit goes back once every lane is through with it."""
    gate = threading.Event()

    def held(block: Block) -> None:
        assert gate.wait(10)

    async def main() -> None:
        budget = asyncio.Semaphore(2)
        first = Pipeline(pool, [held], ahead=10, budget=budget)
        second = Pipeline(pool, [held], ahead=10, budget=budget)
        await first.push([b"1"])
        await second.push([b"2"])
        third = asyncio.ensure_future(first.push([b"3"]))
        await asyncio.sleep(0.01)
        assert not third.done()  # both permits are with blocks still in their lanes
        gate.set()
        await third
        await first.finish()
        await second.finish()
        for _ in range(2):  # every permit is back
            await asyncio.wait_for(budget.acquire(), 1)
        assert budget.locked()

    asyncio.run(main())


def test_a_pool_shut_down_under_an_upload_fails_it_instead_of_hanging() -> None:
    """S3Server.stop shuts its pool down with cancel_futures: a lane whose job was
    cancelled before it ran ends the upload with an error; finish and stop return."""
    pool = ThreadPoolExecutor(max_workers=1)
    gate = threading.Event()

    async def main() -> None:
        pipeline = Pipeline(pool, [lambda blk: gate.wait(10), lambda blk: None], ahead=8)
        await pipeline.push([b"x"])  # the first lane has the only thread, the second waits
        pool.shutdown(wait=False, cancel_futures=True)
        gate.set()
        with pytest.raises(RuntimeError, match="shut down"):
            await asyncio.wait_for(pipeline.finish(), 10)
        await asyncio.wait_for(pipeline.stop(), 10)
        with pytest.raises(RuntimeError):  # and pushing more fails at once
            await pipeline.push([b"y"])

    asyncio.run(main())
    pool.shutdown(wait=True)


def test_a_long_upload_leaves_room_for_other_pool_work() -> None:
    """A lane's job runs a few blocks, then queues the rest behind what else waits: a
    lookup submitted mid-upload waits for a block or two, not for the whole upload."""
    with ThreadPoolExecutor(max_workers=1) as pool:

        async def main() -> None:
            pipeline = Pipeline(pool, [lambda blk: time.sleep(0.002)], ahead=50)
            for n in range(40):
                await pipeline.push([str(n).encode()])
            await asyncio.wrap_future(pool.submit(lambda: None))
            assert pipeline._lanes[0].done < 40  # it ran while the upload still had work
            await pipeline.finish()

        asyncio.run(main())
