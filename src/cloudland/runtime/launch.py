"""Launching an instance's process: resolve the command, build the argv, spawn.

Owned by the runtime drivers (`process.py`, and through it `sandbox.py`).

Joining the cgroups before user code runs: Python's `preexec_fn` would force a
full fork() of the (large) CloudLand process instead of vfork — measured 1.3 ms
per spawn from a small parent and 5 ms from a 300 MiB one, all of it on the
event loop.  Instead the child starts as a tiny `sh` that writes its own pid
into each `cgroup.procs` and then execs the command: no race (nothing of the
user's runs before the move) and spawning stays a vfork (~0.5 ms).  The move
itself may wait for an RCU grace period in the kernel (v1 hierarchies), 10-25 ms
here — in the child, not on the event loop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from cloudland.runtime.driver import StartError
from cloudland.runtime.logs import open_log

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Join every cgroup given as "$1".."$n" then exec the rest; runs as the child itself.
_JOIN_CGROUPS = ('n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || '
                 '{ echo "cloudland: could not join cgroup $1" >&2; exit 125; }; '
                 'shift; n=$((n-1)); done; exec "$@"')


def spawn(argv: list[str], env: dict[str, str], cwd: str, log_dir: Path,
          cgroup_procs: list[str]) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session with its output appended to the logs in `log_dir`,
    after joining every cgroup in `cgroup_procs`.  The caller owns the Popen (and reaps)."""
    command = argv[0]
    if cgroup_procs:
        argv = ["/bin/sh", "-c", _JOIN_CGROUPS, "sh", str(len(cgroup_procs)), *cgroup_procs,
                *argv]
    out, err = open_log(log_dir, "stdout"), open_log(log_dir, "stderr")
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                cwd=cwd, env=env, start_new_session=True)
    except OSError as exc:
        raise StartError("StartFailed", f"could not start {command}: {exc}") from exc
    finally:
        os.close(out)
        os.close(err)


def resolve_command(name: str, path: str, cwd: str) -> str:
    """The executable `name` names: a path (relative to `cwd`) or a lookup in `path`."""
    if "/" in name:
        candidate = os.path.join(cwd, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
        raise StartError("CommandNotFound", f"command '{name}' not found or not executable "
                         f"(looked at {candidate})", hint="check the path in command")
    found = shutil.which(name, path=path)
    if found is None:
        raise StartError("CommandNotFound", f"command '{name}' not found on PATH ({path})",
                         hint="install it, give its absolute path, or set PATH in env")
    return os.path.abspath(found)


def python_argv(python: dict[str, str], cwd: str) -> list[str]:
    """argv that runs a `python:` workload without a zygote (exec'd)."""
    given = {k: v for k, v in python.items() if k in ("app", "module", "script") and v}
    if len(given) != 1:
        raise StartError("InvalidSpec", "python: set exactly one of app ('module:attr'), "
                         f"module or script (got {sorted(given) or 'none'})")
    kind, value = next(iter(given.items()))
    if kind == "app":
        if ":" not in value:
            raise StartError("InvalidSpec", f"python.app: '{value}' is not 'module:attr'")
        return [sys.executable, "-m", "cloudland.runtime.pyrun", "--app", value]
    if kind == "module":
        return [sys.executable, "-m", value]
    script = os.path.join(cwd, value)
    if not os.path.isfile(script):
        raise StartError("CommandNotFound", f"python script '{value}' not found in {cwd}",
                         hint="check python.script and workingDir")
    return [sys.executable, script]
