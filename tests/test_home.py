"""The home's lock: one supervisor per home; probing it never gets in the way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from cloudland.home import Home, HomeLock


def test_one_supervisor_per_home_and_a_probe_is_not_one(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.root.mkdir(parents=True)
    first = HomeLock(home)
    assert not home.is_locked()
    # Probes (`cloudland status` in a loop), again and again while a supervisor
    # starts, must never make the home look taken.
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            home.is_locked()
            time.sleep(0.0002)  # a busy prober: thousands of probes a second

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for _ in range(500):
            assert first.acquire(), "a probe made the home look taken"
            first.release()
    finally:
        stop.set()
        prober.join()
    assert first.acquire() and home.is_locked()
    try:
        assert not HomeLock(home).acquire()  # a second supervisor is refused
    finally:
        first.release()
    assert not home.is_locked()


def test_a_lock_held_by_another_process_is_seen_and_dies_with_it(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.root.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from cloudland.home import Home, HomeLock; "
         f"assert HomeLock(Home.resolve({str(home.root)!r})).acquire(); "
         "print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert home.is_locked()
        assert not HomeLock(home).acquire()
        assert home.lock_path.read_text() == str(holder.pid)
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # as a crash: the kernel drops the lock
        holder.wait(10)
    assert not home.is_locked()
    again = HomeLock(home)
    assert again.acquire()
    again.release()
