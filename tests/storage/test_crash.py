"""kill -9 of CloudLand in the middle of an upload: after a restart there is no object
and no temporary file, and what was committed before is intact."""

from __future__ import annotations

import os
import signal
import socket
import urllib.parse
from pathlib import Path
from typing import Any

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import start_cloudland, wait_for
from tests.storage.conftest import client


def start_upload(url: str, key: tuple[str, str], path: str, size: int) -> socket.socket:
    """A signed PUT (UNSIGNED-PAYLOAD) that declares `size` bytes and sends half."""
    request = AWSRequest(method="PUT", url=url + path, headers={
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "Content-Length": str(size)})
    S3SigV4Auth(Credentials(*key), "s3", "us-east-1").add_auth(request)
    where = urllib.parse.urlsplit(url)
    sock = socket.create_connection((where.hostname, where.port), timeout=5)
    head = f"PUT {path} HTTP/1.1\r\nHost: {where.netloc}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in request.headers.items()) + "\r\n"
    sock.sendall(head.encode() + b"x" * (size // 2))
    return sock


def test_kill_9_during_an_upload_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    running = start_cloudland(home)
    sock: socket.socket | None = None
    try:
        made = running.cli("keys", "create", "-o", "json").json()
        key = (made["accessKeyId"], made["secretAccessKey"])
        s3: Any = client(running, key)
        s3.create_bucket(Bucket="crash")
        s3.put_object(Bucket="crash", Key="before", Body=b"kept")
        sock = start_upload(str(running.state["s3"]), key, "/crash/torn", 4 << 20)
        tmp = home / "objects" / "tmp"
        wait_for(lambda: any(p.stat().st_size > 0 for p in tmp.iterdir()), timeout=10,
                 message="the upload to be half written")
        os.kill(running.proc.pid, signal.SIGKILL)
        running.proc.wait(10)
    finally:
        if sock is not None:
            sock.close()
        running.stop()

    again = start_cloudland(home)
    try:
        s3 = client(again, key)
        assert s3.get_object(Bucket="crash", Key="before")["Body"].read() == b"kept"
        try:
            s3.head_object(Bucket="crash", Key="torn")
            raise AssertionError("a torn upload became an object")
        except ClientError as err:
            assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        assert list((home / "objects" / "tmp").iterdir()) == []
    finally:
        again.stop()
