"""Services end to end: a real CloudLand runs real processes, heals and rolls them."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudland.client import Client
from tests.conftest import Running, start_cloudland, wait_for

HELLO = '''
import os

def app(environ, start_response):
    body = ("hello " + os.environ.get("VERSION", "v1")).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
'''


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def zygotes_of(daemon: int) -> list[int]:
    """Zygote processes the daemon started (its children running zygote_main)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == daemon and b"zygote_main" in cmdline:
            found.append(int(proc.name))
    return found


def service(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "cloudland/v1", "kind": "Service", "metadata": {"name": name},
            "spec": spec}


def hello_spec(tmp_path: Path, replicas: int, version: str = "v1") -> dict[str, Any]:
    (tmp_path / "hello_app.py").write_text(HELLO)
    return {"replicas": replicas, "workingDir": str(tmp_path),
            "python": {"app": "hello_app:app"},
            "env": [{"name": "VERSION", "value": version}],
            "readinessProbe": {"httpGet": {"path": "/"}, "periodSeconds": 1},
            "terminationGracePeriodSeconds": 5}


def status(client: Client, name: str) -> dict[str, Any]:
    return client.get("Service", "default", name).get("status") or {}


def ready_count(client: Client, name: str, replicas: int) -> bool:
    st = status(client, name)
    return st.get("readyReplicas") == replicas == st.get("replicas")


def pids(client: Client, name: str) -> list[int]:
    return [i["pid"] for i in status(client, name).get("instances", []) if "pid" in i]


def test_replicas_answer_and_a_killed_one_is_replaced(cloudland: Running, tmp_path: Path) -> None:
    with Client(cloudland.api) as client:
        client.apply([service("hello", hello_spec(tmp_path, 3))])
        wait_for(lambda: ready_count(client, "hello", 3), timeout=30, message="3 ready")
        endpoints = status(client, "hello")["endpoints"]
        assert len(endpoints) == 3
        for ep in endpoints:
            assert httpx.get(f"http://{ep}/").text == "hello v1"
        victim = pids(client, "hello")[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in pids(client, "hello")
                 and ready_count(client, "hello", 3), timeout=30, message="replacement")
        restarted = [i for i in status(client, "hello")["instances"] if i["restarts"] == 1]
        assert len(restarted) == 1
        assert restarted[0]["lastExit"]["reason"] in ("SignalKill", "Error")


def test_crash_loop_is_visible_with_the_reason(cloudland: Running) -> None:
    with Client(cloudland.api) as client:
        client.apply([
            service("boom", {"command": ["sh", "-c", "echo 'cannot start: boom' >&2; exit 3"]}),
            service("missing", {"command": ["no-such-command-here"]}),
        ])

        def looping(name: str) -> dict[str, Any] | None:
            insts = status(client, name).get("instances", [])
            return insts[0] if insts and insts[0]["phase"] == "CrashLoopBackOff" else None

        boom = wait_for(lambda: looping("boom"), timeout=20, message="boom crash-looping")
        assert boom["lastExit"]["exitCode"] == 3
        assert "cannot start: boom" in boom["lastExit"]["message"]
        missing = wait_for(lambda: looping("missing"), timeout=20, message="missing looping")
        assert missing["lastExit"]["reason"] == "CommandNotFound"
        degraded = {c["type"]: c for c in status(client, "boom")["conditions"]}["Degraded"]
        assert degraded["status"] == "True" and degraded["reason"] == "CrashLoopBackOff"
        events = client.list("Event", "default")["items"]
        assert any(e["involvedObject"]["name"] == "boom" and e["type"] == "Warning"
                   for e in events)


def test_rolling_update_keeps_every_replica_ready(cloudland: Running, tmp_path: Path) -> None:
    with Client(cloudland.api) as client:
        client.apply([service("roll", hello_spec(tmp_path, 3, "v1"))])
        wait_for(lambda: ready_count(client, "roll", 3), timeout=30, message="v1 ready")
        old = set(pids(client, "roll"))
        rv = client.get("Service", "default", "roll")["metadata"]["resourceVersion"]
        client.apply([service("roll", hello_spec(tmp_path, 3, "v2"))])
        lowest = 3
        for event in client.watch("Service", "default", resource_version=rv):
            st = event["object"].get("status") or {}
            if st.get("observedGeneration") == 2:
                lowest = min(lowest, st.get("readyReplicas", 0))
            ready = {c["type"]: c["status"] for c in st.get("conditions", [])}.get("Ready")
            if st.get("updatedReplicas") == 3 and st.get("replicas") == 3 and ready == "True" \
                    and st.get("observedGeneration") == 2:
                break
        assert lowest >= 3, "a rolling update with maxUnavailable 0 dropped below 3 ready"
        assert not old & set(pids(client, "roll"))
        assert all(not alive(p) for p in old)
        st = status(client, "roll")
        assert [h["revision"] for h in st["history"]] == [1, 2]
        # v1's zygote is retired once no v1 instance is left; v2's stays warm.
        wait_for(lambda: len(zygotes_of(cloudland.proc.pid)) == 1, message="one zygote left")
        for ep in st["endpoints"]:
            assert httpx.get(f"http://{ep}/").text == "hello v2"


