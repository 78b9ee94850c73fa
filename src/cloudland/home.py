"""Where a CloudLand keeps its state, and how clients find the running one.

A home directory holds the store, the lock that makes `up` single-instance,
logs, and `state.json` with the running supervisor's pid and addresses.  Both
the daemon and the CLI use this module; it imports nothing else of ours.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROBE_RETRIES = 10  # x 5 ms: far longer than a probe holds the lock


def default_home() -> Path:
    env = os.environ.get("CLOUDLAND_HOME")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "cloudland"


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, given: str | Path | None = None) -> Home:
        return cls(Path(given).expanduser().resolve() if given else default_home().resolve())

    @property
    def store_path(self) -> Path:
        return self.root / "store.db"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def lock_path(self) -> Path:
        return self.root / "cloudland.lock"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def daemon_log(self) -> Path:
        return self.log_dir / "cloudland.log"

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_dir.mkdir(exist_ok=True)

    def read_state(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def write_state(self, state: dict[str, Any]) -> None:
        """Atomically: a reader sees the old file or the new one, never half."""
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".state.")
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
        os.replace(tmp, self.state_path)

    def clear_state(self) -> None:
        self.state_path.unlink(missing_ok=True)

    def is_locked(self) -> bool:
        """True while a supervisor holds this home's lock."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def running_state(self) -> dict[str, Any] | None:
        """The state of the supervisor running on this home, or None."""
        if not self.is_locked():
            return None
        return self.read_state()


class HomeLock:
    """An exclusive flock on the home, held for the supervisor's lifetime.

    The kernel drops it when the process dies, even by kill -9, so a stale
    lock never blocks the next `up`.
    """

    def __init__(self, home: Home) -> None:
        self.home = home
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.home.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        # `is_locked` probes by taking the lock for an instant: a probe (`cloudland
        # status` in a loop, say) must not make a starting supervisor think another
        # one runs, so a refused lock is asked for again for a moment.
        for attempt in range(PROBE_RETRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == PROBE_RETRIES - 1:
                    os.close(fd)
                    return False
                time.sleep(0.005)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
