"""The home's lock: one supervisor per home; probing it never gets in the way."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from cloudland.home import Home, HomeLock


def test_one_supervisor_per_home_and_a_probe_is_not_one(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.root.mkdir(parents=True)
    first = HomeLock(home)
    assert not home.is_locked()
    # Probes (`cloudland status` in a loop) take the lock for an instant, again and
    # again, while a supervisor starts: it must still get the lock.
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
