"""Instance logs on disk: open, rotate, index by time, read and follow.

Owned by the runtime drivers; the log API and `cloudland logs` read through
`read_lines` and `follow`.  Each instance writes `stdout.log` and `stderr.log`
in its log dir through O_APPEND descriptors it holds itself, so CloudLand is not
in the write path.  `LogRotator` (one task per driver) looks at every file once
per tick:
- above `max_bytes` it rotates copy-truncate style (`.1` -> `.2` ... keep 3,
  copy to `.1`, truncate in place; the child keeps appending to the same fd;
  bytes written between the copy and the truncate are lost, as with logrotate's
  copytruncate);
- otherwise, when the file grew, it appends "<unix time> <size>" to
  `<file>.idx`.  A line is stamped with the first checkpoint at or after its
  end, so times are exact to one tick and `since` filters need no per-line
  timestamps from the application.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("cloudland.runtime.logs")

STREAMS = ("stdout", "stderr")
MAX_BYTES = 10 << 20
KEEP = 3


class LogLine(NamedTuple):
    time: float  # unix time at which the line was seen on disk (within one rotator tick)
    stream: str  # "stdout" | "stderr"
    text: str  # without the trailing newline


def log_path(log_dir: Path, stream: str) -> Path:
    return log_dir / f"{stream}.log"


def open_log(log_dir: Path, stream: str) -> int:
    """An O_APPEND descriptor for the child to inherit as its stdout or stderr."""
    return os.open(log_path(log_dir, stream), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def _idx(path: Path) -> Path:
    return path.with_name(path.name + ".idx")


def _segment(path: Path, n: int) -> Path:
    return path if n == 0 else path.with_name(f"{path.name}.{n}")


def checkpoint(path: Path, size: int, now: float | None = None) -> None:
    with open(_idx(path), "a") as f:
        f.write(f"{time.time() if now is None else now:.3f} {size}\n")


def rotate(path: Path, keep: int = KEEP, now: float | None = None) -> None:
    """Copy-truncate `path`: shift `.1`.. `.keep-1` up by one, copy to `.1`, truncate."""
    for n in range(keep - 1, 0, -1):
        for src, dst in ((_segment(path, n), _segment(path, n + 1)),
                         (_idx(_segment(path, n)), _idx(_segment(path, n + 1)))):
            with contextlib.suppress(FileNotFoundError):
                os.replace(src, dst)
    first = _segment(path, 1)
    # Copy beside it and rename, so a reader never sees a half-copied `.1`.
    partial = first.with_name(first.name + ".partial")
    shutil.copyfile(path, partial)
    os.replace(partial, first)
    with contextlib.suppress(FileNotFoundError):
        os.replace(_idx(path), _idx(first))
    checkpoint(first, first.stat().st_size, now)
    os.truncate(path, 0)
    checkpoint(path, 0, now)  # what follows was written after this


class LogRotator:
    """Rotates and indexes the logs of registered log dirs, one tick per `interval`."""

    def __init__(self, *, max_bytes: int = MAX_BYTES, keep: int = KEEP,
                 interval: float = 1.0) -> None:
        self.max_bytes, self.keep, self.interval = max_bytes, keep, interval
        self._dirs: set[Path] = set()
        self._sizes: dict[Path, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # ticks run in a thread and, on unregister, in the loop

    def register(self, log_dir: Path) -> None:
        self._dirs.add(Path(log_dir))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="log rotator")

    def unregister(self, log_dir: Path) -> None:
        """Stop watching `log_dir` after one last checkpoint of what it holds."""
        log_dir = Path(log_dir)
        if log_dir in self._dirs:
            self.tick([log_dir])
            self._dirs.discard(log_dir)
        for stream in STREAMS:
            self._sizes.pop(log_path(log_dir, stream), None)

    def tick(self, dirs: Iterable[Path] | None = None) -> None:
        """One pass (blocking file work: the task runs it in a thread)."""
        with self._lock:
            self._tick(list(self._dirs if dirs is None else dirs))

    def _tick(self, dirs: list[Path]) -> None:
        now = time.time()
        for log_dir in dirs:
            for stream in STREAMS:
                path = log_path(log_dir, stream)
                try:
                    size = path.stat().st_size
                    if size > self.max_bytes:
                        rotate(path, self.keep, now)
                        self._sizes[path] = 0
                    elif size != self._sizes.get(path, 0):
                        checkpoint(path, size, now)
                        self._sizes[path] = size
                except FileNotFoundError:
                    self._sizes.pop(path, None)
                except OSError as exc:
                    log.warning("rotating %s failed: %s", path, exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await asyncio.to_thread(self.tick)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _checkpoints(path: Path) -> tuple[list[int], list[float]]:
    offsets: list[int] = []
    times: list[float] = []
    try:
        text = _idx(path).read_text()
    except OSError:
        return offsets, times
    for line in text.splitlines():
        when, _, size = line.partition(" ")
        with contextlib.suppress(ValueError):
            offsets.append(int(size))
            times.append(float(when))
    return offsets, times


def _segment_lines(path: Path, stream: str) -> list[LogLine]:
    try:
        data = path.read_bytes()
        mtime = path.stat().st_mtime
    except OSError:
        return []
    offsets, times = _checkpoints(path)
    # Past the last checkpoint: written by the last modification, and after that checkpoint
    # (the file's mtime comes from a coarser clock and may read a little earlier).
    latest = max([mtime, *times[-1:]])
    lines, start = [], 0
    for raw in data.splitlines(keepends=True):
        start += len(raw)
        i = bisect.bisect_left(offsets, start)
        when = times[i] if i < len(times) else latest
        lines.append(LogLine(when, stream, raw.rstrip(b"\r\n").decode(errors="replace")))
    return lines


def read_lines(log_dir: Path, since: float | None = None, tail: int | None = None,
               streams: Iterable[str] = STREAMS, keep: int = KEEP) -> list[LogLine]:
    """The lines of an instance's logs, rotated segments included, oldest first.

    `since` (unix time) drops older lines; `tail` keeps the last N after that.
    Blocking: call it through asyncio.to_thread from the event loop."""
    if tail is not None and tail <= 0:
        return []
    merged: list[LogLine] = []
    for stream in streams:
        path = log_path(Path(log_dir), stream)
        picked: list[LogLine] = []
        for n in range(keep):  # newest segment first, so a tail reads only what it needs
            every = _segment_lines(_segment(path, n), stream)
            lines = [ln for ln in every if since is None or ln.time >= since]
            picked = lines + picked
            if tail is not None and len(picked) >= tail:
                break
            if len(lines) < len(every):  # reached lines older than `since`
                break
        merged.extend(picked[-tail:] if tail is not None else picked)
    merged.sort(key=lambda ln: ln.time)  # stable: each stream keeps its own order
    return merged[-tail:] if tail is not None else merged


def _read_new(log_dir: Path, offsets: dict[str, int]) -> list[tuple[str, bytes]]:
    """Bytes appended since `offsets` (updated in place), across a copy-truncate."""
    chunks = []
    for stream in STREAMS:
        path = log_path(log_dir, stream)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        offset = offsets.get(stream, 0)
        if size < offset:  # rotated: the rest of what we were reading is now in .1
            with contextlib.suppress(OSError), open(_segment(path, 1), "rb") as f:
                f.seek(offset)
                chunks.append((stream, f.read()))
            offset = 0
        if size > offset:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(size - offset)
            chunks.append((stream, data))
            offset += len(data)
        offsets[stream] = offset
    return chunks


async def follow(log_dir: Path, *, from_start: bool = False,
                 poll: float = 0.25) -> AsyncIterator[LogLine]:
    """Yield lines as they are appended (like `tail -F`), forever; cancel to stop.

    A partial last line is held back until its newline comes or it stays
    unchanged for a second."""
    log_dir = Path(log_dir)
    offsets: dict[str, int] = {}
    if not from_start:
        for stream in STREAMS:
            with contextlib.suppress(OSError):
                offsets[stream] = log_path(log_dir, stream).stat().st_size
    pending: dict[str, tuple[bytes, float]] = {}
    while True:
        chunks = await asyncio.to_thread(_read_new, log_dir, offsets)
        now = time.time()
        for stream, data in chunks:
            held, _ = pending.pop(stream, (b"", now))
            *complete, rest = (held + data).split(b"\n")
            for raw in complete:
                yield LogLine(now, stream, raw.rstrip(b"\r").decode(errors="replace"))
            if rest:
                pending[stream] = (rest, now)
        for stream, (held, since) in list(pending.items()):
            if now - since >= 1.0:
                del pending[stream]
                yield LogLine(now, stream, held.decode(errors="replace"))
        await asyncio.sleep(poll)
