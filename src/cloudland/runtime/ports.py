"""Ports for instances: pick a free one, and check that an assigned one is free.

Used by the drivers before a start (a port in use is a StartError the user can
act on, not a crash loop) and by controllers that assign `$PORT`.
"""

from __future__ import annotations

import errno
import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Instance and mesh ports come from below the kernel's ephemeral range, so an outgoing
# connection (which takes its local port from that range) can never hold the port an
# instance is about to bind, nor a Service's mesh address after a restart.
LOWEST_PORT = 20000


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now.  Another process may still take it
    before the instance binds it; `port_in_use` at start catches that case."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def quiet_range() -> tuple[int, int]:
    """The ports below the kernel's ephemeral range, from LOWEST_PORT: no outgoing
    connection is ever given one of them."""
    try:
        first = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    return LOWEST_PORT, first - 1


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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

    Ports are drawn at random below the kernel's ephemeral range (`quiet_range`) and
    checked by binding; remembering what was handed out (until released) keeps two
    instances from drawing the same one before either binds it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.taken: set[int] = set()

    def allocate(self) -> int:
        low, high = quiet_range()
        for _ in range(100):
            port = random.randint(low, high) if high > low else free_port(self.host)
            if port not in self.taken and _bindable(self.host, port):
                self.taken.add(port)
                return port
        for _ in range(100):  # a crowded range: let the kernel pick
            port = free_port(self.host)
            if port not in self.taken:
                self.taken.add(port)
                return port
        raise OSError("no free port found in 200 tries")

    def hold(self, port: int) -> None:
        """Mark a port as in use (an instance re-adopted after a restart)."""
        self.taken.add(port)

    def release(self, port: int | None) -> None:
        if port is not None:
            self.taken.discard(port)
