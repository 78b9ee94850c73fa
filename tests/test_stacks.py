"""apply / plan / destroy through the real CLI: prune, drift, and bad input."""

from __future__ import annotations

from pathlib import Path

from cloudland.client import Client
from tests.conftest import Running, wait_for

SERVICE = """\
apiVersion: cloudland/v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  command: ["sleep", "300"]
  replicas: 2
"""
CONFIG = """\
apiVersion: cloudland/v1
kind: ConfigMap
metadata:
  name: settings
data:
  color: blue
"""


def write(dir_: Path, name: str, text: str) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    path = dir_ / name
    path.write_text(text)
    return path


def names(cloudland: Running, kind: str) -> list[str]:
    with Client(cloudland.api) as c:
        return [o["metadata"]["name"] for o in c.list(kind, "default")["items"]]


def test_apply_plan_prune_and_drift(cloudland: Running, tmp_path: Path) -> None:
    stack = tmp_path / "park"
    write(stack, "web.yaml", SERVICE)
    write(stack, "settings.yaml", CONFIG)
    plan = cloudland.cli("plan", "-f", str(stack), "--detailed-exitcode")
    assert plan.exit_code == 2 and "2 to create" in plan.stdout

    first = cloudland.cli("apply", "-f", str(stack))
    assert first.exit_code == 0, first.output
    assert "service/web created" in first.stdout and "configmap/settings created" in first.stdout
    again = cloudland.cli("apply", "-f", str(stack))
    assert "2 unchanged" in again.stdout
    assert cloudland.cli("plan", "-f", str(stack), "--detailed-exitcode").exit_code == 0

    with Client(cloudland.api) as c:
        web = c.get("Service", "default", "web")
        assert web["metadata"]["labels"]["cloudland.io/stack"] == "park"
        # Someone scales it by hand: plan shows the drift and the way back.
        c.patch("Service", "default", "web", {"spec": {"replicas": 5}})
    drift = cloudland.cli("plan", "-f", str(stack), "--detailed-exitcode")
    assert drift.exit_code == 2
    assert "drift" in drift.stdout and "spec.replicas: 5 → 2" in drift.stdout

    # A file edit is a change, not drift.
    write(stack, "settings.yaml", CONFIG.replace("blue", "red"))
    edited = cloudland.cli("plan", "-f", str(stack))
    assert 'data.color: "blue" → "red"' in edited.stdout
    assert "configmap/settings will be updated\n" in edited.stdout

    # Removing a file: plan notes the orphan; apply --prune deletes it.
    (stack / "settings.yaml").unlink()
    orphan = cloudland.cli("plan", "-f", str(stack))
    assert "configmap/settings is in stack 'park' but not in the files" in orphan.stdout
    pruned = cloudland.cli("apply", "-f", str(stack), "--prune")
    assert "configmap/settings deleted" in pruned.stdout
    assert names(cloudland, "ConfigMap") == []
    assert names(cloudland, "Service") == ["web"]

    gone = cloudland.cli("destroy", "-f", str(stack), "--yes")
    assert gone.exit_code == 0 and "1 deleted" in gone.stdout
    # The Service's controller stops its instances, then lets it go (finalizer).
    wait_for(lambda: names(cloudland, "Service") == [], message="the Service to be gone")


def test_recursive_directories_and_json_output(cloudland: Running, tmp_path: Path) -> None:
    write(tmp_path / "s" / "sub", "c.yaml", CONFIG)
    flat = cloudland.cli("apply", "-f", str(tmp_path / "s"))
    assert flat.exit_code == 1 and "use -R" in flat.stderr
    deep = cloudland.cli("apply", "-f", str(tmp_path / "s"), "-R", "-o", "json")
    assert deep.exit_code == 0
    assert deep.json()["items"][0]["action"] == "created"


def test_bad_input_is_reported_with_file_and_line(cloudland: Running, tmp_path: Path) -> None:
    cases = {
        "broken.yaml": ("kind: ConfigMap\nmetadata: {name: [oops\n", "broken.yaml:3"),
        "kind.yaml": (CONFIG.replace("kind: ConfigMap", "kind: Confgmap"),
                      "did you mean 'ConfigMap'"),
        "field.yaml": (SERVICE.replace("replicas: 2", "replica: 2"),
                       "field.yaml:8: service/web: spec.replica: unknown field 'replica'; "
                       "did you mean 'replicas'?"),
        "type.yaml": (SERVICE.replace("replicas: 2", "replicas: lots"),
                      "type.yaml:8: service/web: spec.replicas: Input should be a valid integer"),
        "name.yaml": (CONFIG.replace("name: settings", "name: Settings_1"),
                      "name.yaml:4: configmap/Settings_1: metadata.name: 'Settings_1' is not a "
                      "valid name"),
        "dup.yaml": (CONFIG + "---\n" + CONFIG, "is declared twice (documents 1 and 2)"),
        "dupkey.yaml": (CONFIG + "data: {}\n", "dupkey.yaml:7: key 'data' appears twice"),
        "list.yaml": ("- a\n- b\n", "expected an object"),
    }
    for file, (text, expected) in cases.items():
        path = write(tmp_path / "bad", file, text)
        result = cloudland.cli("apply", "-f", str(path))
        assert result.exit_code == 1, (file, result.output)
        flat = " ".join(result.stderr.split())
        assert expected in flat, (file, result.stderr)
        assert "Traceback" not in result.output
    assert names(cloudland, "ConfigMap") == []


