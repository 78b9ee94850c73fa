"""Bucket resources and their notifications: the controller keeps the S3 bucket, and
every committed change reaches a CloudEvents HTTP sink (parsed with the SDK)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_binary_event

from cloudland.client import Client
from tests.conftest import Running, wait_for


class Receiver(BaseHTTPRequestHandler):
    events: list[BaseCloudEvent] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.events.append(from_binary_event(HTTPMessage(headers, body)))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[tuple[str, list[BaseCloudEvent]]]:
    events: list[BaseCloudEvent] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 type("Handler", (Receiver,), {"events": events}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/events", events
    finally:
        server.shutdown()
        server.server_close()


def bucket(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "cloudland/v1", "kind": "Bucket", "metadata": {"name": name},
            "spec": spec}


def ready(client: Client, name: str) -> str:
    obj = client.get("Bucket", "default", name)
    conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
    return str(conds.get("Ready", {}).get("status"))


def test_bucket_notifications_reach_a_cloudevents_sink(
        s3_cloudland: Running, s3: Any, sink: tuple[str, list[BaseCloudEvent]]) -> None:
    url, events = sink
    with Client(s3_cloudland.api) as client:
        client.apply([bucket("uploads", {"notifications": [{
            "events": ["s3:ObjectCreated:*"], "filter": {"prefix": "images/", "suffix": ".jpg"},
            "sink": {"uri": url}}]})])
        wait_for(lambda: ready(client, "uploads") == "True", timeout=10,
                 message="the Bucket to be created")
    s3.head_bucket(Bucket="uploads")
    for key in ("images/cat.jpg", "images/cat.png", "docs/cat.jpg"):
        s3.put_object(Bucket="uploads", Key=key, Body=b"x" * 10)
    wait_for(lambda: len(events) >= 1, timeout=10, message="the CloudEvent")
    s3.put_object(Bucket="uploads", Key="images/last.jpg", Body=b"y")
    wait_for(lambda: len(events) >= 2, timeout=10, message="the second CloudEvent")
    first = events[0]
    assert first.get_type() == "com.amazonaws.s3.ObjectCreated:Put"
    assert first.get_subject() == "images/cat.jpg"
    assert first.get_source() == "cloudland:s3.us-east-1.uploads"
    data = first.get_data()
    assert isinstance(data, dict)
    assert data["eventName"] == "ObjectCreated:Put"
    assert data["s3"]["bucket"]["name"] == "uploads"
    assert data["s3"]["object"]["key"] == "images/cat.jpg" and data["s3"]["object"]["size"] == 10
    assert [e.get_subject() for e in events] == ["images/cat.jpg", "images/last.jpg"]
    assert len({e.get_id() for e in events}) == 2


def test_tag_changes_are_events_when_asked_for(
        s3_cloudland: Running, s3: Any, sink: tuple[str, list[BaseCloudEvent]]) -> None:
    url, events = sink
    with Client(s3_cloudland.api) as client:
        client.apply([bucket("tagged", {"notifications": [{
            "events": ["s3:ObjectTagging:*"], "sink": {"uri": url}}]})])
        wait_for(lambda: ready(client, "tagged") == "True", timeout=10,
                 message="the Bucket to be created")
    etag = s3.put_object(Bucket="tagged", Key="scan/me.bin", Body=b"z")["ETag"].strip('"')
    s3.put_object_tagging(Bucket="tagged", Key="scan/me.bin",
                          Tagging={"TagSet": [{"Key": "verdict", "Value": "clean"}]})
    s3.delete_object_tagging(Bucket="tagged", Key="scan/me.bin")
    wait_for(lambda: len(events) >= 2, timeout=10, message="the tagging CloudEvents")
    assert [e.get_type() for e in events] == ["com.amazonaws.s3.ObjectTagging:Put",
                                              "com.amazonaws.s3.ObjectTagging:Delete"]
    data = events[0].get_data()
    assert isinstance(data, dict)
    assert data["eventName"] == "ObjectTagging:Put"
    assert data["s3"]["object"] == {"key": "scan/me.bin", "eTag": etag, "versionId": "null",
                                    "sequencer": data["s3"]["object"]["sequencer"]}
    with pytest.raises(ClientError) as missing:  # no object: no event either
        s3.put_object_tagging(Bucket="tagged", Key="nothing",
                              Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    s3.put_object(Bucket="tagged", Key="marker", Body=b"m")  # not asked for: no event
    s3.put_object_tagging(Bucket="tagged", Key="marker",
                          Tagging={"TagSet": [{"Key": "last", "Value": "one"}]})
    wait_for(lambda: len(events) >= 3, timeout=10, message="the last tagging CloudEvent")
    assert [e.get_subject() for e in events] == ["scan/me.bin", "scan/me.bin", "marker"]


def test_deletion_policy(s3_cloudland: Running, s3: Any) -> None:
    with Client(s3_cloudland.api) as client:
        client.apply([bucket("keep-me", {}),
                      bucket("scratch", {"deletionPolicy": "delete", "access": "public-read"})])
        wait_for(lambda: ready(client, "keep-me") == ready(client, "scratch") == "True",
                 timeout=10, message="both Buckets created")
        s3.put_object(Bucket="scratch", Key="a/b", Body=b"1")
        s3.put_object(Bucket="keep-me", Key="a/b", Body=b"1")
        client.delete("Bucket", "default", "scratch")
        client.delete("Bucket", "default", "keep-me")
        wait_for(lambda: not {o["metadata"]["name"] for o in client.list(
            "Bucket", "default")["items"]} & {"scratch", "keep-me"}, timeout=10,
                 message="the Bucket resources to go")

    def gone() -> bool:
        try:
            s3.head_bucket(Bucket="scratch")
        except ClientError as err:
            return err.response["Error"]["Code"] in ("404", "NoSuchBucket")
        return False

    wait_for(gone, timeout=10, message="the scratch bucket deleted with its objects")
    assert s3.get_object(Bucket="keep-me", Key="a/b")["Body"].read() == b"1"  # retained
