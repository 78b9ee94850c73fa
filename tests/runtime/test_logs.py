"""Instance logs: copy-truncate rotation, time index, read_lines and follow."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from cloudland.runtime.logs import (
    LogLine,
    LogRotator,
    checkpoint,
    follow,
    log_path,
    open_log,
    read_lines,
    rotate,
)
from tests.runtime.driver_suite import eventually


def append(fd: int, *lines: str) -> None:
    os.write(fd, "".join(f"{line}\n" for line in lines).encode())


def test_rotation_copies_truncates_and_keeps_three(tmp_path: Path) -> None:
    fd = open_log(tmp_path, "stdout")
    try:
        for n in range(5):
            append(fd, f"generation {n}")
            rotate(log_path(tmp_path, "stdout"))
        append(fd, "current")  # the child's O_APPEND fd keeps working after the truncate
    finally:
        os.close(fd)
    path = log_path(tmp_path, "stdout")
    assert path.read_text() == "current\n"
    assert [Path(f"{path}.{n}").read_text() for n in (1, 2, 3)] == [
        "generation 4\n", "generation 3\n", "generation 2\n"]
    assert not Path(f"{path}.4").exists()


def test_read_lines_filters_by_time_and_tails_across_segments(tmp_path: Path) -> None:
    path = log_path(tmp_path, "stdout")
    fd = open_log(tmp_path, "stdout")
    try:
        append(fd, "a1", "a2")
        checkpoint(path, path.stat().st_size, now=100.0)
        append(fd, "b1")
        rotate(path, now=200.0)
        append(fd, "c1", "c2")
        checkpoint(path, path.stat().st_size, now=300.0)
    finally:
        os.close(fd)
    err = open_log(tmp_path, "stderr")
    append(err, "e1")
    os.close(err)
    checkpoint(log_path(tmp_path, "stderr"), 3, now=250.0)

    everything = read_lines(tmp_path)
    assert [(ln.time, ln.stream, ln.text) for ln in everything] == [
        (100.0, "stdout", "a1"), (100.0, "stdout", "a2"), (200.0, "stdout", "b1"),
        (250.0, "stderr", "e1"), (300.0, "stdout", "c1"), (300.0, "stdout", "c2")]
    assert [ln.text for ln in read_lines(tmp_path, since=150)] == ["b1", "e1", "c1", "c2"]
    assert [ln.text for ln in read_lines(tmp_path, tail=3)] == ["e1", "c1", "c2"]
    assert [ln.text for ln in read_lines(tmp_path, streams=["stdout"], tail=4)] == [
        "a2", "b1", "c1", "c2"]
    assert read_lines(tmp_path, tail=0) == []
    assert read_lines(tmp_path / "missing") == []


def test_lines_after_the_last_checkpoint_get_the_file_time(tmp_path: Path) -> None:
    fd = open_log(tmp_path, "stderr")
    append(fd, "fresh")
    os.close(fd)
    (line,) = read_lines(tmp_path)
    assert abs(line.time - time.time()) < 5


def test_rotator_indexes_growth_and_rotates_big_files(tmp_path: Path) -> None:
    rotator = LogRotator(max_bytes=100)
    fd = open_log(tmp_path, "stdout")
    try:
        rotator._dirs.add(tmp_path)  # register() would also start the periodic task
        append(fd, "small")
        rotator.tick()
        rotator.tick()  # no growth: no second checkpoint
        assert Path(f"{log_path(tmp_path, 'stdout')}.idx").read_text().count("\n") == 1
        append(fd, "x" * 200)
        rotator.tick()
        assert log_path(tmp_path, "stdout").stat().st_size == 0
        assert Path(f"{log_path(tmp_path, 'stdout')}.1").read_text().startswith("small\n")
        append(fd, "after")
    finally:
        os.close(fd)
    assert [ln.text for ln in read_lines(tmp_path)] == ["small", "x" * 200, "after"]


def test_follow_yields_new_lines_across_a_rotation(tmp_path: Path) -> None:
    async def main() -> list[LogLine]:
        fd = open_log(tmp_path, "stdout")
        append(fd, "old")  # before following: not yielded
        got: list[LogLine] = []

        async def collect() -> None:
            async for line in follow(tmp_path, poll=0.01):
                got.append(line)
                if line.text == "last":
                    return

        task = asyncio.create_task(collect())
        try:
            await asyncio.sleep(0.05)  # let follow take its starting offsets
            append(fd, "one", "two")
            await eventually(lambda: len(got) >= 2, what="two lines")
            append(fd, "three")  # lands in .1 if the rotation beats the next poll
            rotate(log_path(tmp_path, "stdout"))
            append(fd, "last")
            await asyncio.wait_for(task, 10)
        finally:
            task.cancel()
            os.close(fd)
        return got

    got = asyncio.run(main())
    assert [ln.text for ln in got] == ["one", "two", "three", "last"]
    assert {ln.stream for ln in got} == {"stdout"}
