"""Shared fixtures: a real CloudLand started on port 0 in a temporary home."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

# Every CloudLand the tests start (directly or through `up --detach` and `demo`)
# puts its gateway on a free port, so parallel tests never fight over :8080.
os.environ["CLOUDLAND_GATEWAY_PORT"] = "0"
os.environ["CLOUDLAND_S3_PORT"] = "0"


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.01,
             message: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def installed_script(name: str) -> Path:
    """A console script of a package installed for this interpreter (not found via
    PATH, whose shims may belong to another Python): where pip put it, which is
    beside the interpreter in a virtualenv and /usr/local/bin for a distro Python."""
    return Path(sysconfig.get_path("scripts")) / name


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text` (a home path, say)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Running:
    home: Path
    proc: subprocess.Popen[bytes]

    @property
    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.home / "state.json").read_text()))

    @property
    def api(self) -> str:
        return str(self.state["api"])

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api, timeout=10)

    def cli(self, *args: str, input: str | None = None) -> CliResult:
        """Run a CLI command in-process through the real typer app, on this home
        (through CLOUDLAND_HOME, so arguments after `--` stay the command's own)."""
        return run_cli(*args, input=input, env={"CLOUDLAND_HOME": str(self.home)})

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def run_cli(*args: str, input: str | None = None,
            env: dict[str, str] | None = None) -> CliResult:
    from typer.testing import CliRunner

    from cloudland.cli.main import app as cli_app

    result = CliRunner().invoke(cli_app, list(args), input=input, env=env,
                                catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def start_cloudland(home: Path, *extra: str, env: dict[str, str] | None = None,
                    open_files: tuple[int, int] | None = None) -> Running:
    """Start `cloudland up` as a real process in its own process group (`env` adds to
    this process's environment; `open_files` is its (soft, hard) RLIMIT_NOFILE)."""
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "test-daemon.log", "ab")  # noqa: SIM115
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudland", "up", "--home", str(home), "--api-port", "0",
         *extra],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        # A crash in native code (SIGSEGV, SIGABRT) leaves every thread's traceback in the log.
        env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})},
        preexec_fn=None if open_files is None else
        lambda: resource.setrlimit(resource.RLIMIT_NOFILE, open_files),
    )
    log.close()
    running = Running(home, proc)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"cloudland up exited ({exit_description(proc.returncode)}, "
                f"{time.monotonic() - started:.1f}s after start):\n"
                + (home / "test-daemon.log").read_text())
        try:
            return running.state.get("pid") == proc.pid
        except (OSError, ValueError):
            return False

    try:
        wait_for(ready, timeout=20, message="cloudland up to become ready")
    except AssertionError as exc:
        exited = proc.returncode is not None
        running.stop()  # one that never became ready must not outlive the test
        if exited:
            raise
        raise AssertionError(f"{exc}; its log:\n"
                             + (home / "test-daemon.log").read_text()) from None
    return running


def exit_description(code: int) -> str:
    """A Popen returncode as words: a signal by name (who killed it is the question
    then, not what it logged), else the exit status."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


@pytest.fixture
def cloudland(tmp_path: Path) -> Iterator[Running]:
    running = start_cloudland(tmp_path / "home")
    try:
        yield running
    finally:
        running.stop()
