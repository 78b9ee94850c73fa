"""`get`, `describe`, `delete`, `events`, `schema` against a real running CloudLand."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudland.cli.columns import lookup, show
from cloudland.client import Client
from cloudland.model.kinds import KINDS
from tests.conftest import Running, run_cli, wait_for

Object = dict[str, Any]


def _configmap(name: str, *, namespace: str = "default", labels: dict[str, str] | None = None,
               data: dict[str, str] | None = None, **meta: Any) -> Object:
    return {"apiVersion": "cloudland/v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}, **meta},
            "data": data or {}}


@pytest.fixture
def api(cloudland: Running) -> Iterator[Client]:
    with Client(cloudland.api) as client:
        yield client


def _lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


# ---- get -------------------------------------------------------------------------


def test_get_lists_a_table_filtered_by_namespace_and_selector(
        cloudland: Running, api: Client) -> None:
    api.create(_configmap("web", labels={"app": "web"}, data={"a": "1", "b": "2"}))
    api.create(_configmap("db", labels={"app": "db"}))
    api.create(_configmap("other", namespace="team"))

    result = cloudland.cli("get", "cm")
    assert result.exit_code == 0, result.output
    rows = _lines(result.stdout)
    assert rows[0] == ["NAME", "DATA", "AGE"]
    assert [r[:2] for r in rows[1:]] == [["db", "0"], ["web", "2"]]

    only_web = cloudland.cli("get", "ConfigMaps", "-l", "app=web")
    assert [r[0] for r in _lines(only_web.stdout)[1:]] == ["web"]

    everywhere = _lines(cloudland.cli("get", "configmap", "-A").stdout)
    assert everywhere[0] == ["NAMESPACE", "NAME", "DATA", "AGE"]
    assert ["team", "other"] in [r[:2] for r in everywhere[1:]]

    in_team = cloudland.cli("get", "cm", "-n", "team")
    assert [r[0] for r in _lines(in_team.stdout)[1:]] == ["other"]


def test_a_piped_table_keeps_each_row_on_one_line(cloudland: Running, api: Client) -> None:
    # Wider than 80 columns: a script reading the output (grep, awk, cut) still gets
    # one whole row per line, as from kubectl, not cells folded onto the next lines.
    namespace, name = "team-" + "n" * 58, "settings-" + "s" * 54
    api.create(_configmap(name, namespace=namespace))
    rows = _lines(cloudland.cli("get", "cm", "-A").stdout)
    assert rows[0] == ["NAMESPACE", "NAME", "DATA", "AGE"]
    assert [namespace, name, "0"] in [r[:3] for r in rows[1:]]
    assert all(len(r) == 4 for r in rows), rows


def test_get_wide_adds_the_wide_columns(cloudland: Running, api: Client) -> None:
    api.create({"apiVersion": "cloudland/v1", "kind": "Bucket",
                "metadata": {"name": "photos"}, "spec": {"access": "public-read"}})
    narrow = _lines(cloudland.cli("get", "bkt").stdout)
    assert narrow[0] == ["NAME", "ACCESS", "READY", "AGE"]
    wide = _lines(cloudland.cli("get", "buckets", "-o", "wide").stdout)
    assert wide[0] == ["NAME", "ACCESS", "READY", "DELETION", "AGE"]
    assert wide[1][:2] == ["photos", "public-read"]
    assert wide[1][3] == "retain"


def test_get_prints_objects_and_lists_as_json_and_yaml(cloudland: Running, api: Client) -> None:
    api.create(_configmap("web", data={"k": "v"}))

    one = cloudland.cli("get", "cm", "web", "-o", "json")
    assert one.exit_code == 0, one.output
    assert one.json()["metadata"]["name"] == "web"
    assert one.json()["data"] == {"k": "v"}

    as_yaml = yaml.safe_load(cloudland.cli("get", "cm", "web", "-o", "yaml").stdout)
    assert as_yaml["kind"] == "ConfigMap"

    listed = cloudland.cli("get", "cm", "-o", "json").json()
    assert listed["kind"] == "ConfigMapList"
    assert [o["metadata"]["name"] for o in listed["items"]] == ["web"]
    listed_yaml = yaml.safe_load(cloudland.cli("get", "cm", "-o", "yaml").stdout)
    assert listed_yaml["items"][0]["data"] == {"k": "v"}


def test_get_of_nothing_says_so_on_stderr(cloudland: Running) -> None:
    result = cloudland.cli("get", "services")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "No services found in namespace default." in result.stderr


def test_get_of_a_missing_name_fails(cloudland: Running) -> None:
    result = cloudland.cli("get", "svc", "nope")
    assert result.exit_code == 1
    assert 'service "nope" not found in namespace "default"' in result.stderr
    assert "metadata.name" not in result.stderr  # the name came from the command line
    assert "hint: list what exists with: cloudland get service -n default" in result.stderr
    assert "Traceback" not in result.output


def test_unknown_kind_lists_the_known_ones(tmp_path: Path) -> None:
    result = run_cli("get", "widgets", "--home", str(tmp_path))
    assert result.exit_code == 1
    assert "'widgets' is not a known kind" in result.stderr
    assert "service (svc)" in result.stderr
    assert "configmap (cm)" in result.stderr


def test_get_without_a_running_cloudland_says_how_to_start_it(tmp_path: Path) -> None:
    result = run_cli("get", "svc", "--home", str(tmp_path))
    assert result.exit_code == 1
    assert "CloudLand is not running" in result.stderr
    assert "hint: start it with: cloudland up" in result.stderr
    assert "Traceback" not in result.output


def test_get_services_and_jobs_read_like_kubectl(cloudland: Running, api: Client) -> None:
    """READY is ready/desired as for a Deployment; Jobs have STATUS, COMPLETIONS, DURATION."""
    api.create({"apiVersion": "cloudland/v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"replicas": 2, "command": ["sleep", "60"],
                         "terminationGracePeriodSeconds": 1}})
    api.create({"apiVersion": "cloudland/v1", "kind": "Job", "metadata": {"name": "once"},
                "spec": {"command": ["true"]}})

    def rows(kind: str, want: list[str]) -> list[list[str]] | None:
        listed = _lines(cloudland.cli("get", kind).stdout)
        return listed if listed[1][:len(want)] == want else None

    services = wait_for(lambda: rows("svc", ["web", "2/2"]), timeout=20,
                        message="both instances ready")
    assert services[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert services[1][2:4] == ["2", "2"]
    jobs = wait_for(lambda: rows("jobs", ["once", "Completed", "1/1"]), timeout=20,
                    message="the Job to complete")
    assert jobs[0] == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert jobs[1][3].endswith("s")


def test_column_paths() -> None:
    obj = {"data": {"a": "1"}, "status": {"conditions": [
        {"type": "Ready", "status": "False"}, {"type": "Synced", "status": "True"}]},
        "spec": {"hosts": ["a", "b"], "on": True},
        "involvedObject": {"kind": "Service", "name": "web"}}
    assert lookup(obj, "data#") == 1
    assert lookup(obj, "status.conditions[Ready]") == "NotReady"
    assert lookup(obj, "status.conditions[Synced]") == "Synced"
    assert lookup(obj, "status.conditions[Other]") == "-"
    assert lookup({}, "status.conditions[Ready]") == "-"
    assert show(lookup(obj, "spec.hosts")) == "a,b"
    assert show(lookup(obj, "spec.on")) == "true"
    assert show(lookup(obj, "spec.missing")) == "<none>"
    assert show(obj["involvedObject"]) == "service/web"
    assert lookup(obj, "status.conditions[Ready].status") == "False"
    assert lookup({"status": {"ready": 2}, "spec": {"n": 3}}, "status.ready/spec.n") == "2/3"
    assert lookup({"spec": {"n": 3}}, "status.ready/spec.n") == "0/3"
    times = {"s": "2026-01-01T00:00:00Z", "e": "2026-01-01T00:03:30Z"}
    assert lookup(times, "s..e") == "3m"
    assert lookup({}, "s..e") is None


# ---- get -w ----------------------------------------------------------------------


class _Watch:
    """`cloudland ARGS` running as a process, its stdout read line by line."""

    def __init__(self, cloudland: Running, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloudland", *args, "--home", str(cloudland.home)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout or []:
            self.lines.put(line)

    def line(self) -> str:
        try:
            return self.lines.get(timeout=15)
        except queue.Empty:
            raise AssertionError("no output line within 15s") from None

    def expect(self, *cells: str) -> list[str]:
        """The next line (split) holding `cells` side by side; fails after a deadline."""
        seen: list[str] = []
        while True:
            try:
                cells_seen = self.line().split()
            except AssertionError:
                raise AssertionError(f"no line with {cells}; saw {seen}") from None
            if any(cells_seen[i:i + len(cells)] == list(cells) for i in range(len(cells_seen))):
                return cells_seen
            seen.append(" ".join(cells_seen))

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: returns the exit code and stderr."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        return self.proc.returncode, (self.proc.stderr.read() if self.proc.stderr else "")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.reader.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe:
                pipe.close()


@contextmanager
def _watching(cloudland: Running, *args: str) -> Iterator[_Watch]:
    watch = _Watch(cloudland, *args)
    try:
        yield watch
    finally:
        watch.close()


def test_get_watch_prints_rows_as_objects_change(cloudland: Running, api: Client) -> None:
    api.create(_configmap("before"))
    with _watching(cloudland, "get", "cm", "-w") as watch:
        assert watch.expect("NAME") == ["NAME", "DATA", "AGE"]
        watch.expect("before", "0")
        api.create(_configmap("after", data={"x": "1"}))
        watch.expect("after", "1")
        api.patch("ConfigMap", "default", "after", {"data": {"y": "2"}})
        watch.expect("after", "2")
        code, stderr = watch.interrupt()
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_get_watch_as_json_prints_one_event_per_line(cloudland: Running, api: Client) -> None:
    api.create(_configmap("before"))
    with _watching(cloudland, "get", "cm", "-w", "-o", "json") as watch:
        events = (json.loads(watch.line()) for _ in iter(int, 1))
        first = next(events)
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "before")
        api.delete("ConfigMap", "default", "before")
        gone = next(e for e in events if e["type"] == "DELETED")
        assert gone["object"]["metadata"]["name"] == "before"


# ---- describe and events ---------------------------------------------------------


def test_describe_shows_metadata_data_conditions_and_no_events(
        cloudland: Running, api: Client) -> None:
    api.create(_configmap("web", labels={"app": "web", "tier": "front"}, data={"k": "v"},
                          annotations={"note": "hello"}))
    api.update_status("ConfigMap", "default", "web", {"conditions": [
        {"type": "Synced", "status": "False", "reason": "Stale", "message": "too old"}]})

    result = cloudland.cli("describe", "cm", "web")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Name:" in out and "web" in out
    assert "app=web" in out and "tier=front" in out and "note=hello" in out
    assert "Generation:" in out
    assert "Data:" in out and "k: v" in out
    assert "Conditions:" in out
    condition = next(line for line in out.splitlines() if line.startswith("Synced"))
    assert condition.split()[:4] == ["Synced", "False", "Stale", "too"]
    assert "Events:  <none>" in out


def test_describe_service_and_job_read_their_status(cloudland: Running, api: Client) -> None:
    """Replica counts, addresses and an instances table, not the raw status YAML."""
    api.create({"apiVersion": "cloudland/v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"replicas": 2, "command": ["sleep", "60"],
                         "terminationGracePeriodSeconds": 1}})
    api.create({"apiVersion": "cloudland/v1", "kind": "Job", "metadata": {"name": "fails"},
                "spec": {"command": ["sh", "-c", "exit 3"], "backoffLimit": 0}})

    def described(ref: list[str], line: str) -> list[str] | None:
        result = cloudland.cli("describe", *ref)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        return lines if line in [" ".join(x.split()) for x in lines] else None

    svc = wait_for(lambda: described(["svc", "web"], "Replicas: 2 desired | 2 updated | "
                                      "2 total | 2 ready"), timeout=20, message="2 ready")
    text = "\n".join(svc)
    assert "Mesh Address:      web.default.svc.cloudland.local -> 127.0.0.1:" in text
    assert "Revision:          1 (template " in text
    assert "Status:" not in text and "handle" not in text  # no raw status dump
    table = svc[svc.index("Instances:") + 1:svc.index("Events:")]
    assert table[0].split() == ["INSTANCE", "PHASE", "READY", "RESTARTS", "PID", "ADDRESS",
                                "REVISION", "AGE", "LAST", "EXIT"]
    assert [row.split()[1:4] for row in table[1:]] == [["Running", "true", "0"]] * 2
    assert svc.index("Conditions:") < svc.index("Instances:") < svc.index("Events:")

    def failed() -> list[str] | None:  # "Completions: 0/1" shows while it runs, too
        lines = described(["job", "fails"], "Completions: 0/1") or []
        return lines if any(x.split()[:2] == ["Failed", "At:"] for x in lines) else None

    job = wait_for(failed, timeout=20, message="the Job to fail")
    statuses = "Attempt Statuses: 0 running / 0 succeeded / 1 failed"
    assert any(" ".join(x.split()).startswith(statuses) for x in job)
    assert not any(x.split()[:2] == ["Completed", "At:"] for x in job)
    attempts = job[job.index("Attempts:") + 1:job.index("Events:")]
    assert attempts[1].split()[:2] == ["fails-0", "Failed"]
    assert attempts[1].endswith("Error (exit 3)")


def test_describe_of_a_missing_object_fails(cloudland: Running) -> None:
    result = cloudland.cli("describe", "cm", "ghost")
    assert result.exit_code == 1
    assert 'configmap "ghost" not found in namespace "default"' in result.stderr


def _record_event(api: Client, about: Object, name: str, type_: str, reason: str,
                  when: str) -> None:
    meta = about["metadata"]
    event = {"apiVersion": "cloudland/v1", "kind": "Event",
             "metadata": {"name": name, "namespace": meta["namespace"]},
             "involvedObject": {"kind": about["kind"], "name": meta["name"],
                                "namespace": meta["namespace"], "uid": meta["uid"]},
             "type": type_, "reason": reason, "message": f"{reason} happened", "count": 2,
             "firstTimestamp": when, "lastTimestamp": when}
    try:
        api.create(event)
    except Exception as err:  # the API may keep Events to CloudLand itself
        if getattr(err, "status", None) == 403:
            pytest.skip("the API does not accept Events from users")
        raise


def test_events_are_listed_sorted_filtered_and_described(cloudland: Running, api: Client) -> None:
    web = api.create(_configmap("web"))
    db = api.create(_configmap("db", namespace="team"))
    _record_event(api, web, "web-late", "Warning", "Broken", "2030-01-01T00:00:02Z")
    _record_event(api, web, "web-early", "Normal", "Started", "2030-01-01T00:00:01Z")
    _record_event(api, db, "db-one", "Normal", "Synced", "2030-01-01T00:00:00Z")

    listed = cloudland.cli("events")
    assert listed.exit_code == 0, listed.output
    rows = _lines(listed.stdout)
    assert rows[0] == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert [r[2] for r in rows[1:]] == ["Started", "Broken"]  # oldest first
    assert rows[1][3] == "configmap/web"

    as_json = cloudland.cli("events", "-o", "json")  # for scripts, as kubectl get events
    assert as_json.exit_code == 0, as_json.output
    assert as_json.json()["kind"] == "EventList"
    assert [e["reason"] for e in as_json.json()["items"]] == ["Started", "Broken"]
    as_yaml = yaml.safe_load(cloudland.cli("events", "-o", "yaml", "--for", "cm/web").stdout)
    assert [e["reason"] for e in as_yaml["items"]] == ["Started", "Broken"]

    everywhere = _lines(cloudland.cli("events", "-A").stdout)
    assert everywhere[0][0] == "NAMESPACE"
    assert [r[0] for r in everywhere[1:] if r[0] != "default"] == ["team"]

    only_db = _lines(cloudland.cli("events", "-n", "team", "--for", "cm/db").stdout)
    assert [r[2] for r in only_db[1:]] == ["Synced"]
    none = cloudland.cli("events", "--for", "configmap/db")
    assert "No events found in namespace default." in none.stderr
    bad = cloudland.cli("events", "--for", "web")
    assert bad.exit_code == 1 and "KIND/NAME" in bad.stderr

    with _watching(cloudland, "events", "-w") as watch:
        assert watch.expect("LAST")[:3] == ["LAST", "SEEN", "TYPE"]
        watch.expect("Started")  # already there: shown first
        _record_event(api, web, "web-new", "Normal", "Resumed", "2030-01-01T00:00:03Z")
        assert watch.expect("Normal", "Resumed")[3] == "configmap/web"

    described = cloudland.cli("describe", "configmap", "web").stdout
    events = described[described.index("Events:"):].splitlines()
    assert events[1].split() == ["TYPE", "REASON", "AGE", "COUNT", "MESSAGE"]
    assert [e.split()[:2] for e in events[2:]] == [
        ["Normal", "Started"], ["Warning", "Broken"], ["Normal", "Resumed"]]
    assert events[3].split()[3] == "2"


# ---- delete ----------------------------------------------------------------------


def test_delete_by_name_and_selector(cloudland: Running, api: Client) -> None:
    for name in ("a", "b"):
        api.create(_configmap(name))
    api.create(_configmap("c", labels={"app": "x"}))

    result = cloudland.cli("delete", "cm", "a", "b")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ['configmap "a" deleted', 'configmap "b" deleted']

    by_label = cloudland.cli("delete", "configmaps", "-l", "app=x")
    assert by_label.stdout.strip() == 'configmap "c" deleted'
    assert api.list("ConfigMap", "default")["items"] == []

    nothing = cloudland.cli("delete", "cm", "-l", "app=x")
    assert nothing.exit_code == 0
    assert "No configmaps found in namespace default." in nothing.stderr


def test_delete_of_a_missing_name_fails_unless_ignored(cloudland: Running, api: Client) -> None:
    api.create(_configmap("real"))
    result = cloudland.cli("delete", "cm", "ghost", "real")
    assert result.exit_code == 1
    assert 'configmap "real" deleted' in result.stdout  # the others still go
    assert 'configmap "ghost" not found in namespace "default"' in result.stderr

    quiet = cloudland.cli("delete", "cm", "ghost", "--ignore-not-found")
    assert quiet.exit_code == 0
    assert quiet.output == ""

    neither = cloudland.cli("delete", "cm")
    assert neither.exit_code == 1
    assert "NAME" in neither.stderr


def test_delete_with_finalizers_waits_for_them(cloudland: Running, api: Client) -> None:
    api.create(_configmap("held", finalizers=["test/x"]))
    result = cloudland.cli("delete", "cm", "held")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        'configmap "held" marked for deletion (waiting for finalizers: test/x)')
    still = api.get("ConfigMap", "default", "held")
    assert still["metadata"]["deletionTimestamp"]
    described = cloudland.cli("describe", "cm", "held").stdout
    assert "Finalizers:" in described and "test/x" in described
    assert "Deleting Since:" in described


# ---- schema (no server) ----------------------------------------------------------


def test_schema_works_without_a_server(tmp_path: Path) -> None:
    home = str(tmp_path / "nowhere")
    kinds = run_cli("schema", "--home", home)
    assert kinds.exit_code == 0, kinds.output
    rows = _lines(kinds.stdout)
    assert rows[0] == ["KIND", "PLURAL", "SHORT", "NAMES"]
    assert ["Service", "services", "svc"] in rows

    svc = run_cli("schema", "svc", "--home", home)
    assert svc.exit_code == 0, svc.output
    schema = svc.json()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"apiVersion", "kind", "metadata", "spec"} <= set(schema["properties"])
    as_yaml = yaml.safe_load(run_cli("schema", "configmap", "-o", "yaml", "--home", home).stdout)
    assert "data" in as_yaml["properties"]

    out = tmp_path / "schemas"
    written = run_cli("schema", "--write", str(out), "--home", home)
    assert written.exit_code == 0, written.output
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(f"{k.lower()}.schema.json" for k in KINDS)
    assert json.loads((out / "service.schema.json").read_text())["title"] == "Service"
    assert "yaml-language-server: $schema=" in written.stdout


def test_kind_completion_offers_names_and_plurals() -> None:
    from cloudland.cli.resources import complete_kind

    assert complete_kind("conf") == ["configmap", "configmaps"]
    assert "services" in complete_kind("")
