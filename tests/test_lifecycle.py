"""`up`, `down`, `status`: single instance per home, clean stop, crash safety."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from cloudland.client import Client
from cloudland.errors import CloudLandError
from cloudland.store import Store
from tests.conftest import Running, processes_mentioning, run_cli, start_cloudland, wait_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_status_reports_addresses_pid_and_health(cloudland: Running) -> None:
    result = cloudland.cli("status", "-o", "json")
    assert result.exit_code == 0, result.output
    info = result.json()
    assert info["running"] is True
    assert info["pid"] == cloudland.proc.pid
    assert info["addresses"]["api"] == cloudland.api
    assert info["health"] == "ok"
    assert {"api", "store", "controllers"} <= set(info["parts"])
    table = cloudland.cli("status")
    assert "controllers" in table.stdout and cloudland.api in table.stdout


def test_second_up_says_where_the_first_runs(cloudland: Running) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cloudland", "up", "--home", str(cloudland.home),
         "--api-port", "0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "already running" in result.stderr
    assert str(cloudland.proc.pid) in result.stderr and cloudland.api in result.stderr
    assert "Traceback" not in result.stderr


def test_down_stops_it_and_status_says_so(cloudland: Running) -> None:
    pid = cloudland.proc.pid
    result = cloudland.cli("down")
    assert result.exit_code == 0, result.output
    assert cloudland.proc.wait(10) == 0
    assert not _alive(pid)
    status = cloudland.cli("status", "-o", "json")
    assert status.exit_code == 3 and status.json()["running"] is False
    again = cloudland.cli("down")
    assert again.exit_code == 0 and "not running" in again.stdout


def test_detach_runs_in_background(tmp_path: Path) -> None:
    home = tmp_path / "h"
    result = subprocess.run(
        [sys.executable, "-m", "cloudland", "up", "--detach", "--home", str(home),
         "--api-port", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    state = Running(home, None).state  # type: ignore[arg-type]
    try:
        assert "CloudLand is up" in result.stdout
        assert httpx.get(state["api"] + "/readyz").status_code == 200
    finally:
        assert run_cli("down", "--home", str(home)).exit_code == 0
    wait_for(lambda: not _alive(int(state["pid"])), message="detached supervisor to exit")


def test_detach_warns_about_a_part_whose_port_is_taken(tmp_path: Path) -> None:
    home = tmp_path / "h"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "cloudland", "up", "--detach", "--home", str(home),
             "--gateway-port", str(port), "--s3-port", str(port)],
            # The API port from the environment, as the gateway's and S3's can be.
            env={**os.environ, "CLOUDLAND_API_PORT": "0"},
            capture_output=True, text=True, timeout=60)
        try:
            assert result.returncode == 0, result.stderr
            assert "CloudLand is up" in result.stdout
            # Up, but without a gateway and S3: it says so instead of a bare ✓.
            assert f"gateway: the gateway did not start: port {port} is already in use" \
                in result.stderr
            assert f"s3: the S3 server did not start on port {port}" in result.stderr
            assert "--gateway-port" in result.stderr and "--s3-port" in result.stderr
        finally:
            assert run_cli("down", "--home", str(home)).exit_code == 0


def test_commands_explain_when_cloudland_is_not_running(tmp_path: Path) -> None:
    result = run_cli("apply", "-f", str(tmp_path), "--home", str(tmp_path / "none"))
    assert result.exit_code == 1
    # no manifests is reported before the connection is tried
    (tmp_path / "a.yaml").write_text(
        "apiVersion: cloudland/v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    result = run_cli("apply", "-f", str(tmp_path / "a.yaml"), "--home", str(tmp_path / "none"))
    assert result.exit_code == 1
    assert "not running" in result.stderr and "cloudland up" in result.stderr


def test_kill_9_during_applies_loses_nothing_acknowledged(tmp_path: Path) -> None:
    home = tmp_path / "home"
    running = start_cloudland(home)
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        client = Client(running.api, timeout=5)
        i = 0
        while not stop.is_set():
            name = f"cm-{i}"
            try:
                client.apply([{"apiVersion": "cloudland/v1", "kind": "ConfigMap",
                               "metadata": {"name": name}, "data": {"i": str(i)}}])
            except CloudLandError:
                break  # the server died under us: this write was not acknowledged
            acknowledged.append(name)
            i += 1
        client.close()

    thread = threading.Thread(target=writer)
    thread.start()
    wait_for(lambda: len(acknowledged) >= 150, timeout=30, message="writes to flow")
    os.killpg(running.proc.pid, signal.SIGKILL)
    running.proc.wait(10)
    # Nothing CloudLand started outlives it (Envoy gets SIGTERM when its parent dies).
    wait_for(lambda: not processes_mentioning(str(home)), message="CloudLand's children to end")
    stop.set()
    thread.join(30)
    assert not thread.is_alive()

    restarted = start_cloudland(home)
    try:
        client = Client(restarted.api)
        present = {o["metadata"]["name"] for o in client.list("ConfigMap", "default")["items"]}
        missing = [n for n in acknowledged if n not in present]
        assert missing == [], f"acknowledged writes lost: {missing[:5]}"
        client.close()
    finally:
        restarted.stop()
    store = Store(home / "store.db")
    try:
        assert store.check() == []
        rvs = [c.rv for c in store.changes_since(0)]
        assert rvs == sorted(set(rvs))
    finally:
        store.close()


def test_a_home_that_is_not_a_directory_is_explained_not_a_traceback(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a home\n")
    for command in (("status",), ("down",), ("get", "svc"), ("up", "--api-port", "0"),
                    ("up", "--detach", "--api-port", "0")):
        result = run_cli(*command, "--home", str(a_file))
        assert result.exit_code == 1, (command, result.output)
        assert f"{a_file} is not a directory" in result.stderr, (command, result.output)
        assert "--home" in result.stderr and "CLOUDLAND_HOME" in result.stderr
    # A home that cannot be created says why, too.
    result = run_cli("up", "--detach", "--home", str(a_file / "below"))
    assert result.exit_code == 1, result.output
    assert f"cannot create the CloudLand home {a_file / 'below'}" in result.stderr
