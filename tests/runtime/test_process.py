"""The driver suite on the process driver, plus what only it does."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from pathlib import Path

import pytest

from cloudland.runtime.cgroups import CgroupHost, current_paths
from cloudland.runtime.driver import Driver
from cloudland.runtime.ports import free_port
from cloudland.runtime.process import ProcessDriver
from cloudland.runtime.zygote import ZygotePool
from tests.runtime.driver_suite import (
    CGROUP_PARENT,
    WSGI_APP,
    DriverSuite,
    eventually,
    http_get,
)


class TestProcessDriver(DriverSuite):
    def make_driver(self, run_dir: Path) -> Driver:
        return ProcessDriver(run_dir, cgroup_parent=CGROUP_PARENT)

    def test_capabilities_say_what_is_missing(self, tmp_path: Path) -> None:
        caps = ProcessDriver(tmp_path, cgroup_parent=CGROUP_PARENT).capabilities()
        assert caps.isolation == "none"
        assert caps.cgroups or "process groups" in caps.note

    def test_instance_runs_in_its_own_session_and_cgroup(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            spec = self.spec(tmp_path, ["sh", "-c", "cat /proc/self/cgroup; sleep 300"])
            async with self.started(driver, spec) as handle:
                assert handle.driver == "process" and handle.version == 1
                assert handle.pgid == handle.pid
                if not driver.capabilities().cgroups:
                    return
                text = await _eventually_text(spec.log_dir / "stdout.log")
                assert f"0::/{handle.cgroup}" in text.splitlines()

        self.run(tmp_path, body)

    def test_python_module_and_script_are_exec_d(self, tmp_path: Path) -> None:
        (tmp_path / "hello.py").write_text("import sys; print('script', sys.argv[0])\n")

        async def body(driver: Driver) -> None:
            for python in ({"script": "hello.py"}, {"module": "hello"}):
                spec = self.spec(tmp_path, python=python, working_dir=str(tmp_path))
                async with self.started(driver, spec) as handle:
                    status = await asyncio.wait_for(driver.wait(handle), 10)
                    assert status.exit_code == 0
                    assert "script" in (spec.log_dir / "stdout.log").read_text()

        self.run(tmp_path, body)

    def test_logs_rotate_while_the_instance_writes(self, tmp_path: Path) -> None:
        async def body(_: Driver) -> None:
            driver = ProcessDriver(tmp_path / "run", cgroup_parent=CGROUP_PARENT,
                                   log_max_bytes=1000, log_interval=0.02)
            script = ("i=0; while [ $i -lt 100 ]; do echo line-$i-0123456789abcdef; "
                      "i=$((i+1)); done; sleep 300")
            spec = self.spec(tmp_path, ["sh", "-c", script])
            try:
                async with self.started(driver, spec):
                    rotated = spec.log_dir / "stdout.log.1"
                    await eventually(rotated.exists, what="a rotation")
                    assert "line-0-" in rotated.read_text()
                    assert (spec.log_dir / "stdout.log").stat().st_size < 2600
            finally:
                await driver.close()

        self.run(tmp_path, body)


    def test_python_app_forked_from_a_zygote(self, tmp_path: Path) -> None:
        (tmp_path / "wsgiapp.py").write_text(WSGI_APP)

        async def body(_: Driver) -> None:
            zygotes = ZygotePool(tmp_path / "zygotes")
            driver = ProcessDriver(tmp_path / "run", cgroup_parent=CGROUP_PARENT,
                                   zygotes=zygotes)
            try:
                port = free_port()
                spec = self.spec(tmp_path, python={"app": "wsgiapp:app"}, port=port,
                                 env={"PORT": str(port)}, working_dir=str(tmp_path),
                                 zygote_key="suite")
                async with self.started(driver, spec) as handle:
                    assert handle.extra["zygote"] and handle.pgid == handle.pid
                    assert await http_get(port) == b"hello from wsgi"
                    if handle.cgroup:
                        cgroup = Path(f"/proc/{handle.pid}/cgroup").read_text()
                        assert f"0::/{handle.cgroup}" in cgroup.splitlines()
                    assert driver.inspect(handle).state == "running"
                    status = await driver.stop(handle, grace=5)
                    assert status is not None and status.signal == signal.SIGTERM
            finally:
                await driver.close()
                await zygotes.close()

        self.run(tmp_path, body)


    def test_an_exited_instance_gives_its_cgroup_back_before_it_is_destroyed(
            self, tmp_path: Path) -> None:
        """A finished Job's instance is kept (its status, its logs), but its empty
        cgroup goes at once: kept ones piled up in the machine's tree."""
        if not ProcessDriver(tmp_path, cgroup_parent=CGROUP_PARENT).capabilities().cgroups:
            pytest.skip("no writable cgroup here: instances get none")

        async def body(driver: Driver) -> None:
            spec = self.spec(tmp_path, ["true"])
            handle = await driver.start(spec)
            status = await asyncio.wait_for(driver.wait(handle), 10)
            assert status.exit_code == 0
            assert handle.cgroup
            assert not Path("/sys/fs/cgroup/unified", handle.cgroup).exists()
            await driver.destroy(handle)  # still fine afterwards

        self.run(tmp_path, body)

    def test_an_owned_cgroup_parent_is_removed_at_close_once_empty(
            self, tmp_path: Path) -> None:
        """A CloudLand's per-home parent goes with it (each run used to leave one behind
        in the machine-wide tree); while an instance is still in it, it stays."""
        parent = f"cloudland-test-own-{uuid.uuid4().hex[:8]}"
        kept = ProcessDriver(tmp_path / "a", cgroup_parent=parent, owns_cgroup_parent=True)
        if not kept.capabilities().cgroups:
            pytest.skip("no writable cgroup here: nothing is made, nothing to remove")
        dirs = list(kept.cgroups.parents.values())
        assert dirs and all(d.is_dir() for d in dirs)

        async def body() -> None:
            spec = self.spec(tmp_path, ["sleep", "300"])
            handle = await kept.start(spec)
            await kept.close()  # an instance is still in the parent: it stays
            assert all(d.is_dir() for d in dirs)
            again = ProcessDriver(tmp_path / "b", cgroup_parent=parent,
                                  owns_cgroup_parent=True)
            assert await again.recover(handle)  # as a restarted CloudLand adopts it
            await again.stop(handle, grace=0.2)
            await again.destroy(handle)
            await again.close()
            assert not any(d.exists() for d in dirs)

        asyncio.run(body())