def test_an_apply_is_all_or_nothing(cloudland: Running, tmp_path: Path) -> None:
    stack = tmp_path / "mixed"
    write(stack, "a-good.yaml", CONFIG)
    write(stack, "b-bad.yaml", SERVICE.replace("replicas: 2", "replicas: -1"))
    result = cloudland.cli("apply", "-f", str(stack))
    assert result.exit_code == 1
    assert "b-bad.yaml:8" in result.stderr and "nothing was applied" in result.stderr
    assert names(cloudland, "ConfigMap") == []


def test_oversized_apply_is_refused_clearly(cloudland: Running, tmp_path: Path) -> None:
    big = CONFIG.replace("color: blue", "blob: " + "x" * (9 * 1024 * 1024))
    path = write(tmp_path, "big.yaml", big)
    result = cloudland.cli("apply", "-f", str(path))
    assert result.exit_code == 1
    assert "limit" in result.stderr and "Traceback" not in result.output


def test_namespace_flag_and_stdin(cloudland: Running) -> None:
    result = cloudland.cli("apply", "-f", "-", "-n", "team-a", "--stack", "piped", input=CONFIG)
    assert result.exit_code == 0, result.output
    with Client(cloudland.api) as c:
        obj = c.get("ConfigMap", "team-a", "settings")
    assert obj["metadata"]["labels"]["cloudland.io/stack"] == "piped"


def test_apply_wait_waits_for_ready_and_fails_when_an_object_is_not(
        cloudland: Running, tmp_path: Path) -> None:
    good = tmp_path / "good"
    write(good, "web.yaml", SERVICE)
    write(good, "settings.yaml", CONFIG)  # data, no controller: nothing to wait for
    done = cloudland.cli("apply", "-f", str(good), "--wait", "--timeout", "60")
    assert done.exit_code == 0, done.output
    assert "not ready" not in done.output
    with Client(cloudland.api) as c:  # --wait returned: the replicas are ready, not just seen
        assert c.get("Service", "default", "web")["status"]["readyReplicas"] == 2
    # A change rolls out: --wait returns once every replica runs the new revision, as
    # kubectl rollout status does.
    write(good, "web.yaml", SERVICE.replace('"300"', '"301"'))
    rolled = cloudland.cli("apply", "-f", str(good), "--wait", "--timeout", "60")
    assert rolled.exit_code == 0, rolled.output
    with Client(cloudland.api) as c:
        status = c.get("Service", "default", "web")["status"]
        assert status["revision"] == 2 and status["updatedReplicas"] == 2
        assert {i["revision"] for i in status["instances"]} == {2}

    # A Service that never becomes ready: --wait gives up at its timeout, says which
    # object and why, and exits non-zero so a script does not carry on.
    broken = write(tmp_path / "broken", "db.yaml", SERVICE.replace("name: web", "name: db")
                   .replace('["sleep", "300"]', '["sh", "-c", "exit 3"]'))
    failed = cloudland.cli("apply", "-f", str(broken), "--wait", "--timeout", "2")
    assert failed.exit_code == 1, failed.output
    assert "service/db" in failed.stderr and "not ready after 2s" in failed.stderr
    assert "All objects" not in failed.stdout

    # A Job that failed for good is reported at once, with its reason.
    job = write(tmp_path / "job", "once.yaml", """\
apiVersion: cloudland/v1
kind: Job
metadata: {name: once}
spec: {command: ["sh", "-c", "exit 4"], backoffLimit: 0}
""")
    gave_up = cloudland.cli("apply", "-f", str(job), "--wait", "--timeout", "600")
    assert gave_up.exit_code == 1, gave_up.output
    assert "job/once failed: BackoffLimitExceeded" in gave_up.stderr

    # A running Job is not done: --wait returns once it has completed.
    slow = write(tmp_path / "slow", "slow.yaml", """\
apiVersion: cloudland/v1
kind: Job
metadata: {name: slow}
spec: {command: ["sh", "-c", "sleep 1"]}
""")
    done = cloudland.cli("apply", "-f", str(slow), "--wait", "--timeout", "600")
    assert done.exit_code == 0, done.output
    with Client(cloudland.api) as c:
        conditions = c.get("Job", "default", "slow")["status"]["conditions"]
        assert any(cond["type"] == "Complete" and cond["status"] == "True"
                   for cond in conditions), conditions

    # A Job removed as soon as it finishes (ttlSecondsAfterFinished: 0) is judged by the
    # events it left: success is success, a failure still fails the wait.
    for name, command, code in (("brief", "sleep 1", 0), ("brief-bad", "sleep 1; exit 5", 1)):
        ttl = write(tmp_path / name, f"{name}.yaml", f"""\
apiVersion: cloudland/v1
kind: Job
metadata: {{name: {name}}}
spec: {{command: ["sh", "-c", "{command}"], backoffLimit: 0, ttlSecondsAfterFinished: 0}}
""")
        waited = cloudland.cli("apply", "-f", str(ttl), "--wait", "--timeout", "600")
        assert waited.exit_code == code, waited.output
    assert "job/brief-bad failed: BackoffLimitExceeded" in waited.stderr
