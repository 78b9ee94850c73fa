"""The driver suite inside bubblewrap, plus the isolation only the sandbox gives."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import pytest

from cloudland.runtime.driver import Driver, StartError
from cloudland.runtime.sandbox import SandboxDriver
from tests.runtime.driver_suite import CGROUP_PARENT, DriverSuite

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="bubblewrap is not installed (apt-get install bubblewrap)")


class TestSandboxDriver(DriverSuite):
    isolated = True

    def make_driver(self, run_dir: Path) -> Driver:
        return SandboxDriver(run_dir, cgroup_parent=CGROUP_PARENT)

    async def _output(self, driver: Driver, tmp_path: Path, script: str,
                      **kw: object) -> tuple[int | None, str]:
        spec = self.spec(tmp_path, ["sh", "-c", script], **kw)
        async with self.started(driver, spec) as handle:
            status = await asyncio.wait_for(driver.wait(handle), 10)
            return status.exit_code, (spec.log_dir / "stdout.log").read_text()

    def test_no_capabilities_inside(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            code, out = await self._output(driver, tmp_path, "grep CapEff /proc/self/status")
            assert code == 0 and out.split() == ["CapEff:", "0000000000000000"]

        self.run(tmp_path, body)

    def test_own_pid_namespace(self, tmp_path: Path) -> None:
        async def body(driver: Driver) -> None:
            script = "echo $$; ls /proc | grep -c '^[0-9]'"
            code, out = await self._output(driver, tmp_path, script)
            assert code == 0
            pid, visible = (int(x) for x in out.split())
            assert pid <= 2 and visible <= 4  # bwrap's init, sh, ls, grep

        self.run(tmp_path, body)

    def test_private_tmp_and_read_only_system(self, tmp_path: Path) -> None:
        marker = Path("/tmp") / f"cloudland-host-{uuid.uuid4().hex}"
        marker.write_text("host")
        work = tmp_path / "work"
        work.mkdir()

        async def body(driver: Driver) -> None:
            script = (f"test -e {marker} && echo host-tmp-visible; "
                      f"echo inside > /tmp/{marker.name}-in; "
                      "touch /usr/cloudland-probe 2>/dev/null && echo usr-writable; "
                      "echo ok > written-here; echo done")
            code, out = await self._output(driver, tmp_path, script, working_dir=str(work))
            assert code == 0 and out.split() == ["done"], out
            assert not Path(f"/tmp/{marker.name}-in").exists()
            assert (work / "written-here").read_text() == "ok\n"

        try:
            self.run(tmp_path, body)
        finally:
            marker.unlink()

    def test_network_can_be_unshared(self, tmp_path: Path) -> None:
        async def body(_: Driver) -> None:
            driver = SandboxDriver(tmp_path / "run2", cgroup_parent=CGROUP_PARENT,
                                   share_net=False)
            try:
                code, out = await self._output(driver, tmp_path, "tail -n +3 /proc/net/dev")
                assert code == 0
                assert [line.split(":")[0].strip() for line in out.splitlines()] == ["lo"]
            finally:
                await driver.close()

        self.run(tmp_path, body)

    def test_missing_bwrap_is_a_clear_error(self, tmp_path: Path) -> None:
        async def body(_: Driver) -> None:
            driver = SandboxDriver(tmp_path / "run", cgroup_parent=CGROUP_PARENT,
                                   bwrap="/nonexistent/bwrap")
            try:
                assert "not installed" in driver.capabilities().note
                with pytest.raises(StartError) as err:
                    await driver.start(self.spec(tmp_path, ["true"]))
                assert err.value.reason == "SandboxUnavailable"
                assert err.value.message == "bubblewrap (bwrap) is not installed"
                assert err.value.hint == "apt-get install bubblewrap"
            finally:
                await driver.close()

        self.run(tmp_path, body)
