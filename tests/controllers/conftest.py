"""Fixtures for the controller tests: a real Store and ResourceService, a manual clock,
an asyncio runner that fails any test leaving tasks behind, and condition waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudland.api.service import ResourceService
from cloudland.controllers import Manager, ManualClock, Reconciler
from cloudland.store import Store

Eventually = Callable[..., Awaitable[Any]]
Running = Callable[..., contextlib.AbstractAsyncContextManager[Manager]]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ResourceService]:
    store = Store(tmp_path / "store.db")
    yield ResourceService(store)
    store.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def run() -> Callable[[Coroutine[Any, Any, None]], None]:
    """Run a coroutine on a fresh loop; fail if it leaves any task running (as kopf does)."""

    async def checked(body: Coroutine[Any, Any, None]) -> None:
        await body
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftover, f"tasks left running: {leftover}"

    return lambda body: asyncio.run(checked(body))


@pytest.fixture
def eventually() -> Eventually:
    """Wait until `predicate()` is truthy (polling the loop), or fail after `timeout`."""

    async def wait(predicate: Callable[[], Any], timeout: float = 5.0,
                   what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.001)
        return value

    return wait


@pytest.fixture
def running(api: ResourceService, clock: ManualClock, eventually: Eventually) -> Running:
    """`async with running(reconcilers, **options) as manager:` started, settled, stopped."""

    @contextlib.asynccontextmanager
    async def start(reconcilers: Iterable[Reconciler], **options: Any) -> AsyncIterator[Manager]:
        options.setdefault("clock", clock)
        manager = Manager(api, reconcilers, **options)
        await manager.start()
        try:
            yield manager
        finally:
            await manager.stop()

    return start


def doc(kind: str, name: str, spec: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "cloudland/v1", "kind": kind,
                            "metadata": {"name": name}, **top}
    if spec is not None:
        body["spec"] = spec
    return body

