"""Jobs run to completion on real processes; `cloudland run` runs one command."""

from __future__ import annotations

from typing import Any

from cloudland.client import Client
from tests.conftest import Running, wait_for


def job(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "cloudland/v1", "kind": "Job", "metadata": {"name": name},
            "spec": spec}


def verdict(client: Client, name: str) -> tuple[str, str] | None:
    status = client.get("Job", "default", name).get("status") or {}
    for cond in status.get("conditions", []):
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return cond["type"], cond["reason"]
    return None


def test_completions_parallelism_and_failures(cloudland: Running) -> None:
    with Client(cloudland.api) as client:
        client.apply([
            job("ok", {"command": ["sh", "-c", "echo done"], "completions": 3,
                       "parallelism": 2}),
            job("bad", {"command": ["sh", "-c", "exit 4"], "backoffLimit": 0}),
            job("slow", {"command": ["sleep", "60"], "activeDeadlineSeconds": 1}),
        ])
        wait_for(lambda: verdict(client, "ok"), timeout=30, message="ok to finish")
        assert verdict(client, "ok") == ("Complete", "Completed")
        status = client.get("Job", "default", "ok")["status"]
        assert status["succeeded"] == 3 and status["failed"] == 0
        wait_for(lambda: verdict(client, "bad"), timeout=30, message="bad to fail")
        assert verdict(client, "bad") == ("Failed", "BackoffLimitExceeded")
        bad = client.get("Job", "default", "bad")["status"]
        assert bad["attempts"][0]["lastExit"]["exitCode"] == 4
        wait_for(lambda: verdict(client, "slow"), timeout=30, message="deadline")
        assert verdict(client, "slow") == ("Failed", "DeadlineExceeded")
        assert client.get("Job", "default", "slow")["status"]["active"] == 0
        # Each verdict is one event, told once.
        uids = {client.get("Job", "default", name)["metadata"]["uid"]
                for name in ("ok", "bad", "slow")}
        told = {(e["involvedObject"]["name"], e["type"], e["reason"], e["count"])
                for e in client.list("Event", "default")["items"]
                if e["involvedObject"].get("uid") in uids
                and e["reason"] in ("Completed", "BackoffLimitExceeded", "DeadlineExceeded")}
        assert told == {("ok", "Normal", "Completed", 1),
                        ("bad", "Warning", "BackoffLimitExceeded", 1),
                        ("slow", "Warning", "DeadlineExceeded", 1)}, told


def test_cloudland_run_prints_the_output(cloudland: Running) -> None:
    result = cloudland.cli("run", "greet", "--", "sh", "-c", "echo hello from a job")
    assert result.exit_code == 0, result.output
    assert "hello from a job" in result.stdout and "completed" in result.stdout
    # A failed run exits with the command's own code, as `docker run` does, and says why.
    failed = cloudland.cli("run", "oops", "--", "sh", "-c", "echo broken >&2; exit 2")
    assert failed.exit_code == 2, failed.output
    assert "broken" in failed.stderr and "job/oops failed: exit code 2" in failed.stderr
    missing = cloudland.cli("run", "typo", "--", "/no/such/program", "x")
    assert missing.exit_code == 127, missing.output  # the shell's "command not found"
    assert "job/typo failed: command '/no/such/program' not found" in missing.stderr
    # Running a name again says how to get past it.
    again = cloudland.cli("run", "greet", "--", "true")
    assert again.exit_code == 1, again.output
    assert "job/greet already exists" in again.stderr
    assert "cloudland delete job greet" in again.stderr
