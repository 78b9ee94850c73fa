"""Other S3 clients against CloudLand, as docs/storage.md sets them up: the aws CLI,
s3cmd and rclone (from apt), run as the user would run them."""

from __future__ import annotations

import hashlib
import json
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
    attributes = json.loads(run([
        aws, *endpoint, "s3api", "get-object-attributes", "--bucket", "cli-bucket",
        "--key", "reports/report.csv", "--object-attributes", "ETag", "ObjectSize",
        "StorageClass"], env))
    assert (attributes["ETag"], attributes["ObjectSize"], attributes["StorageClass"]) == (
        hashlib.md5(source.read_bytes()).hexdigest(), 500_000, "STANDARD")
    run([aws, *endpoint, "s3api", "put-object-tagging", "--bucket", "cli-bucket", "--key",
         "reports/report.csv", "--tagging", "TagSet=[{Key=team,Value=rides}]"], env)
    assert json.loads(run([aws, *endpoint, "s3api", "get-object-tagging", "--bucket",
                           "cli-bucket", "--key", "reports/report.csv"], env)) == {
        "TagSet": [{"Key": "team", "Value": "rides"}], "VersionId": "null"}
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


def test_rclone(s3_cloudland: Running, access_key: tuple[str, str], tmp_path: Path) -> None:
    """rclone copies a tree of nested and unicode names up, checks it (sizes and MD5s),
    copies it server-side to another bucket, lists it as JSON and syncs it back."""
    rclone = shutil.which("rclone")
    if rclone is None:
        pytest.skip("rclone is not installed (apt-get install rclone)")
    config = tmp_path / "rclone.conf"
    config.write_text(f"[cl]\ntype = s3\nprovider = Other\naccess_key_id = {access_key[0]}\n"
                      f"secret_access_key = {access_key[1]}\n"
                      f"endpoint = {s3_cloudland.state['s3']}\nregion = us-east-1\n")
    # rclone's AWS SDK cannot take a CA bundle over plain HTTP: don't hand it the host's.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env["RCLONE_CONFIG"] = str(config)

    def rc(*args: str) -> str:
        result = subprocess.run([rclone, *args], capture_output=True, text=True, timeout=60,
                                env=env)
        assert result.returncode == 0, f"rclone {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    tree = tmp_path / "tree"
    files = {"a/b/c/deep.txt": b"deep\n", "ünï cödé/日本/ファイル.txt": "日本\n".encode(),
             "sp ace/+plus&amp%.txt": b"odd\n", "big.bin": os.urandom(6 << 20)}
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    rc("mkdir", "cl:rclone-a")
    rc("copy", str(tree), "cl:rclone-a/tree")
    rc("check", str(tree), "cl:rclone-a/tree")
    rc("mkdir", "cl:rclone-b")
    rc("copy", "cl:rclone-a/tree", "cl:rclone-b/tree")  # server-side copies
    rc("check", "--download", str(tree), "cl:rclone-b/tree")
    listed = {e["Path"]: e for e in json.loads(rc("lsjson", "-R", "--files-only", "--hash",
                                                   "cl:rclone-b/tree"))}
    assert {p: e["Size"] for p, e in listed.items()} == {n: len(d) for n, d in files.items()}
    back = tmp_path / "back"
    rc("sync", "cl:rclone-b/tree", str(back))
    assert {str(p.relative_to(back)): p.read_bytes() for p in back.rglob("*")
            if p.is_file()} == files
    rc("purge", "cl:rclone-a")
    rc("purge", "cl:rclone-b")
