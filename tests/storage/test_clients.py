"""Other S3 clients against CloudLand, as docs/storage.md sets them up: the aws CLI and
s3cmd (from apt), run as the user would run them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Running


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def test_the_aws_cli(s3_cloudland: Running, access_key: tuple[str, str],
                     tmp_path: Path) -> None:
    aws = shutil.which("aws")
    if aws is None:
        pytest.skip("the aws CLI is not installed (pip install awscli)")
    env = {"AWS_ACCESS_KEY_ID": access_key[0], "AWS_SECRET_ACCESS_KEY": access_key[1],
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    endpoint = ["--endpoint-url", str(s3_cloudland.state["s3"])]
    source = tmp_path / "report.csv"
    source.write_bytes(b"ride,wait\n" * 50_000)
    run([aws, *endpoint, "s3", "mb", "s3://cli-bucket"], env)
    run([aws, *endpoint, "s3", "cp", str(source), "s3://cli-bucket/reports/report.csv"], env)
    assert "reports/report.csv" in run([aws, *endpoint, "s3", "ls", "--recursive",
                                        "s3://cli-bucket"], env)
    run([aws, *endpoint, "s3", "cp", "s3://cli-bucket/reports/report.csv",
         str(tmp_path / "back.csv")], env)
    assert (tmp_path / "back.csv").read_bytes() == source.read_bytes()
    run([aws, *endpoint, "s3", "rm", "--recursive", "s3://cli-bucket"], env)
    run([aws, *endpoint, "s3", "rb", "s3://cli-bucket"], env)


def test_s3cmd(s3_cloudland: Running, access_key: tuple[str, str], tmp_path: Path) -> None:
    s3cmd = shutil.which("s3cmd")
    if s3cmd is None:
        pytest.skip("s3cmd is not installed (apt-get install s3cmd)")
    host = str(s3_cloudland.state["s3"]).removeprefix("http://")
    config = tmp_path / "s3cfg"
    config.write_text(f"[default]\naccess_key = {access_key[0]}\n"
                      f"secret_key = {access_key[1]}\nhost_base = {host}\n"
                      f"host_bucket = {host}\nuse_https = False\nsignature_v2 = False\n"
                      "bucket_location = us-east-1\n")
    base = [s3cmd, "-c", str(config)]
    source = tmp_path / "board.txt"
    source.write_text("wait times\n" * 1000)
    run([*base, "mb", "s3://cmd-bucket"])
    run([*base, "put", str(source), "s3://cmd-bucket/board.txt"])
    assert "s3://cmd-bucket/board.txt" in run([*base, "ls", "s3://cmd-bucket"])
    run([*base, "get", "s3://cmd-bucket/board.txt", str(tmp_path / "back.txt")])
    assert (tmp_path / "back.txt").read_text() == source.read_text()
    run([*base, "del", "s3://cmd-bucket/board.txt"])
    run([*base, "rb", "s3://cmd-bucket"])
