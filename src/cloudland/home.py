"""Where a CloudLand keeps its state, and how clients find the running one.

A home directory holds the store, the lock that makes `up` single-instance,
logs, and `state.json` with the running supervisor's pid and addresses.  Both
the daemon and the CLI use this module; it imports nothing of ours but errors.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudland.errors import CloudLandError

_HOME_HINT = ("point --home (or CLOUDLAND_HOME) at a directory you can write; "
              "CloudLand creates it if it does not exist")
# struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid (and padding).
_FLOCK = "hhqqi4x"


def _whole_file_lock(fd: int, command: int, kind: int) -> int:
    """An open-file-description lock call on the whole file; the l_type it returns."""
    answer = fcntl.fcntl(fd, command, struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0))
    return int(struct.unpack(_FLOCK, answer)[0])


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
        root = Path(given).expanduser().resolve() if given else default_home().resolve()
        if root.exists() and not root.is_dir():
            raise CloudLandError(f"the CloudLand home {root} is not a directory",
                                 hint=_HOME_HINT)
        return cls(root)

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
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.log_dir.mkdir(exist_ok=True)
        except OSError as err:
            raise CloudLandError(f"cannot create the CloudLand home {self.root}: "
                                 f"{err.strerror or err}", hint=_HOME_HINT) from None

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
        """True while a supervisor holds this home's lock. Asks the kernel whether the
        lock could be taken (F_OFD_GETLK) without taking it, so a probe never makes a
        starting supervisor think the home is taken."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            return _whole_file_lock(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK) != fcntl.F_UNLCK
        finally:
            os.close(fd)

    def running_state(self) -> dict[str, Any] | None:
        """The state of the supervisor running on this home, or None."""
        if not self.is_locked():
            return None
        return self.read_state()


class HomeLock:
    """An exclusive lock on the home, held for the supervisor's lifetime.

    An open-file-description lock (F_OFD_SETLK): like flock it belongs to the open
    file, not the process, and the kernel drops it when the process dies, even by
    kill -9, so a stale lock never blocks the next `up`; unlike flock it can be
    probed without being taken (`Home.is_locked`).
    """

    def __init__(self, home: Home) -> None:
        self.home = home
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.home.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _whole_file_lock(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
