"""The end of a log file, as error messages quote it."""

from __future__ import annotations

from pathlib import Path

from cloudland.logfiles import tail


def test_tail_reads_the_last_lines_within_the_window(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    assert tail(log) == []  # not there (yet)
    log.write_bytes(b"".join(b"line %d\n\n" % i for i in range(1000)) + b"\xff broken\n")
    assert tail(log, 2) == ["", "\ufffd broken"]
    assert tail(log, 2, skip_blank=True) == ["line 999", "\ufffd broken"]
    assert tail(log, 0) == []
    # Only the window is read: a partial first line may come, nothing before it.
    window = tail(log, 10_000, window=64, skip_blank=True)
    assert window[-1] == "\ufffd broken" and len("\n".join(window)) <= 64
