"""Runtime drivers: start, watch, stop and re-adopt workload instances.

Drivers never touch the store; the controllers persist the `Handle` a driver
returns (in status) so that `recover` can re-attach after a restart.
"""

from cloudland.runtime.driver import (
    Capabilities,
    Driver,
    ExitStatus,
    Handle,
    InstanceSpec,
    InstanceState,
    Limits,
    StartError,
)

__all__ = ["Capabilities", "Driver", "ExitStatus", "Handle", "InstanceSpec", "InstanceState",
           "Limits", "StartError"]
