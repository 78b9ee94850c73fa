"""The S3 API through boto3 against a real CloudLand: buckets, objects, listing."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Running
from tests.storage.conftest import client


def code(err: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = err.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_bucket_and_object_round_trip(s3: Any) -> None:
    s3.create_bucket(Bucket="photos")
    assert "photos" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="photos")
    put = s3.put_object(Bucket="photos", Key="cats/tom.jpg", Body=b"meow" * 1000,
                        ContentType="image/jpeg", Metadata={"owner": "ann"})
    got = s3.get_object(Bucket="photos", Key="cats/tom.jpg")
    assert got["Body"].read() == b"meow" * 1000
    assert got["ETag"] == put["ETag"] and got["ContentType"] == "image/jpeg"
    assert got["Metadata"] == {"owner": "ann"}
    head = s3.head_object(Bucket="photos", Key="cats/tom.jpg")
    assert head["ContentLength"] == 4000
    ranged = s3.get_object(Bucket="photos", Key="cats/tom.jpg", Range="bytes=0-3")
    assert ranged["Body"].read() == b"meow" and ranged["ContentRange"] == "bytes 0-3/4000"
    listed = s3.list_objects_v2(Bucket="photos", Prefix="cats/")
    assert [o["Key"] for o in listed["Contents"]] == ["cats/tom.jpg"]
    s3.delete_object(Bucket="photos", Key="cats/tom.jpg")
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket="photos", Key="cats/tom.jpg")
    assert code(err) == ("NoSuchKey", 404)
    s3.delete_bucket(Bucket="photos")


def test_unsigned_requests_are_refused(s3_cloudland: Running, s3: Any) -> None:
    s3.create_bucket(Bucket="private")
    anonymous = client(s3_cloudland, None)
    with pytest.raises(ClientError) as err:
        anonymous.list_objects_v2(Bucket="private")
    assert code(err) == ("AccessDenied", 403)
    wrong = client(s3_cloudland, ("CLNOSUCHKEY000000000", "x" * 40))
    with pytest.raises(ClientError) as err:
        wrong.list_buckets()
    assert code(err) == ("InvalidAccessKeyId", 403)


def test_access_keys_are_created_listed_and_deleted(s3_cloudland: Running) -> None:
    made = s3_cloudland.cli("keys", "create", "--description", "ci", "-o", "json").json()
    key = (made["accessKeyId"], made["secretAccessKey"])
    assert key[0].startswith("CL") and len(key[0]) == 20 and len(key[1]) == 40
    listed = s3_cloudland.cli("keys", "list", "-o", "json").json()
    assert {"accessKeyId": key[0], "description": "ci"} in [
        {k: row[k] for k in ("accessKeyId", "description")} for row in listed]
    assert key[1] not in s3_cloudland.cli("keys", "list").stdout  # never shown again
    mine = client(s3_cloudland, key)
    mine.list_buckets()
    assert s3_cloudland.cli("keys", "delete", key[0]).exit_code == 0
    with pytest.raises(ClientError) as err:
        mine.list_buckets()
    assert code(err) == ("InvalidAccessKeyId", 403)
    missing = s3_cloudland.cli("keys", "delete", key[0])
    assert missing.exit_code == 1 and "no access key" in missing.output


def test_review_fixes_hold(s3_cloudland: Running, s3: Any) -> None:
    import urllib.error
    import urllib.request

    from cloudland.client import Client
    from cloudland.errors import Invalid

    # Bucket resources: valid S3 names, one namespace per name.
    with Client(s3_cloudland.api) as api:
        doc = {"apiVersion": "cloudland/v1", "kind": "Bucket", "spec": {}}
        api.apply([{**doc, "metadata": {"name": "shared-name"}}])
        for meta in ({"name": "shared-name", "namespace": "other"}, {"name": "ab"}):
            with pytest.raises(Invalid):
                api.apply([{**doc, "metadata": meta}])
    # An anonymous reader of a public bucket cannot restyle an object.
    s3.create_bucket(Bucket="open-reads", ACL="public-read")
    s3.put_object(Bucket="open-reads", Key="empty", Body=b"")
    base = f"{s3_cloudland.state['s3']}/open-reads/empty"
    assert urllib.request.urlopen(base, timeout=5).status == 200
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(base + "?response-content-type=text/html", timeout=5)
    assert http.value.code == 400
    # A range of an empty object cannot be satisfied.
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket="open-reads", Key="empty", Range="bytes=-5")
    assert code(err) == ("InvalidRange", 416)
    with pytest.raises(ClientError) as err:
        s3.create_bucket(Bucket="odd-region",
                         CreateBucketConfiguration={"LocationConstraint": "a&b"})
    assert code(err) == ("InvalidLocationConstraint", 400)


def test_a_default_boto3_presigned_put_carries_its_type_and_metadata(
        s3_cloudland: Running, s3: Any, access_key: tuple[str, str]) -> None:
    import http.client
    import urllib.parse
    import urllib.request

    import boto3

    s3.create_bucket(Bucket="presigned")
    default = boto3.client("s3", endpoint_url=str(s3_cloudland.state["s3"]),
                           region_name="us-east-1", aws_access_key_id=access_key[0],
                           aws_secret_access_key=access_key[1])  # presigns with SigV2
    url = default.generate_presigned_url("put_object", Params={
        "Bucket": "presigned", "Key": "note.txt", "ContentType": "text/plain",
        "Metadata": {"author": "ann"}}, ExpiresIn=300)
    assert "AWSAccessKeyId=" in url
    where = urllib.parse.urlsplit(url)  # a bare client, like curl -T: the URL says it all
    conn = http.client.HTTPConnection(where.netloc, timeout=5)
    conn.request("PUT", f"{where.path}?{where.query}", body=b"hello")
    assert conn.getresponse().status == 200
    conn.close()
    head = s3.head_object(Bucket="presigned", Key="note.txt")
    assert head["ContentType"] == "text/plain" and head["Metadata"] == {"author": "ann"}
    get = default.generate_presigned_url("get_object", Params={
        "Bucket": "presigned", "Key": "note.txt"}, ExpiresIn=300)
    assert urllib.request.urlopen(get, timeout=5).read() == b"hello"


def test_a_sigv2_presigned_put_enforces_the_digest_it_signed(
        s3_cloudland: Running, s3: Any, access_key: tuple[str, str]) -> None:
    import base64
    import hashlib
    import http.client
    import urllib.parse

    import boto3

    s3.create_bucket(Bucket="digests")
    default = boto3.client("s3", endpoint_url=str(s3_cloudland.state["s3"]),
                           region_name="us-east-1", aws_access_key_id=access_key[0],
                           aws_secret_access_key=access_key[1])
    digest = base64.b64encode(hashlib.md5(b"expected").digest()).decode()
    url = default.generate_presigned_url("put_object", Params={
        "Bucket": "digests", "Key": "d", "ContentMD5": digest}, ExpiresIn=300)
    where = urllib.parse.urlsplit(url)

    def put(body: bytes) -> int:
        conn = http.client.HTTPConnection(where.netloc, timeout=5)
        conn.request("PUT", f"{where.path}?{where.query}", body=body)
        status = conn.getresponse().status
        conn.close()
        return status

    assert put(b"something else") == 400  # BadDigest: the body is not what was signed
    assert put(b"expected") == 200
    assert s3.get_object(Bucket="digests", Key="d")["Body"].read() == b"expected"


def _raw(url: str, request: bytes, then: bytes | None = None) -> list[bytes]:
    """Send a raw request; if `then` is given, send it after the first reply. Replies."""
    import socket
    import urllib.parse

    where = urllib.parse.urlsplit(url)
    replies = []
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(request)
        replies.append(sock.recv(65536))
        if then is not None:
            sock.sendall(then)
            replies.append(sock.recv(65536))
    return replies


def test_expect_100_continue_is_answered_before_the_body(s3_cloudland: Running,
                                                         s3: Any) -> None:
    """The client waits for "100 Continue" before sending an upload (boto3 does); an
    expectation CloudLand cannot meet is refused with 417 before any body is read."""
    s3.create_bucket(Bucket="expect")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "expect", "Key": "k"})
    _, _, host, path = url.split("/", 3)
    head = (f"PUT /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n"
            "Expect: 100-continue\r\n\r\n").encode()
    first, final = _raw(str(s3_cloudland.state["s3"]), head, b"hello")
    assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert (first[len(b"HTTP/1.1 100 Continue\r\n\r\n"):] + final).startswith(b"HTTP/1.1 200")
    assert s3.get_object(Bucket="expect", Key="k")["Body"].read() == b"hello"
    odd = head.replace(b"100-continue", b"something-else")
    [refused] = _raw(str(s3_cloudland.state["s3"]), odd)
    assert refused.startswith(b"HTTP/1.1 417") and b"<Code>ExpectationFailed</Code>" in refused


def test_a_chunked_upload_in_tiny_chunks_is_stored_whole(s3_cloudland: Running,
                                                         s3: Any) -> None:
    """Thousands of small HTTP chunks (a slow client, or chunked encoding) in one block."""
    import hashlib

    s3.create_bucket(Bucket="tiny-chunks")
    url = s3.generate_presigned_url("put_object",
                                    Params={"Bucket": "tiny-chunks", "Key": "k"})
    _, _, host, path = url.split("/", 3)
    body = bytes(range(256)) * 8000  # ~2 MB, sent as 500-byte chunks
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 500]), body[i:i + 500])
                      for i in range(0, len(body), 500))
    request = (f"PUT /{path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
               "Connection: close\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
    [reply] = _raw(str(s3_cloudland.state["s3"]), request)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    got = s3.get_object(Bucket="tiny-chunks", Key="k")
    assert got["Body"].read() == body
    assert got["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'


def test_expect_edge_cases(s3_cloudland: Running, s3: Any) -> None:
    """An error after "100 Continue" is still answered in full; HTTP/1.0 has no Expect;
    undecodable header bytes echoed in an error come back as character references."""
    url = str(s3_cloudland.state["s3"])
    host = url.split("/")[2]
    bad_auth = (f"PUT /expect/k HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\n"
                "Expect: 100-continue\r\nAuthorization: Nonsense\r\n\r\n").encode()
    import socket

    name, port = host.rsplit(":", 1)
    with socket.create_connection((name, int(port)), timeout=10) as sock:
        sock.sendall(bad_auth)
        reply = sock.recv(65536)  # the 100, and maybe already the error after it
        sock.sendall(b"x")
        while b"</Error>" not in reply:
            more = sock.recv(65536)
            assert more, reply
            reply += more
    answer = reply.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 100 Continue") and answer.startswith(b"HTTP/1.1 400")
    assert b"<Code>InvalidArgument</Code>" in answer
    old = (f"GET /expect-none/k HTTP/1.0\r\nHost: {host}\r\nExpect: whatever\r\n\r\n").encode()
    [reply] = _raw(url, old)
    assert reply.startswith(b"HTTP/1.0 403") or reply.startswith(b"HTTP/1.1 403"), reply[:100]
    odd = (f"GET /expect/k HTTP/1.1\r\nHost: {host}\r\n").encode() + \
        b"Expect: 100-\xffcontinue\r\n\r\n"
    [reply] = _raw(url, odd)
    assert reply.startswith(b"HTTP/1.1 417") and b"<HeaderValue>100-&#56575;continue" in reply


def test_file_backed_gets_ranges_parts_and_hang_ups(s3_cloudland: Running, s3: Any) -> None:
    """Bodies past the inline limit are files sent with sendfile: whole, ranged, by part,
    on a kept-alive connection; a client that hangs up mid-download costs nothing."""
    import os
    import socket
    import urllib.parse

    s3.create_bucket(Bucket="big-gets")
    body = os.urandom(3 * 1024 * 1024 + 123)
    s3.put_object(Bucket="big-gets", Key="k", Body=body)
    assert s3.get_object(Bucket="big-gets", Key="k")["Body"].read() == body
    for wanted, start, end in (("bytes=1000-2000000", 1000, 2000000),
                               ("bytes=-300000", len(body) - 300000, len(body) - 1),
                               ("bytes=2000000-", 2000000, len(body) - 1)):
        got = s3.get_object(Bucket="big-gets", Key="k", Range=wanted)
        assert got["Body"].read() == body[start:end + 1], wanted
        assert got["ContentRange"] == f"bytes {start}-{end}/{len(body)}"
    head = s3.head_object(Bucket="big-gets", Key="k")
    assert head["ContentLength"] == len(body)

    up = s3.create_multipart_upload(Bucket="big-gets", Key="parts")
    halves = [os.urandom(5 * 1024 * 1024), body]  # 5 MiB minimum for all but the last
    etags = [s3.upload_part(Bucket="big-gets", Key="parts", UploadId=up["UploadId"],
                            PartNumber=n, Body=b)["ETag"] for n, b in enumerate(halves, 1)]
    s3.complete_multipart_upload(
        Bucket="big-gets", Key="parts", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                   for n, e in enumerate(etags, 1)]})
    assert s3.get_object(Bucket="big-gets", Key="parts", PartNumber=2)["Body"].read() == body

    # Hang up after the first bytes, many times: the server keeps serving.
    url = urllib.parse.urlsplit(s3.generate_presigned_url(
        "get_object", Params={"Bucket": "big-gets", "Key": "k"}))
    for _ in range(5):
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            sock.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n"
                         .encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert s3.get_object(Bucket="big-gets", Key="k")["Body"].read() == body
    log = (s3_cloudland.home / "test-daemon.log").read_text(errors="replace")
    assert "/big-gets/k failed" not in log  # a hang-up is not a server error


def test_stalled_downloads_hold_no_thread(s3_cloudland: Running, s3: Any,
                                          access_key: tuple[str, str]) -> None:
    """A client that stops reading a big download holds none of the S3 server's
    threads while it waits: with more stalled downloads than threads, lookups and
    commits (which need one) still go through at once."""
    import os
    import socket
    import urllib.parse

    from cloudland.storage.server import THREADS

    s3.create_bucket(Bucket="stalls")
    s3.put_object(Bucket="stalls", Key="big", Body=os.urandom(32 * 1024 * 1024))
    s3.put_object(Bucket="stalls", Key="small", Body=b"small")
    url = urllib.parse.urlsplit(s3.generate_presigned_url(
        "get_object", Params={"Bucket": "stalls", "Key": "big"}))
    stalled: list[socket.socket] = []
    try:
        for _ in range(THREADS + 4):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
            sock.settimeout(10)
            sock.connect((url.hostname, url.port))
            sock.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n"
                         .encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # started; now never read
            stalled.append(sock)
        quick = client(s3_cloudland, access_key, read_timeout=10, connect_timeout=5)
        for n in range(THREADS):
            assert quick.get_object(Bucket="stalls", Key="small")["Body"].read() == b"small"
            quick.put_object(Bucket="stalls", Key=f"more-{n}", Body=b"x")
    finally:
        for sock in stalled:
            sock.close()


def test_every_answer_carries_its_request_id(s3: Any) -> None:
    """S3 sends x-amz-request-id with every response (clients log it as RequestId):
    also a HEAD's and a streamed GET's, whose headers leave before the handler returns."""
    s3.create_bucket(Bucket="ids")
    s3.put_object(Bucket="ids", Key="small", Body=b"s")
    s3.put_object(Bucket="ids", Key="large", Body=b"l" * (1 << 20))
    answers = [s3.head_object(Bucket="ids", Key="small"),
               s3.head_object(Bucket="ids", Key="large"),
               s3.get_object(Bucket="ids", Key="small"),
               s3.get_object(Bucket="ids", Key="large"),
               s3.get_object(Bucket="ids", Key="large", Range="bytes=0-99999")]
    for answer in answers:
        if "Body" in answer:
            answer["Body"].read()
    ids = [a["ResponseMetadata"].get("RequestId") for a in answers]
    assert all(ids) and len(set(ids)) == len(ids), ids
    assert {a["ResponseMetadata"]["HTTPHeaders"]["server"] for a in answers} == {"CloudLand"}
    for key in ("small", "large"):
        s3.delete_object(Bucket="ids", Key=key)
    s3.delete_bucket(Bucket="ids")
