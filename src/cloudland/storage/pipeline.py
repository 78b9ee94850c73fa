"""An upload's blocks through several in-order stages at once, on a shared thread pool.

A large body is hashed (MD5 for the ETag; SHA-256 when the payload is signed; a
checksum when one is sent) and written to a file. Each of those must see the blocks
in order, but they do not depend on each other, so each is a `Lane`: its blocks run
one at a time, in order, on the pool, while other lanes run theirs (hashlib and file
writes release the GIL). The event loop hands every block to every lane and goes
back to reading the socket; it waits only when `ahead` blocks are not yet through
every lane, or when all uploads together hold `budget` blocks (what the server holds
in memory stays bounded however many upload at once), and at the end. The slowest
lane (MD5 here) then runs without a pause from the first block to the last, instead
of waiting at every block for the others.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

Block = list[bytes]
Stage = Callable[[Block], Any]


class Lane:
    """One stage's blocks, run in order on `pool`, one at a time; a pool job runs at
    most RUN blocks and then queues the next, so other work on the pool (lookups,
    commits, other uploads) gets a thread between blocks."""

    RUN = 2

    def __init__(self, stage: Stage, pool: Executor, progressed: Callable[[], None]) -> None:
        self._stage = stage
        self._pool = pool
        self._progressed = progressed  # called (from a pool thread) after each block
        self._queue: collections.deque[Block] = collections.deque()
        self._lock = threading.Lock()
        self.busy = False  # a pool thread is draining the queue
        self.done = 0  # blocks through this lane (run, or skipped after an error)
        self.error: BaseException | None = None
        self._stopped = False

    def push(self, block: Block) -> None:
        with self._lock:
            self._queue.append(block)
            if self.busy:
                return  # the job draining the queue will take it
            self.busy = True
        self._submit()

    def stop(self) -> None:
        """Skip the blocks still queued (the block being run finishes)."""
        self._stopped = True

    def _submit(self) -> None:
        try:
            job = self._pool.submit(self._drain)
        except RuntimeError as exc:  # the pool is shut down: nothing will drain
            self._abandon(exc)
            raise
        job.add_done_callback(self._cancelled)

    def _drain(self) -> None:
        for _ in range(self.RUN):
            with self._lock:
                if not self._queue:
                    self.busy = False
                    break
                block = self._queue.popleft()
            if self.error is None and not self._stopped:
                try:
                    self._stage(block)
                except BaseException as exc:  # handed to the event loop by Pipeline
                    self.error = exc
            self.done += 1
            self._progressed()
        else:  # RUN blocks done: the rest in a new job, behind what else waits
            with self._lock:
                more = bool(self._queue)
                self.busy = more
            if more:
                with contextlib.suppress(RuntimeError):  # shut down: _abandon'ed
                    self._submit()
                return
        self._progressed()  # `busy` is now False: a stopping upload may go on

    def _cancelled(self, job: Future[None]) -> None:
        if job.cancelled():  # the pool shut down before the job ran
            self._abandon(RuntimeError("the S3 threads were shut down"))

    def _abandon(self, error: BaseException) -> None:
        """No job will drain the queue: count its blocks as skipped, so waiting for
        this lane ends (and the upload fails with `error`)."""
        with self._lock:
            skipped = len(self._queue)
            self._queue.clear()
            self.busy = False
        self.error = self.error or error
        self.done += skipped
        with contextlib.suppress(RuntimeError):  # the loop itself may be gone
            self._progressed()


class Pipeline:
    """Blocks pushed from the event loop through every stage, at most `ahead` blocks
    ahead of the slowest lane."""

    def __init__(self, pool: Executor, stages: list[Stage], *, ahead: int,
                 budget: asyncio.Semaphore | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._progress = asyncio.Event()
        self._lanes = [Lane(stage, pool, self._progressed) for stage in stages]
        self._ahead = ahead
        self._budget = budget  # one permit per block in flight, shared by all uploads
        self._released = 0  # blocks whose permit went back
        self.pushed = 0

    async def push(self, block: Block) -> None:
        """Hand `block` to every lane; wait while too many blocks are in flight. Raises
        a lane's error as soon as it is known (no point reading the rest)."""
        self._raise_error()
        if self._budget is not None:
            await self._budget.acquire()
        for lane in self._lanes:
            lane.push(block)
        self.pushed += 1
        while self.pushed - self._done() >= self._ahead:
            await self._wait()
            self._raise_error()

    async def finish(self) -> None:
        """Wait until every block is through every lane; raise the first lane error."""
        while self._done() < self.pushed:
            await self._wait()
        self._raise_error()

    async def stop(self) -> None:
        """Skip what is queued and wait until no lane runs a block (so the caller may
        close or remove what the stages write to)."""
        for lane in self._lanes:
            lane.stop()
        while any(lane.busy for lane in self._lanes):
            await self._wait()

    def _done(self) -> int:
        return min(lane.done for lane in self._lanes)

    def _raise_error(self) -> None:
        for lane in self._lanes:
            if lane.error is not None:
                raise lane.error

    async def _wait(self) -> None:
        # Lanes change their counts before they call _progressed, and the event is
        # set on this loop after this clear(): a wake-up is never lost.
        self._progress.clear()
        await self._progress.wait()

    def _progressed(self) -> None:  # on a pool thread
        self._loop.call_soon_threadsafe(self._on_progress)

    def _on_progress(self) -> None:  # on the loop
        if self._budget is not None:
            for _ in range(self._done() - self._released):
                self._budget.release()
            self._released = max(self._released, self._done())
        self._progress.set()