class TestProcessDriverWithoutCgroups(DriverSuite):
    """Where no cgroup is writable the driver falls back to process groups."""

    def make_driver(self, run_dir: Path) -> Driver:
        driver = ProcessDriver(run_dir, cgroup_parent=CGROUP_PARENT)
        driver.cgroups = CgroupHost.detect(CGROUP_PARENT, root=run_dir / "no-cgroupfs")
        return driver

    def test_capabilities_say_process_groups(self, tmp_path: Path) -> None:
        caps = self.make_driver(tmp_path).capabilities()
        assert not caps.cgroups and not caps.memory_limit and not caps.oom_detection
        assert "process groups" in caps.note


def test_cgroup_paths_come_from_proc_self_cgroup() -> None:
    text = "4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/user.slice\n"
    assert current_paths(text) == {"memory": "/process_api/abc", "cpu": "/",
                                   "cpuacct": "/", "": "/user.slice"}


async def _eventually_text(path: Path) -> str:
    return str(await eventually(lambda: path.exists() and path.read_text(),
                                what=f"{path} to have content"))


def test_python_children_use_this_interpreter(tmp_path: Path) -> None:
    from cloudland.runtime.launch import python_argv

    assert python_argv({"app": "m:a"}, str(tmp_path))[0] == sys.executable
