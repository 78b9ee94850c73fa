"""Build the runtime the workload controllers use: drivers, zygotes, log paths."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cloudland.controllers.workload import Runtime
from cloudland.home import Home
from cloudland.runtime import Driver
from cloudland.runtime.process import ProcessDriver
from cloudland.runtime.sandbox import SandboxDriver
from cloudland.runtime.zygote import ZygotePool


@dataclass
class Runtimes:
    runtime: Runtime
    zygotes: ZygotePool

    def health(self) -> dict[str, Any]:
        drivers = {name: driver.capabilities() for name, driver in self.runtime.drivers.items()}
        return {"healthy": True, **{
            name: f"cgroups={'yes' if caps.cgroups else 'no'}, isolation={caps.isolation}"
            + (f" ({caps.note})" if caps.note else "") for name, caps in drivers.items()}}

    async def close(self) -> None:
        for driver in self.runtime.drivers.values():
            await driver.close()
        await self.zygotes.close()


def build_runtimes(home: Home) -> Runtimes:
    run_dir = home.root / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    # One cgroup subtree per home, so two CloudLands on a machine never mix instances.
    cgroups = "cloudland-" + hashlib.sha256(str(home.root).encode()).hexdigest()[:8]
    zygotes = ZygotePool(run_dir / "zygotes")
    drivers: dict[str, Driver] = {
        "process": ProcessDriver(run_dir / "process", cgroup_parent=cgroups,
                                 owns_cgroup_parent=True, zygotes=zygotes),
        "sandbox": SandboxDriver(run_dir / "sandbox", cgroup_parent=cgroups + "-sandbox",
                                 owns_cgroup_parent=True),
    }
    return Runtimes(Runtime(drivers=drivers, log_root=home.log_dir / "instances"), zygotes)
