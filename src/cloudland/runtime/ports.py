"""Ports for instances: pick a free one, and check that an assigned one is free.

Used by the drivers before a start (a port in use is a StartError the user can
act on, not a crash loop) and by controllers that assign `$PORT`.
"""

from __future__ import annotations

import errno
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now.  Another process may still take it
    before the instance binds it; `port_in_use` at start catches that case."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True if binding `port` on all interfaces fails because something holds it.

    SO_REUSEADDR is set as servers set it, so sockets in TIME_WAIT do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


class PortAllocator:
    """Hands out instance ports no other live instance of this CloudLand holds.

    The kernel's ephemeral range is drawn at random, so 500 draws collide a few
    times; remembering what was handed out (until released) avoids that."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.taken: set[int] = set()

    def allocate(self) -> int:
        for _ in range(100):
            port = free_port(self.host)
            if port not in self.taken:
                self.taken.add(port)
                return port
        raise OSError("no free port found in 100 tries")

    def hold(self, port: int) -> None:
        """Mark a port as in use (an instance re-adopted after a restart)."""
        self.taken.add(port)

    def release(self, port: int | None) -> None:
        if port is not None:
            self.taken.discard(port)