def test_scale_to_zero_and_down_leave_no_process(tmp_path: Path) -> None:
    running = start_cloudland(tmp_path / "home")
    try:
        with Client(running.api) as client:
            client.apply([service("s", hello_spec(tmp_path, 2)),
                          service("t", {"command": ["sleep", "300"], "replicas": 2})])
            wait_for(lambda: ready_count(client, "s", 2) and ready_count(client, "t", 2),
                     timeout=30, message="both ready")
            first = pids(client, "s")
            client.patch("Service", "default", "s", {"spec": {"replicas": 0}})
            wait_for(lambda: status(client, "s").get("replicas") == 0, timeout=30,
                     message="scaled to zero")
            wait_for(lambda: not any(alive(p) for p in first), message="instances gone")
            remaining = pids(client, "t")
        assert running.cli("down").exit_code == 0
        running.proc.wait(30)
        wait_for(lambda: not any(alive(p) for p in remaining), message="down stops all")
    finally:
        running.stop()


@pytest.mark.timeout(120)
def test_instances_survive_a_crash_and_are_adopted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    running = start_cloudland(home)
    try:
        with Client(running.api) as client:
            client.apply([service("keep", hello_spec(tmp_path, 2))])
            wait_for(lambda: ready_count(client, "keep", 2), timeout=30, message="ready")
            before = sorted(pids(client, "keep"))
        os.killpg(running.proc.pid, signal.SIGKILL)
        running.proc.wait(10)
        assert all(alive(p) for p in before), "instances died with CloudLand"
        running = start_cloudland(home)
        with Client(running.api) as client:
            wait_for(lambda: ready_count(client, "keep", 2), timeout=30, message="adopted")
            assert sorted(pids(client, "keep")) == before  # re-adopted, not restarted
            for ep in status(client, "keep")["endpoints"]:
                assert httpx.get(f"http://{ep}/").text == "hello v1"
    finally:
        running.stop()
    wait_for(lambda: not any(alive(p) for p in before), message="down stops adopted ones")


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed "
                    "(apt-get install nginx; .ci/run installs it)")
def test_the_nginx_example_serves(cloudland: Running) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "hello" / "nginx.yaml"
    result = cloudland.cli("apply", "-f", str(example))
    assert result.exit_code == 0, result.output
    with Client(cloudland.api) as client:
        wait_for(lambda: ready_count(client, "nginx", 2), timeout=30, message="nginx ready")
        for ep in status(client, "nginx")["endpoints"]:
            assert httpx.get(f"http://{ep}/").text == "hello from nginx\n"
        # Its config and temp files live in the instance's own scratch directory,
        # which goes with the instance: nothing is left behind in /tmp.
        configs = []
        for inst in status(client, "nginx")["instances"]:
            # "nginx: master process nginx -c PATH" (nginx rewrites its argv)
            argv = Path(f"/proc/{inst['pid']}/cmdline").read_bytes().replace(b"\0", b" ")
            configs.append(Path(argv.split(b" -c ")[1].split()[0].decode()))
        assert all(c.is_file() for c in configs)
        client.delete("Service", "default", "nginx")
        wait_for(lambda: not client.list("Service", "default")["items"], timeout=30,
                 message="nginx deleted")
    assert not any(c.parent.exists() for c in configs), configs


def test_faults_are_reported_and_never_block(cloudland: Running, tmp_path: Path) -> None:
    """OOM, an app ignoring SIGTERM, and a probe that hangs, side by side."""
    hog = "x = bytearray(400 * 1024 * 1024); import time; time.sleep(60)"
    stubborn = "trap '' TERM; while true; do sleep 0.1; done"
    with Client(cloudland.api) as client:
        client.apply([
            service("hog", {"command": ["python3", "-c", hog],
                            "resources": {"limits": {"memory": "64Mi"}}}),
            service("stubborn", {"command": ["sh", "-c", stubborn],
                                 "terminationGracePeriodSeconds": 1}),
            service("hangs", {"command": ["sleep", "300"],
                              "readinessProbe": {"exec": {"command": ["sleep", "300"]},
                                                 "timeoutSeconds": 1, "periodSeconds": 1}}),
        ])

        def exited(name: str) -> dict[str, Any] | None:
            insts = status(client, name).get("instances", [])
            return insts[0]["lastExit"] if insts and "lastExit" in insts[0] else None

        oom = wait_for(lambda: exited("hog"), timeout=30, message="the hog to be killed")
        assert oom["reason"] == "OOMKilled", oom
        wait_for(lambda: ready_count(client, "stubborn", 1), timeout=20, message="stubborn up")
        pid = pids(client, "stubborn")[0]
        hangs = status(client, "hangs")
        assert hangs["readyReplicas"] == 0 and hangs["replicas"] == 1
        client.delete("Service", "default", "stubborn")
        wait_for(lambda: not alive(pid), timeout=15, message="SIGKILL after the grace period")
        wait_for(lambda: "stubborn" not in [s["metadata"]["name"] for s in
                                            client.list("Service", "default")["items"]],
                 timeout=15, message="the Service to be deleted after its instances")
        assert status(client, "hangs")["readyReplicas"] == 0  # still probing, still unready


def test_a_service_deleted_right_after_a_restart_stops_its_instances(tmp_path: Path) -> None:
    home = tmp_path / "home"
    running = start_cloudland(home)
    try:
        with Client(running.api) as client:
            client.apply([service("gone", {"command": ["sleep", "300"], "replicas": 2})])
            wait_for(lambda: ready_count(client, "gone", 2), timeout=30, message="ready")
            before = pids(client, "gone")
        os.killpg(running.proc.pid, signal.SIGKILL)
        running.proc.wait(10)
        running = start_cloudland(home)
        with Client(running.api) as client:
            client.delete("Service", "default", "gone")
            wait_for(lambda: not any(alive(p) for p in before), timeout=30,
                     message="the orphaned instances to be stopped")
            wait_for(lambda: not client.list("Service", "default")["items"],
                     message="the Service to be deleted")
    finally:
        running.stop()
