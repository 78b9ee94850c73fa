"""`logs`, `top`, `scale` and `rollout` against a real API server over HTTP.

The server here is the real app (`create_app`, which serves `workload_routes`) on
uvicorn, on port 0, with no controllers: the tests write a Service's status
themselves (instances whose `logDir` holds files they wrote, pids of processes
they started, revision history), so nothing overwrites it and each command is
tested on its own.  `test_logs_and_top_of_a_real_service` runs the whole
CloudLand (controller and process driver) for the path end to end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml

from cloudland.api.app import create_app
from cloudland.api.service import ResourceService
from cloudland.api.workloads import proc_usage, workload_paths
from cloudland.client import Client
from cloudland.daemon.supervisor import bind
from cloudland.home import Home, HomeLock
from cloudland.runtime import procfs
from cloudland.store import Store
from tests.conftest import CliResult, Running, run_cli, wait_for

Object = dict[str, Any]


@dataclass
class Server:
    home: Home
    api: Client

    def cli(self, *args: str) -> CliResult:
        return run_cli(*args, "--home", str(self.home.root))

    def logs_dir(self, instance: str, run: int = 0) -> Path:
        return self.home.log_dir / "instances" / f"default.{instance}" / str(run)

    def create(self, name: str = "web", **spec: Any) -> Object:
        return self.api.create({"apiVersion": "cloudland/v1", "kind": "Service",
                                "metadata": {"name": name},
                                "spec": {"command": ["app", "v1"], **spec}})

    def set_status(self, name: str = "web", **status: Any) -> Object:
        return self.api.update_status("Service", "default", name, status)

    def instance(self, id_: str, index: int, *, restarts: int = 0, **more: Any) -> Object:
        return {"id": id_, "index": index, "phase": "Running", "ready": True,
                "restarts": restarts, "logDir": str(self.logs_dir(id_, restarts)), **more}


@contextmanager
def serving(home: Home, usage: bool = True) -> Iterator[Client]:
    """The API app with the workload routes, served on a real socket, found through
    the home like a running CloudLand (lock held, state.json written)."""
    home.ensure()
    lock = HomeLock(home)
    assert lock.acquire()
    store = Store(home.store_path)
    service = ResourceService(store)
    app = create_app(service, usage=proc_usage(service) if usage else None,
                     log_root=home.log_dir / "instances")
    sock = bind("127.0.0.1", 0)
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                       timeout_graceful_shutdown=1))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: uv.started, message="the API server to start")
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    home.write_state({"pid": os.getpid(), "api": url, "home": str(home.root)})
    try:
        with Client(url) as api:
            yield api
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()
        store.close()
        home.clear_state()
        lock.release()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    home = Home(tmp_path / "home")
    with serving(home) as api:
        yield Server(home, api)


def write_log(log_dir: Path, stream: str, *lines: str, age: float = 0.0) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{stream}.log"
    with open(path, "a") as f:
        f.writelines(line + "\n" for line in lines)
    if age:
        then = time.time() - age
        os.utime(path, (then, then))


def two_instances(server: Server) -> None:
    server.create(replicas=2)
    a, b = server.instance("web-aaaaa-1", 0), server.instance("web-aaaaa-2", 1)
    write_log(Path(a["logDir"]), "stdout", "a one", "a two", "a three", age=2)
    write_log(Path(a["logDir"]), "stderr", "a oops")
    write_log(Path(b["logDir"]), "stdout", "b one")
    server.set_status(instances=[a, b])


# ---- logs ------------------------------------------------------------------------


def test_logs_prefix_each_line_with_its_instance_and_mark_stderr(server: Server) -> None:
    two_instances(server)
    result = server.cli("logs", "web")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "[web-aaaaa-1] a one", "[web-aaaaa-1] a two", "[web-aaaaa-1] a three",
        "[web-aaaaa-1 stderr] a oops", "[web-aaaaa-2] b one"]

    bare = server.cli("logs", "svc/web", "--no-prefix", "--stream", "stderr")
    assert bare.stdout.splitlines() == ["a oops"]


def test_logs_of_one_instance_tail_and_since(server: Server) -> None:
    two_instances(server)
    assert server.cli("logs", "web", "--instance", "1").stdout.splitlines() == [
        "[web-aaaaa-2] b one"]
    assert server.cli("logs", "web", "-i", "0", "--tail", "2").stdout.splitlines() == [
        "[web-aaaaa-1] a three", "[web-aaaaa-1 stderr] a oops"]
    nothing = server.cli("logs", "web", "--tail", "0")
    assert nothing.stdout == "" and "No log lines from service/web yet." in nothing.stderr
    a_dir = server.logs_dir("web-aaaaa-1")
    write_log(a_dir, "stderr", age=3600)  # both of a's files are now an hour old
    write_log(a_dir, "stdout", age=3600)
    assert server.cli("logs", "web", "--since", "5m").stdout.splitlines() == [
        "[web-aaaaa-2] b one"]


def test_logs_of_an_unknown_instance_list_the_real_ones(server: Server) -> None:
    two_instances(server)
    result = server.cli("logs", "web", "--instance", "7")
    assert result.exit_code == 1
    assert "service/web has no instance 7" in result.stderr
    assert "its instances are: 0, 1" in result.stderr
    missing = server.cli("logs", "nope")
    assert missing.exit_code == 1
    assert 'service "nope" not found in namespace "default"' in missing.stderr
    assert server.cli("logs", "cm/web").exit_code == 1


def test_logs_previous_reads_the_run_before_a_restart(server: Server) -> None:
    server.create()
    inst = server.instance("web-bbbbb-1", 0, restarts=1)
    write_log(server.logs_dir("web-bbbbb-1", 0), "stdout", "first run")
    write_log(server.logs_dir("web-bbbbb-1", 0), "stderr", "Traceback: boom")
    write_log(server.logs_dir("web-bbbbb-1", 1), "stdout", "second run")
    server.set_status(instances=[inst])

    assert server.cli("logs", "web").stdout.splitlines() == ["[web-bbbbb-1] second run"]
    assert server.cli("logs", "web", "--previous").stdout.splitlines() == [
        "[web-bbbbb-1] first run", "[web-bbbbb-1 stderr] Traceback: boom"]

    server.set_status(instances=[server.instance("web-bbbbb-1", 0, restarts=0)])
    result = server.cli("logs", "web", "-p")
    assert result.exit_code == 1
    assert "has no previous run" in result.stderr


def test_logs_follow_streams_appended_lines_and_restarts(server: Server) -> None:
    server.create()
    log_dir = server.logs_dir("web-ccccc-1", 0)
    write_log(log_dir, "stdout", "before")
    server.set_status(instances=[server.instance("web-ccccc-1", 0)])
    with following(server, "web") as seen:
        proc = seen.proc
        seen.wait_for("[web-ccccc-1] before")
        write_log(log_dir, "stdout", "appended")
        seen.wait_for("[web-ccccc-1] appended")
        # The instance restarts: its next run logs to a new directory.
        write_log(server.logs_dir("web-ccccc-1", 1), "stderr", "after restart")
        server.set_status(instances=[server.instance("web-ccccc-1", 0, restarts=1)])
        seen.wait_for("[web-ccccc-1 stderr] after restart")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(10) == 0
        assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


@contextmanager
def following(server: Server, ref: str) -> Iterator[Lines]:
    """`cloudland logs REF -f` as a process, its lines read as they come; killed after."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudland", "logs", ref, "-f", "--home",
         str(server.home.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield Lines(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def a_job(server: Server, name: str = "migrate") -> list[Object]:
    """A Job with two attempts (the first failed), as its controller would report them."""
    server.api.create({"apiVersion": "cloudland/v1", "kind": "Job", "metadata": {"name": name},
                       "spec": {"command": ["migrate"]}})
    first = {**server.instance(f"{name}-0", 0), "phase": "Failed"}
    second = server.instance(f"{name}-1", 1)
    write_log(Path(first["logDir"]), "stderr", "no database yet")
    write_log(Path(second["logDir"]), "stdout", "migrated 3 tables")
    return [first, second]


def test_logs_of_a_job_show_its_attempts(server: Server) -> None:
    server.api.update_status("Job", "default", "migrate", {"attempts": a_job(server)})
    want = ["[migrate-0 stderr] no database yet", "[migrate-1] migrated 3 tables"]
    for ref in ("job/migrate", "jobs/migrate", "migrate"):  # bare: no Service has the name
        result = server.cli("logs", ref)
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == want, ref
    assert server.cli("logs", "job/migrate", "-i", "1").stdout.splitlines() == want[1:]
    wrong = server.cli("logs", "svc/migrate")
    assert wrong.exit_code == 1 and "not found" in wrong.stderr
    kind = server.cli("logs", "cm/migrate")
    assert kind.exit_code == 1
    assert "does not name a Service or a Job; use NAME, svc/NAME, job/NAME" in kind.stderr
    server.api.create({"apiVersion": "cloudland/v1", "kind": "Job", "metadata": {"name": "quiet"},
                       "spec": {"command": ["true"]}})
    assert "No log lines from job/quiet.\n" in server.cli("logs", "job/quiet").stderr
    server.create("migrate")  # now a bare name means the Service
    assert "No log lines from service/migrate" in server.cli("logs", "migrate").stderr


def test_logs_follow_a_job_until_it_finishes(server: Server) -> None:
    attempts = a_job(server)
    server.api.update_status("Job", "default", "migrate", {"attempts": attempts})
    with following(server, "job/migrate") as seen:
        seen.wait_for("[migrate-1] migrated 3 tables")
        write_log(Path(attempts[1]["logDir"]), "stdout", "done")
        server.api.update_status("Job", "default", "migrate", {
            "attempts": attempts, "conditions": [
                {"type": "Complete", "status": "True", "reason": "Completed"}]})
        assert seen.proc.wait(10) == 0  # ends by itself: a finished Job writes no more
        seen.wait_for("[migrate-1] done")
    # Asked after the end, -f prints what there is and returns at once.
    done = server.cli("logs", "job/migrate", "-f")
    assert done.exit_code == 0 and done.stdout.splitlines()[-1] == "[migrate-1] done"


class Lines:
    """A process's stdout lines, read by a thread so a test can wait with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, line: str) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and line not in self.lines:
                raise AssertionError(f"exited {self.proc.returncode}: {self.lines}")
            return line in self.lines
        wait_for(seen, timeout=10, message=f"{line!r} in {self.lines}")


# ---- top -------------------------------------------------------------------------


def test_top_shows_cpu_and_memory_of_each_instance(server: Server) -> None:
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        stat = procfs.read_stat(sleeper.pid)
        assert stat is not None
        server.create()
        server.create("idle")
        handle = {"pid": sleeper.pid, "pgid": sleeper.pid, "start_ticks": stat.start_ticks}
        server.set_status(instances=[server.instance("web-ddddd-1", 0, pid=sleeper.pid,
                                                     handle=handle),
                                     server.instance("web-ddddd-2", 1, phase="Pending")])
        result = server.cli("top", "web")
        assert result.exit_code == 0, result.output
        rows = [line.split() for line in result.stdout.strip().splitlines()]
        assert rows[0] == ["INSTANCE", "PID", "CPU%", "MEMORY"]
        assert rows[1][:2] == ["web-ddddd-1", str(sleeper.pid)]
        assert rows[1][2].endswith("%") and rows[1][3].endswith("iB")
        assert rows[2] == ["web-ddddd-2", "-", "-", "-"]

        every = server.cli("top")
        assert [r.split()[:2] for r in every.stdout.strip().splitlines()] == [
            ["SERVICE", "INSTANCE"], ["web", "web-ddddd-1"], ["web", "web-ddddd-2"]]

        as_json = server.cli("top", "-o", "json")
        assert as_json.exit_code == 0, as_json.output
        items = as_json.json()["items"]
        assert [(i["namespace"], i["service"], i["id"], i["pid"]) for i in items] == [
            ("default", "web", "web-ddddd-1", sleeper.pid), ("default", "web", "web-ddddd-2", None)]
        assert items[0]["memoryBytes"] > 0 and items[0]["cpuPercent"] >= 0
        idle = yaml.safe_load(server.cli("top", "idle", "-o", "yaml").stdout)
        assert idle == {"items": []}  # an empty list for scripts, not a message

        # A Job's attempts too, as job/NAME or a bare NAME no Service has.
        first, second = a_job(server)
        server.api.update_status("Job", "default", "migrate", {"attempts": [
            first, {**second, "pid": sleeper.pid, "handle": handle}]})
        for ref in ("job/migrate", "migrate"):
            job = server.cli("top", ref, "-o", "json")
            assert job.exit_code == 0, job.output
            assert [(i["job"], i["id"], i["pid"]) for i in job.json()["items"]] == [
                ("migrate", "migrate-0", None), ("migrate", "migrate-1", sleeper.pid)], ref
        assert "migrate-1" in server.cli("top", "job/migrate").stdout
        assert "does not name a Service or a Job" in server.cli("top", "cm/migrate").stderr
    finally:
        sleeper.kill()
        sleeper.wait()


def test_top_without_a_usage_provider_says_so(tmp_path: Path) -> None:
    with serving(Home(tmp_path / "home"), usage=False) as api:
        server = Server(Home(tmp_path / "home"), api)
        server.create()
        result = server.cli("top", "web")
        assert result.exit_code == 1
        assert "resource usage is not available" in result.stderr
        bad = api._http.get("/apis/cloudland/v1/namespaces/default/services/web/log",
                            params={"tail": "-3"})
        assert bad.status_code == 400 and bad.json()["field"] == "tail"
    paths = workload_paths()
    assert "/apis/cloudland/v1/namespaces/{namespace}/services/{name}/log" in paths
    assert all(op["get"]["operationId"] for op in paths.values())


# ---- scale and rollout -----------------------------------------------------------


def test_scale_patches_replicas(server: Server) -> None:
    server.create(replicas=1)
    result = server.cli("scale", "service/web", "--replicas", "4")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "service/web scaled to 4"
    assert server.api.get("Service", "default", "web")["spec"]["replicas"] == 4
    assert server.cli("scale", "web", "--replicas", "-1").exit_code != 0
    assert "not found" in server.cli("scale", "db", "--replicas", "1").stderr


def history_of(server: Server) -> list[Object]:
    spec = server.api.get("Service", "default", "web")["spec"]
    v1 = {k: v for k, v in spec.items() if k not in ("replicas", "strategy", "autoscale")}
    v2 = {**v1, "command": ["app", "v2"], "env": [{"name": "MODE", "value": "fast"}]}
    return [{"revision": 1, "templateHash": "11111111", "template": v1,
             "createdAt": "2026-01-01T00:00:00Z"},
            {"revision": 2, "templateHash": "22222222", "template": v2,
             "createdAt": "2026-01-02T00:00:00Z"}]


def test_rollout_history_and_undo(server: Server) -> None:
    server.create(replicas=3)
    history = history_of(server)
    server.api.patch("Service", "default", "web", {"spec": {
        "command": ["app", "v2"], "env": [{"name": "MODE", "value": "fast"}]}})
    server.set_status(revision=2, history=history)

    listed = server.cli("rollout", "history", "web")
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.stdout.strip().splitlines()]
    assert rows[0] == ["CURRENT", "REVISION", "CREATED", "CHANGE"]
    assert rows[1][0] == "1" and rows[1][-1] == "initial"  # no mark: not current
    assert rows[2][:2] == ["*", "2"] and rows[2][-2:] == ["command,", "env.MODE"]
    shown = server.cli("rollout", "history", "web", "--revision", "1")
    assert "- v1" in shown.stdout
    as_json = server.cli("rollout", "history", "web", "-o", "json")
    assert as_json.exit_code == 0, as_json.output
    assert as_json.json() == {"current": 2, "items": history}
    as_yaml = yaml.safe_load(server.cli("rollout", "history", "web", "-o", "yaml").stdout)
    assert [e["revision"] for e in as_yaml["items"]] == [1, 2]
    one = server.cli("rollout", "history", "web", "--revision", "2", "-o", "json")
    assert one.json()["command"] == ["app", "v2"]

    undone = server.cli("rollout", "undo", "svc/web")
    assert undone.exit_code == 0, undone.output
    assert undone.stdout.strip() == "service/web rolled back to revision 1"
    spec = server.api.get("Service", "default", "web")["spec"]
    assert spec["command"] == ["app", "v1"] and spec["env"] == [] and spec["replicas"] == 3

    again = server.cli("rollout", "undo", "web", "--to-revision", "1")
    assert "skipped rollback" in again.stdout
    missing = server.cli("rollout", "undo", "web", "--to-revision", "9")
    assert missing.exit_code == 1 and "its revisions: 1, 2" in missing.stderr


def test_rollout_undo_needs_an_earlier_revision(server: Server) -> None:
    server.create()
    server.set_status(revision=1, history=history_of(server)[:1])
    result = server.cli("rollout", "undo", "web")
    assert result.exit_code == 1
    assert "no earlier revision" in result.stderr


def rolled_out(generation: int, replicas: int, **counts: int) -> Object:
    return {"observedGeneration": generation, "replicas": replicas,
            "updatedReplicas": counts.get("updated", replicas),
            "readyReplicas": counts.get("ready", replicas),
            "availableReplicas": counts.get("ready", replicas)}


def test_rollout_status_done_and_timed_out(server: Server) -> None:
    obj = server.create(replicas=2)
    generation = obj["metadata"]["generation"]
    server.set_status(**rolled_out(generation, 2))
    done = server.cli("rollout", "status", "web")
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "service/web successfully rolled out"

    server.set_status(**rolled_out(generation, 2, ready=1), conditions=[
        {"type": "Degraded", "status": "True", "reason": "CrashLoopBackOff",
         "message": "web-x-2: exit code 1"}])
    late = server.cli("rollout", "status", "web", "--timeout", "1")
    assert late.exit_code == 1
    assert late.stdout.strip() == ("Waiting for rollout to finish: 1 of 2 updated replicas "
                                   "are ready...")
    assert "timed out after 1" in late.stderr
    assert "Degraded: CrashLoopBackOff: web-x-2: exit code 1" in late.stderr

    once = server.cli("rollout", "status", "web", "--no-watch")
    assert once.exit_code == 0 and "1 of 2" in once.stdout


def test_rollout_status_follows_progress_until_done(server: Server) -> None:
    obj = server.create(replicas=2)
    generation = obj["metadata"]["generation"]
    server.set_status(**rolled_out(generation, 2, updated=0, ready=0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudland", "rollout", "status", "web", "--timeout", "30",
         "--home", str(server.home.root)], stdout=subprocess.PIPE, text=True)
    try:
        seen = Lines(proc)
        seen.wait_for("Waiting for rollout to finish: 0 out of 2 new replicas have been "
                      "updated...")
        server.set_status(**rolled_out(generation, 3, updated=2, ready=1))
        seen.wait_for("Waiting for rollout to finish: 1 old replicas are pending "
                      "termination...")
        server.set_status(**rolled_out(generation, 2))
        assert proc.wait(10) == 0
        wait_for(lambda: "service/web successfully rolled out" in seen.lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- the whole CloudLand ---------------------------------------------------------


def test_logs_and_top_of_a_real_service(cloudland: Running) -> None:
    """Controller, process driver and the routes as `cloudland up` wires them."""
    with Client(cloudland.api) as api:
        api.create({"apiVersion": "cloudland/v1", "kind": "Service",
                    "metadata": {"name": "echo"},
                    "spec": {"replicas": 2, "command": [
                        "sh", "-c", 'echo "hello from $PORT"; echo warn >&2; exec sleep 60'],
                        "terminationGracePeriodSeconds": 1}})

        def logged() -> CliResult | None:
            result = cloudland.cli("logs", "echo")
            # "Not Found" here means create_app does not serve workload_routes.
            assert result.exit_code == 0, result.output
            return result if result.stdout.count("hello from") == 2 else None

        result = wait_for(logged, timeout=20, interval=0.2, message="both instances to log")
        assert result.stdout.count(" stderr] warn") == 2
        top = cloudland.cli("top", "echo")
        assert top.exit_code == 0, top.output
        pids = [row.split()[1] for row in top.stdout.strip().splitlines()[1:]]
        assert len(pids) == 2 and all(p.isdigit() for p in pids)
        assert cloudland.cli("rollout", "status", "echo", "--timeout", "20").exit_code == 0


def test_logs_follow_a_real_job_to_its_end(cloudland: Running) -> None:
    """The Job controller's attempts, their log files and `-f` ending with the Job."""
    with Client(cloudland.api) as api:
        api.create({"apiVersion": "cloudland/v1", "kind": "Job", "metadata": {"name": "count"},
                    "spec": {"command": ["sh", "-c", "echo one; sleep 1; echo two >&2"]}})
    follow = subprocess.run(
        [sys.executable, "-m", "cloudland", "logs", "job/count", "-f"], capture_output=True,
        text=True, timeout=60, env={**os.environ, "CLOUDLAND_HOME": str(cloudland.home)})
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout.splitlines() == ["[count-0] one", "[count-0 stderr] two"]
