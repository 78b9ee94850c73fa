"""examples/storage as docs/storage.md shows it: a Bucket with a notification and a CORS
rule, and a script that uploads with boto3, prints the CloudEvent that arrives, then
uploads as a web page on another origin would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from cloudland.client import Client
from cloudland.runtime.ports import free_port
from tests.conftest import Running, wait_for

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "storage"


def test_the_storage_example_uploads_and_gets_its_cloudevent(cloudland: Running) -> None:
    port = free_port()  # the example's sink port (8099) may be taken on a test machine
    docs = list(yaml.safe_load_all((EXAMPLE / "uploads.yaml").read_text()))
    for note in docs[0]["spec"]["notifications"]:
        note["sink"]["uri"] = note["sink"]["uri"].replace(":8099", f":{port}")
    with Client(cloudland.api) as client:
        client.apply(docs)

        def ready() -> bool:
            status = client.get("Bucket", "default", "uploads").get("status") or {}
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in status.get("conditions") or [])

        wait_for(ready, timeout=10, message="the uploads bucket")
    result = subprocess.run([sys.executable, str(EXAMPLE / "upload.py")], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "SINK_PORT": str(port),
                                 "CLOUDLAND_HOME": str(cloudland.home)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uploaded s3://uploads/images/cat.jpg" in result.stdout
    assert "CloudEvent com.amazonaws.s3.ObjectCreated:Put about images/cat.jpg" in result.stdout
    # The Bucket's cors rule lets a page on the example's origin upload with a presigned URL.
    assert ("a page on http://localhost:5173 uploaded browser/hello.txt (HTTP 200); "
            "it may read ETag") in result.stdout
