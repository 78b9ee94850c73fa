"""Health probes, as Kubernetes defines them: httpGet, tcpSocket, exec.

A probe answers True (healthy), False (unhealthy) or raises nothing: timeouts
and refused connections are failures, never exceptions that reach a
reconcile.  Only one probe per instance runs at a time, so a hanging one
costs its timeout, not the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

HOST = "127.0.0.1"


async def http_get(port: int, path: str, timeout: float) -> bool:
    """GET path; 200-399 is healthy (no redirects followed), as Kubernetes."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                     f"User-Agent: cloudland-probe\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def tcp_open(port: int, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


async def run_exec(command: list[str], env: dict[str, str], timeout: float) -> bool:
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True)
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), timeout) == 0
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return False


async def check(probe: dict[str, Any], port: int | None, env: dict[str, str]) -> bool:
    """Run one probe of a Service spec against an instance listening on `port`."""
    timeout = float(probe.get("timeoutSeconds", 1))
    if probe.get("httpGet") is not None:
        target = probe["httpGet"].get("port") or port
        return target is not None and await http_get(int(target), probe["httpGet"].get(
            "path", "/"), timeout)
    if probe.get("tcpSocket") is not None:
        target = probe["tcpSocket"].get("port") or port
        return target is not None and await tcp_open(int(target), timeout)
    if probe.get("exec") is not None:
        return await run_exec(list(probe["exec"]["command"]), env, timeout)
    return True
