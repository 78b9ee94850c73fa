"""The S3 API surface through boto3 (and raw signed HTTP) against a real CloudLand.

Every negative case checks the exact S3 error code and HTTP status a client sees.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import Running
from tests.storage.conftest import client

MIB = 1 << 20
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def code(err: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = err.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def fails(call: Callable[..., Any], **kwargs: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return code(err)


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.05)


def endpoint(running: Running) -> str:
    return str(running.state["s3"]).rstrip("/")


def fetch(url: str, method: str = "GET", body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """An HTTP request by urllib: (status, headers, body), errors included."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def error_code(body: bytes) -> str:
    return ET.fromstring(body).findtext("Code") or ""


def sign(key: tuple[str, str], method: str, url: str, body: bytes = b"",
         headers: dict[str, str] | None = None, *,
         unsigned_payload: bool = False) -> dict[str, str]:
    """SigV4 headers for a request, by botocore's own signer."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    if unsigned_payload:
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    S3SigV4Auth(Credentials(key[0], key[1]), "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def raw_xml(s3: Any, operation: str, call: Callable[[], Any]) -> ET.Element:
    """Run `call` and return the XML body of its `operation` response as sent."""
    seen: list[bytes] = []

    def keep(http_response: Any, **_: Any) -> None:
        seen.append(http_response.content)

    event = f"after-call.s3.{operation}"
    handler_id = f"keep-{operation}-{id(seen)}"
    s3.meta.events.register(event, keep, unique_id=handler_id)
    try:
        call()
    finally:
        s3.meta.events.unregister(event, unique_id=handler_id)
    assert len(seen) == 1
    return ET.fromstring(seen[0])


def texts(root: ET.Element, path: str) -> list[str]:
    return [e.text or "" for e in root.iter(NS + path)]


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket="api")
    return "api"


@pytest.fixture
def fresh(s3: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new empty bucket for one test, emptied and deleted afterwards."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:50].strip("-")
    s3.create_bucket(Bucket=name)
    yield name
    for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=name)


# ---- buckets --------------------------------------------------------------------------


def test_list_buckets_paginates(s3: Any) -> None:
    names = [f"page-{i:02d}" for i in range(5)]
    for name in names:
        s3.create_bucket(Bucket=name)
    first = s3.list_buckets(MaxBuckets=2, Prefix="page-")
    assert [b["Name"] for b in first["Buckets"]] == names[:2]
    assert first["ContinuationToken"] and first["Prefix"] == "page-"
    seen = [b["Name"] for page in s3.get_paginator("list_buckets").paginate(
        Prefix="page-", PaginationConfig={"PageSize": 2}) for b in page["Buckets"]]
    assert seen == names
    last = s3.list_buckets(MaxBuckets=10, Prefix="page-")
    assert "ContinuationToken" not in last
    for name in names:
        s3.delete_bucket(Bucket=name)


def test_list_buckets_bad_max_buckets(s3_cloudland: Running,
                                      access_key: tuple[str, str]) -> None:
    for value in ("0", "10001", "lots"):  # botocore refuses these before sending
        url = f"{endpoint(s3_cloudland)}/?max-buckets={value}"
        status, _, body = fetch(url, headers=sign(access_key, "GET", url))
        assert (status, error_code(body)) == (400, "InvalidArgument"), value


def test_bucket_lifecycle_and_errors(s3: Any) -> None:
    s3.create_bucket(Bucket="euro", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert s3.get_bucket_location(Bucket="euro")["LocationConstraint"] == "eu-west-1"
    assert s3.head_bucket(Bucket="euro")["ResponseMetadata"]["HTTPHeaders"][
        "x-amz-bucket-region"] == "eu-west-1"
    s3.create_bucket(Bucket="plain")
    assert s3.get_bucket_location(Bucket="plain")["LocationConstraint"] is None
    assert fails(s3.create_bucket, Bucket="plain") == ("BucketAlreadyOwnedByYou", 409)
    s3.put_object(Bucket="plain", Key="x", Body=b"x")
    assert fails(s3.delete_bucket, Bucket="plain") == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket="plain", Key="x")
    s3.delete_bucket(Bucket="plain")
    s3.delete_bucket(Bucket="euro")
    assert fails(s3.head_bucket, Bucket="plain") == ("404", 404)
    assert fails(s3.delete_bucket, Bucket="plain") == ("NoSuchBucket", 404)
    assert fails(s3.list_objects_v2, Bucket="plain") == ("NoSuchBucket", 404)
    assert fails(s3.get_bucket_location, Bucket="plain") == ("NoSuchBucket", 404)
    for bad in ("Upper_Case", "ab", "a" * 64, "-dash-first", "192.168.0.1", "two..dots"):
        assert fails(s3.create_bucket, Bucket=bad) == ("InvalidBucketName", 400), bad


# ---- objects --------------------------------------------------------------------------


def test_put_get_head_delete(s3: Any, bucket: str) -> None:
    body = b"hello world" * 100
    put = s3.put_object(Bucket=bucket, Key="obj/one", Body=body)
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="obj/one")
    assert got["Body"].read() == body and got["ContentLength"] == len(body)
    assert got["ContentType"] == "binary/octet-stream" and got["AcceptRanges"] == "bytes"
    head = s3.head_object(Bucket=bucket, Key="obj/one")
    assert head["ETag"] == put["ETag"] and head["ContentLength"] == len(body)
    assert s3.delete_object(Bucket=bucket, Key="obj/one")["ResponseMetadata"][
        "HTTPStatusCode"] == 204
    # Idempotent: deleting what is not there succeeds too.
    assert s3.delete_object(Bucket=bucket, Key="obj/one")["ResponseMetadata"][
        "HTTPStatusCode"] == 204
    assert fails(s3.head_object, Bucket=bucket, Key="obj/one") == ("404", 404)
    assert fails(s3.get_object, Bucket=bucket, Key="obj/one") == ("NoSuchKey", 404)
    assert fails(s3.get_object, Bucket="no-such-bucket", Key="k") == ("NoSuchBucket", 404)
    assert fails(s3.put_object, Bucket="no-such-bucket", Key="k",
                 Body=b"x") == ("NoSuchBucket", 404)
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    unicode_key = "dir with space/ünïcødé ☃+&?#%.txt"
    s3.put_object(Bucket=bucket, Key=unicode_key, Body=b"snow")
    assert s3.get_object(Bucket=bucket, Key=unicode_key)["Body"].read() == b"snow"
    s3.delete_object(Bucket=bucket, Key=unicode_key)
    s3.delete_object(Bucket=bucket, Key="empty")


def test_odd_keys_round_trip(s3: Any, fresh: str) -> None:
    odd = ["dots/../x", "./y", "a//b", "/lead", "trail/", "sp ace", "tab\tkey", "q?x=1",
           "hash#frag", "pct%2F", "plus+plus", "semi;colon", "~tilde", "ü/ñ/☃", "..",
           "back\\slash", "a/./b"]
    for i, key in enumerate(odd):
        s3.put_object(Bucket=fresh, Key=key, Body=str(i).encode())
    for i, key in enumerate(odd):
        assert s3.get_object(Bucket=fresh, Key=key)["Body"].read() == str(i).encode(), key
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=fresh)["Contents"]]
    assert listed == sorted(odd, key=lambda k: k.encode())


def test_unsupported_subresources_are_refused(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="tagged", Body=b"precious")
    # Bucket tagging is not kept: PUT ?tagging without a key is refused, never CreateBucket.
    assert fails(s3.put_bucket_tagging, Bucket=bucket,
                 Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}) == ("NotImplemented", 501)
    assert fails(s3.get_bucket_tagging, Bucket=bucket) == ("NotImplemented", 501)
    assert fails(s3.put_bucket_tagging, Bucket="not-made-by-tagging",
                 Tagging={"TagSet": []}) == ("NotImplemented", 501)
    assert fails(s3.head_bucket, Bucket="not-made-by-tagging") == ("404", 404)
    assert fails(s3.put_object_acl, Bucket=bucket, Key="tagged", ACL="private") == (
        "NotImplemented", 501)
    assert fails(s3.get_object_acl, Bucket=bucket, Key="tagged") == ("NotImplemented", 501)
    assert fails(s3.delete_bucket_policy, Bucket=bucket) == ("NotImplemented", 501)
    assert fails(s3.put_bucket_versioning, Bucket=bucket, VersioningConfiguration={
        "Status": "Enabled"}) == ("NotImplemented", 501)
    assert s3.get_object(Bucket=bucket, Key="tagged")["Body"].read() == b"precious"
    versioning = s3.get_bucket_versioning(Bucket=bucket)
    assert "Status" not in versioning
    assert fails(s3.get_bucket_versioning, Bucket="no-such-bucket") == ("NoSuchBucket", 404)


def test_delete_objects(s3: Any, fresh: str) -> None:
    for i in range(4):
        s3.put_object(Bucket=fresh, Key=f"d/{i}", Body=b"x")
    loud = s3.delete_objects(Bucket=fresh, Delete={"Objects": [
        {"Key": "d/0"}, {"Key": "d/1"}, {"Key": "never-existed"}]})
    assert sorted(d["Key"] for d in loud["Deleted"]) == ["d/0", "d/1", "never-existed"]
    assert "Errors" not in loud
    quiet = s3.delete_objects(Bucket=fresh, Delete={"Objects": [{"Key": "d/2"}],
                                                    "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=fresh)["Contents"]] == ["d/3"]
    too_many = {"Objects": [{"Key": f"k{i}"} for i in range(1001)]}
    assert fails(s3.delete_objects, Bucket=fresh, Delete=too_many) == ("MalformedXML", 400)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=fresh)["Contents"]] == ["d/3"]


def test_delete_objects_malformed_xml(s3_cloudland: Running, access_key: tuple[str, str],
                                      bucket: str) -> None:
    url = f"{endpoint(s3_cloudland)}/{bucket}?delete="
    for body in (b"<Delete><Object><Key>a</Key></Object>", b"not xml at all",
                 b"<Wrong><Object><Key>a</Key></Object></Wrong>", b"<Delete></Delete>"):
        status, _, reply = fetch(url, "POST", body, sign(access_key, "POST", url, body))
        assert (status, error_code(reply)) == (400, "MalformedXML"), body


def test_copy_object_directives(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="copy/src", Body=b"source bytes", ContentType="text/plain",
                  Metadata={"colour": "red"}, CacheControl="max-age=60")
    copied = s3.copy_object(Bucket=bucket, Key="copy/same",
                            CopySource={"Bucket": bucket, "Key": "copy/src"})
    src_head = s3.head_object(Bucket=bucket, Key="copy/src")
    same = s3.head_object(Bucket=bucket, Key="copy/same")
    assert copied["CopyObjectResult"]["ETag"] == src_head["ETag"] == same["ETag"]
    assert same["Metadata"] == {"colour": "red"} and same["ContentType"] == "text/plain"
    assert same["CacheControl"] == "max-age=60"
    s3.copy_object(Bucket=bucket, Key="copy/new", CopySource=f"{bucket}/copy/src",
                   MetadataDirective="REPLACE", Metadata={"colour": "blue"},
                   ContentType="application/json")
    new = s3.get_object(Bucket=bucket, Key="copy/new")
    assert new["Body"].read() == b"source bytes"
    assert new["Metadata"] == {"colour": "blue"} and new["ContentType"] == "application/json"
    assert "CacheControl" not in new
    assert fails(s3.copy_object, Bucket=bucket, Key="copy/src",
                 CopySource={"Bucket": bucket, "Key": "copy/src"}) == ("InvalidRequest", 400)
    s3.copy_object(Bucket=bucket, Key="copy/src", CopySource={"Bucket": bucket,
                                                             "Key": "copy/src"},
                   MetadataDirective="REPLACE", Metadata={"colour": "green"})
    assert s3.head_object(Bucket=bucket, Key="copy/src")["Metadata"] == {"colour": "green"}
    assert fails(s3.copy_object, Bucket=bucket, Key="copy/x",
                 CopySource={"Bucket": bucket, "Key": "copy/missing"}) == ("NoSuchKey", 404)
    assert fails(s3.copy_object, Bucket=bucket, Key="copy/x", CopySource=f"{bucket}/copy/src",
                 CopySourceIfMatch='"0123456789abcdef0123456789abcdef"') == (
        "PreconditionFailed", 412)
    assert fails(s3.copy_object, Bucket=bucket, Key="copy/x", CopySource=f"{bucket}/copy/src",
                 CopySourceIfNoneMatch=src_head["ETag"]) == ("PreconditionFailed", 412)
    s3.copy_object(Bucket=bucket, Key="copy/x", CopySource=f"{bucket}/copy/src",
                   CopySourceIfMatch=src_head["ETag"])
    assert fails(s3.head_object, Bucket=bucket, Key="copy/y") == ("404", 404)


# ---- listing --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(s3: Any) -> list[str]:
    s3.create_bucket(Bucket="tree")
    keys = ["a.txt", "b/1.txt", "b/2.txt", "b/c/3.txt", "b/c/4.txt", "d/5.txt", "e.txt",
            "sp ace/x", "sp ace/y", "plus+/z", "ümlaut/ä"]
    for key in keys:
        s3.put_object(Bucket="tree", Key=key, Body=key.encode())
    return sorted(keys, key=lambda k: k.encode())


def test_list_prefix_and_delimiter(s3: Any, tree: list[str]) -> None:
    v2 = s3.list_objects_v2(Bucket="tree", Delimiter="/")
    assert [o["Key"] for o in v2["Contents"]] == ["a.txt", "e.txt"]
    assert [p["Prefix"] for p in v2["CommonPrefixes"]] == ["b/", "d/", "plus+/", "sp ace/",
                                                            "ümlaut/"]
    assert v2["KeyCount"] == 7 and v2["Delimiter"] == "/" and v2["MaxKeys"] == 1000
    nested = s3.list_objects_v2(Bucket="tree", Prefix="b/", Delimiter="/")
    assert [o["Key"] for o in nested["Contents"]] == ["b/1.txt", "b/2.txt"]
    assert [p["Prefix"] for p in nested["CommonPrefixes"]] == ["b/c/"]
    assert nested["Prefix"] == "b/" and nested["KeyCount"] == 3
    v1 = s3.list_objects(Bucket="tree", Prefix="b/c/")
    assert [o["Key"] for o in v1["Contents"]] == ["b/c/3.txt", "b/c/4.txt"]
    assert v1["Prefix"] == "b/c/" and "CommonPrefixes" not in v1
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="tree")["Contents"]] == tree
    none = s3.list_objects_v2(Bucket="tree", Prefix="zzz")
    assert none["KeyCount"] == 0 and "Contents" not in none and not none["IsTruncated"]


def test_list_other_delimiters(s3: Any, tree: list[str]) -> None:
    partial = s3.list_objects_v2(Bucket="tree", Prefix="b/c", Delimiter="/")
    assert "Contents" not in partial
    assert partial["CommonPrefixes"] == [{"Prefix": "b/c/"}]
    dotted = s3.list_objects_v2(Bucket="tree", Prefix="b/", Delimiter=".")
    assert [p["Prefix"] for p in dotted["CommonPrefixes"]] == ["b/1.", "b/2.", "b/c/3.",
                                                              "b/c/4."]
    long = s3.list_objects_v2(Bucket="tree", Delimiter="/c/")
    assert [p["Prefix"] for p in long["CommonPrefixes"]] == ["b/c/"]
    assert "b/1.txt" in [o["Key"] for o in long["Contents"]]


def test_list_v1_markers(s3: Any, tree: list[str]) -> None:
    page = s3.list_objects(Bucket="tree", MaxKeys=3)
    assert [o["Key"] for o in page["Contents"]] == tree[:3] and page["IsTruncated"]
    assert page["MaxKeys"] == 3 and page["Marker"] == ""
    after = s3.list_objects(Bucket="tree", Marker=tree[2], MaxKeys=3)
    assert [o["Key"] for o in after["Contents"]] == tree[3:6] and after["Marker"] == tree[2]
    rolled = s3.list_objects(Bucket="tree", Delimiter="/", MaxKeys=2)
    assert [o["Key"] for o in rolled["Contents"]] == ["a.txt"]
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == ["b/"]
    assert rolled["IsTruncated"] and rolled["NextMarker"] == "b/"
    rest = s3.list_objects(Bucket="tree", Delimiter="/", Marker=rolled["NextMarker"])
    assert rest["CommonPrefixes"][0]["Prefix"] == "d/"
    keys = [o["Key"] for p in s3.get_paginator("list_objects").paginate(
        Bucket="tree", PaginationConfig={"PageSize": 4}) for o in p["Contents"]]
    assert keys == tree


def test_list_v2_tokens_and_start_after(s3: Any, tree: list[str]) -> None:
    first = s3.list_objects_v2(Bucket="tree", MaxKeys=4)
    assert first["IsTruncated"] and first["KeyCount"] == 4
    token = first["NextContinuationToken"]
    second = s3.list_objects_v2(Bucket="tree", MaxKeys=4, ContinuationToken=token)
    assert second["ContinuationToken"] == token
    assert [o["Key"] for o in first["Contents"] + second["Contents"]] == tree[:8]
    started = s3.list_objects_v2(Bucket="tree", StartAfter="b/c/3.txt")
    assert started["StartAfter"] == "b/c/3.txt"
    assert [o["Key"] for o in started["Contents"]] == tree[tree.index("b/c/3.txt") + 1:]
    # A continuation token wins over StartAfter.
    both = s3.list_objects_v2(Bucket="tree", MaxKeys=4, StartAfter="zzz",
                              ContinuationToken=token)
    assert [o["Key"] for o in both["Contents"]] == tree[4:8]
    zero = s3.list_objects_v2(Bucket="tree", MaxKeys=0)
    assert zero["KeyCount"] == 0 and zero["MaxKeys"] == 0
    assert "Owner" not in first["Contents"][0]
    owned = s3.list_objects_v2(Bucket="tree", MaxKeys=1, FetchOwner=True)
    assert owned["Contents"][0]["Owner"]["ID"]
    assert fails(s3.list_objects_v2, Bucket="tree", MaxKeys=-1) == ("InvalidArgument", 400)
    assert fails(s3.list_objects, Bucket="tree", MaxKeys=-1) == ("InvalidArgument", 400)
    assert fails(s3.list_objects_v2, Bucket="tree",
                 ContinuationToken="!!!not-a-token") == ("InvalidArgument", 400)


def test_list_max_keys_not_a_number(s3_cloudland: Running, access_key: tuple[str, str],
                                    tree: list[str]) -> None:
    url = f"{endpoint(s3_cloudland)}/tree?list-type=2&max-keys=many"
    status, _, body = fetch(url, headers=sign(access_key, "GET", url))
    assert (status, error_code(body)) == (400, "InvalidArgument")
    url = f"{endpoint(s3_cloudland)}/tree?list-type=2&encoding-type=base64"
    status, _, body = fetch(url, headers=sign(access_key, "GET", url))
    assert (status, error_code(body)) == (400, "InvalidArgument")


def test_list_encoding_type_url(s3: Any, tree: list[str]) -> None:
    # botocore asks for encoding-type=url itself and decodes: the parsed result is plain...
    parsed = s3.list_objects_v2(Bucket="tree", Prefix="sp ace/", Delimiter="/")
    assert [o["Key"] for o in parsed["Contents"]] == ["sp ace/x", "sp ace/y"]
    # ...while the XML as sent carries the encoded form, on keys, prefixes and echoes.
    root = raw_xml(s3, "ListObjectsV2", lambda: s3.list_objects_v2(
        Bucket="tree", Delimiter="/", StartAfter="a.txt", EncodingType="url"))
    assert root.findtext(NS + "EncodingType") == "url"
    assert root.findtext(NS + "StartAfter") == "a.txt"
    assert root.findtext(NS + "Delimiter") == "/"
    prefixes = [e.findtext(NS + "Prefix") for e in root.iter(NS + "CommonPrefixes")]
    assert prefixes == ["b/", "d/", "plus%2B/", "sp%20ace/", "%C3%BCmlaut/"]
    root = raw_xml(s3, "ListObjects", lambda: s3.list_objects(
        Bucket="tree", Prefix="sp ace/", EncodingType="url"))
    assert root.findtext(NS + "Prefix") == "sp%20ace/"
    assert texts(root, "Key") == ["sp%20ace/x", "sp%20ace/y"]
    root = raw_xml(s3, "ListObjectVersions", lambda: s3.list_object_versions(
        Bucket="tree", Prefix="ümlaut/", EncodingType="url"))
    assert texts(root, "Key") == ["%C3%BCmlaut/%C3%A4"]


def test_list_encoding_by_presigned_url(s3_cloudland: Running, access_key: tuple[str, str],
                                        s3: Any, tree: list[str]) -> None:
    url = s3.generate_presigned_url("list_objects_v2", Params={
        "Bucket": "tree", "Prefix": "plus+/", "EncodingType": "url"})
    status, _, body = fetch(url)
    assert status == 200
    root = ET.fromstring(body)
    assert root.findtext(NS + "Prefix") == "plus%2B/"
    assert texts(root, "Key") == ["plus%2B/z"]
    # Without encoding-type (botocore always adds it, so by hand) keys go as they are.
    plain = f"{endpoint(s3_cloudland)}/tree?list-type=2&prefix=plus%2B%2F"
    status, _, body = fetch(plain, headers=sign(access_key, "GET", plain))
    root = ET.fromstring(body)
    assert status == 200 and texts(root, "Key") == ["plus+/z"]
    assert root.find(NS + "EncodingType") is None


def test_listings_escape_keys_without_encoding(s3_cloudland: Running,
                                               access_key: tuple[str, str], s3: Any,
                                               fresh: str) -> None:
    """Without encoding-type, keys go into the XML as text: &, <, > and CR escaped, in
    every listing (v2, v1 with its Owner, versions)."""
    keys = sorted(["a&b", "c<d>e", "cr\rkey", "quote\"'"], key=str.encode)
    for key in keys:
        s3.put_object(Bucket=fresh, Key=key, Body=b"x")
    base = endpoint(s3_cloudland)
    for query, entry in (("list-type=2", "Contents"), ("", "Contents"),
                         ("versions", "Version")):
        url = f"{base}/{fresh}?{query}"
        status, _, body = fetch(url, headers=sign(access_key, "GET", url))
        assert status == 200, body
        entries = ET.fromstring(body).findall(NS + entry)
        assert [e.findtext(NS + "Key") for e in entries] == keys, query
        first = [child.tag.removeprefix(NS) for child in entries[0]]
        # (boto3 sends a CRC32 with each PUT: the listings name it)
        expected = ["Key", "LastModified", "ETag", "ChecksumAlgorithm", "ChecksumType", "Size",
                    "StorageClass"]
        if entry == "Version":
            expected[1:1] = ["VersionId", "IsLatest"]
        assert first == expected + ([] if query == "list-type=2" else ["Owner"]), query
        assert entries[0].findtext(NS + "ETag") == f'"{hashlib.md5(b"x").hexdigest()}"'


def test_list_object_versions(s3: Any, tree: list[str]) -> None:
    versions = s3.list_object_versions(Bucket="tree", Prefix="b/")
    assert [v["Key"] for v in versions["Versions"]] == [k for k in tree if k.startswith("b/")]
    assert all(v["VersionId"] == "null" and v["IsLatest"] for v in versions["Versions"])
    page = s3.list_object_versions(Bucket="tree", MaxKeys=2)
    assert page["IsTruncated"] and page["NextKeyMarker"] == tree[1]
    assert page["NextVersionIdMarker"] == "null"
    head = s3.head_object(Bucket="tree", Key="a.txt", VersionId="null")
    assert head["ContentLength"] == len("a.txt")
    assert s3.get_object(Bucket="tree", Key="a.txt", VersionId="null")["Body"].read() == \
        b"a.txt"
    # No other version exists: naming one is refused, and never touches the object.
    assert fails(s3.get_object, Bucket="tree", Key="a.txt", VersionId="v2") == (
        "InvalidArgument", 400)
    assert fails(s3.head_object, Bucket="tree", Key="a.txt", VersionId="v2") == ("400", 400)
    assert fails(s3.delete_object, Bucket="tree", Key="a.txt", VersionId="v2") == (
        "InvalidArgument", 400)
    assert s3.head_object(Bucket="tree", Key="a.txt")["ContentLength"] == len("a.txt")
    rolled = s3.list_object_versions(Bucket="tree", Delimiter="/")
    assert [v["Key"] for v in rolled["Versions"]] == ["a.txt", "e.txt"]
    assert "b/" in [p["Prefix"] for p in rolled["CommonPrefixes"]]


def test_paginators_over_many_keys(s3: Any, fresh: str) -> None:
    keys = [f"many/{i:05d}" for i in range(2500)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=fresh, Key=k, Body=b""), keys))
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=fresh))
    assert [p["KeyCount"] for p in pages] == [1000, 1000, 500]
    assert [o["Key"] for p in pages for o in p["Contents"]] == keys
    v1 = [o["Key"] for p in s3.get_paginator("list_objects").paginate(
        Bucket=fresh, PaginationConfig={"PageSize": 700}) for o in p["Contents"]]
    assert v1 == keys
    versions = [v["Key"] for p in s3.get_paginator("list_object_versions").paginate(
        Bucket=fresh) for v in p["Versions"]]
    assert versions == keys
    rolled = s3.list_objects_v2(Bucket=fresh, Delimiter="/")
    assert rolled["KeyCount"] == 1 and rolled["CommonPrefixes"] == [{"Prefix": "many/"}]


# ---- multipart ------------------------------------------------------------------------


def test_multipart_upload(s3: Any, fresh: str) -> None:
    part1, part2 = b"a" * (5 * MIB), b"tail bytes"
    s3.put_object(Bucket=fresh, Key="copy-source", Body=b"0123456789" * 10)
    created = s3.create_multipart_upload(Bucket=fresh, Key="big", ContentType="video/mp4",
                                         Metadata={"k": "v"})
    upload_id = created["UploadId"]
    listed = s3.list_multipart_uploads(Bucket=fresh)
    assert [(u["Key"], u["UploadId"]) for u in listed["Uploads"]] == [("big", upload_id)]
    e1 = s3.upload_part(Bucket=fresh, Key="big", UploadId=upload_id, PartNumber=1,
                        Body=part1)["ETag"]
    e2 = s3.upload_part(Bucket=fresh, Key="big", UploadId=upload_id, PartNumber=2,
                        Body=part2)["ETag"]
    copied = s3.upload_part_copy(Bucket=fresh, Key="big", UploadId=upload_id, PartNumber=3,
                                 CopySource={"Bucket": fresh, "Key": "copy-source"},
                                 CopySourceRange="bytes=10-29")["CopyPartResult"]["ETag"]
    part3 = (b"0123456789" * 10)[10:30]
    assert copied == f'"{hashlib.md5(part3).hexdigest()}"'
    parts = s3.list_parts(Bucket=fresh, Key="big", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [
        (1, e1, len(part1)), (2, e2, len(part2)), (3, copied, 20)]
    paged = s3.list_parts(Bucket=fresh, Key="big", UploadId=upload_id, MaxParts=1)
    assert paged["IsTruncated"] and paged["NextPartNumberMarker"] == 1
    # Past 1,000 is taken (and said back) as S3 does; a page still holds 1,000 at most.
    many = s3.list_parts(Bucket=fresh, Key="big", UploadId=upload_id, MaxParts=5000)
    assert (many["MaxParts"], len(many["Parts"]), many["IsTruncated"]) == (5000, 3, False)
    uploads = s3.list_multipart_uploads(Bucket=fresh, MaxUploads=5000)
    assert uploads["MaxUploads"] == 5000 and upload_id in {u["UploadId"]
                                                           for u in uploads["Uploads"]}
    assert fails(s3.list_parts, Bucket=fresh, Key="big", UploadId=upload_id,
                 MaxParts=2**31) == ("InvalidArgument", 400)
    # Part 2 is too small to be anything but the last.
    assert fails(s3.complete_multipart_upload, Bucket=fresh, Key="big", UploadId=upload_id,
                 MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in
                                            ((1, e1), (2, e2), (3, copied))]}) == (
        "EntityTooSmall", 400)
    assert fails(s3.complete_multipart_upload, Bucket=fresh, Key="big", UploadId=upload_id,
                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {
                     "PartNumber": 2, "ETag": '"00000000000000000000000000000000"'}]}) == (
        "InvalidPart", 400)
    done = s3.complete_multipart_upload(
        Bucket=fresh, Key="big", UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2,
                                                                   "ETag": e2}]})
    digests = b"".join(hashlib.md5(p).digest() for p in (part1, part2))
    assert done["ETag"] == f'"{hashlib.md5(digests).hexdigest()}-2"'
    got = s3.get_object(Bucket=fresh, Key="big")
    assert got["Body"].read() == part1 + part2 and got["ETag"] == done["ETag"]
    assert got["ContentType"] == "video/mp4" and got["Metadata"] == {"k": "v"}
    second = s3.get_object(Bucket=fresh, Key="big", PartNumber=2)
    assert second["Body"].read() == part2 and second["PartsCount"] == 2
    assert second["ContentRange"] == f"bytes {len(part1)}-{len(part1) + len(part2) - 1}/" \
        f"{len(part1) + len(part2)}"
    head = s3.head_object(Bucket=fresh, Key="big", PartNumber=1)
    assert head["PartsCount"] == 2 and head["ContentLength"] == len(part1)
    assert fails(s3.get_object, Bucket=fresh, Key="big", PartNumber=3) == (
        "InvalidPartNumber", 416)
    assert fails(s3.get_object, Bucket=fresh, Key="big", PartNumber=1,
                 Range="bytes=0-1") == ("InvalidRequest", 400)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=fresh)
    assert fails(s3.list_parts, Bucket=fresh, Key="big", UploadId=upload_id) == (
        "NoSuchUpload", 404)


def test_multipart_abort_and_unknown_upload(s3: Any, fresh: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=fresh, Key="gone")["UploadId"]
    s3.upload_part(Bucket=fresh, Key="gone", UploadId=upload_id, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=fresh, Key="gone", UploadId=upload_id)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=fresh)
    assert fails(s3.upload_part, Bucket=fresh, Key="gone", UploadId=upload_id, PartNumber=1,
                 Body=b"x") == ("NoSuchUpload", 404)
    assert fails(s3.complete_multipart_upload, Bucket=fresh, Key="gone", UploadId="nope",
                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]}) == (
        "NoSuchUpload", 404)
    assert fails(s3.abort_multipart_upload, Bucket=fresh, Key="gone", UploadId="nope") == (
        "NoSuchUpload", 404)
    assert fails(s3.head_object, Bucket=fresh, Key="gone") == ("404", 404)
    # An upload id only works with its own bucket and key.
    other = s3.create_multipart_upload(Bucket=fresh, Key="mine")["UploadId"]
    for op, extra in ((s3.list_parts, {}), (s3.abort_multipart_upload, {}),
                      (s3.upload_part, {"PartNumber": 1, "Body": b"x"})):
        assert fails(op, Bucket=fresh, Key="not-mine", UploadId=other, **extra) == (
            "NoSuchUpload", 404), op
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=fresh)["Uploads"]] == [
        other]
    s3.abort_multipart_upload(Bucket=fresh, Key="mine", UploadId=other)
    one = s3.create_multipart_upload(Bucket=fresh, Key="solo")["UploadId"]
    etag = s3.upload_part(Bucket=fresh, Key="solo", UploadId=one, PartNumber=1,
                          Body=b"small")["ETag"]
    assert fails(s3.upload_part, Bucket=fresh, Key="solo", UploadId=one, PartNumber=10001,
                 Body=b"x") == ("InvalidArgument", 400)
    done = s3.complete_multipart_upload(Bucket=fresh, Key="solo", UploadId=one,
                                        MultipartUpload={"Parts": [{"PartNumber": 1,
                                                                    "ETag": etag}]})
    assert done["ETag"].endswith('-1"')
    assert s3.get_object(Bucket=fresh, Key="solo")["Body"].read() == b"small"


# ---- ranges and conditions -------------------------------------------------------------


def test_ranged_get(s3: Any, bucket: str) -> None:
    body = bytes(range(256)) * 16  # 4096 bytes
    s3.put_object(Bucket=bucket, Key="range", Body=body)
    for header, start, end in (("bytes=0-9", 0, 9), ("bytes=4000-", 4000, 4095),
                               ("bytes=-10", 4086, 4095), ("bytes=4090-9999", 4090, 4095),
                               ("bytes=-99999", 0, 4095)):
        got = s3.get_object(Bucket=bucket, Key="range", Range=header)
        assert got["Body"].read() == body[start:end + 1], header
        assert got["ContentRange"] == f"bytes {start}-{end}/4096", header
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="range", Range="bytes=4096-")
    assert code(err) == ("InvalidRange", 416)
    assert err.value.response["ResponseMetadata"]["HTTPHeaders"]["content-range"] == \
        "bytes */4096"
    assert fails(s3.get_object, Bucket=bucket, Key="range", Range="bytes=-0") == (
        "InvalidRange", 416)
    whole = s3.get_object(Bucket=bucket, Key="range", Range="bytes=junk")
    assert whole["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert whole["Body"].read() == body


def test_conditional_requests(s3: Any, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="cond", Body=b"v1")
    etag = put["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="cond")["LastModified"]
    before, after = modified - timedelta(hours=1), modified + timedelta(hours=1)
    other = '"ffffffffffffffffffffffffffffffff"'
    for head, op in ((False, s3.get_object), (True, s3.head_object)):
        assert op(Bucket=bucket, Key="cond", IfMatch=etag)["ETag"] == etag
        assert op(Bucket=bucket, Key="cond", IfNoneMatch=other)["ETag"] == etag
        assert op(Bucket=bucket, Key="cond", IfModifiedSince=before)["ETag"] == etag
        assert op(Bucket=bucket, Key="cond", IfUnmodifiedSince=after)["ETag"] == etag
        failed = ("412" if head else "PreconditionFailed", 412)
        assert fails(op, Bucket=bucket, Key="cond", IfMatch=other) == failed
        assert fails(op, Bucket=bucket, Key="cond", IfUnmodifiedSince=before) == failed
        assert fails(op, Bucket=bucket, Key="cond", IfNoneMatch=etag) == ("304", 304)
        assert fails(op, Bucket=bucket, Key="cond", IfModifiedSince=after) == ("304", 304)
        # If-Match passing beats If-Unmodified-Since failing; If-None-Match beats
        # If-Modified-Since (RFC 7232 as S3 applies it).
        assert op(Bucket=bucket, Key="cond", IfMatch=etag, IfUnmodifiedSince=before)
        assert op(Bucket=bucket, Key="cond", IfNoneMatch=other, IfModifiedSince=after)
    assert fails(s3.put_object, Bucket=bucket, Key="cond", Body=b"v2",
                 IfNoneMatch="*") == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="cond")["Body"].read() == b"v1"
    s3.put_object(Bucket=bucket, Key="cond-new", Body=b"first", IfNoneMatch="*")
    assert fails(s3.put_object, Bucket=bucket, Key="cond", Body=b"v2", IfMatch=other) == (
        "PreconditionFailed", 412)
    s3.put_object(Bucket=bucket, Key="cond", Body=b"v2", IfMatch=etag)
    assert s3.get_object(Bucket=bucket, Key="cond")["Body"].read() == b"v2"


# ---- metadata and limits ---------------------------------------------------------------


def test_metadata_and_content_headers(s3: Any, bucket: str) -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    s3.put_object(Bucket=bucket, Key="meta", Body=b"{}", ContentType="application/json",
                  ContentEncoding="identity", ContentDisposition='attachment; filename="m.json"',
                  CacheControl="no-cache", ContentLanguage="en", Expires=expires,
                  Metadata={"Author": "Ann", "empty": "", "utf": "ok"})
    for got in (s3.get_object(Bucket=bucket, Key="meta"),
                s3.head_object(Bucket=bucket, Key="meta")):
        assert got["ContentType"] == "application/json"
        assert got["ContentEncoding"] == "identity"
        assert got["ContentDisposition"] == 'attachment; filename="m.json"'
        assert got["CacheControl"] == "no-cache" and got["ContentLanguage"] == "en"
        headers = got["ResponseMetadata"]["HTTPHeaders"]
        assert headers["expires"] == "Wed, 02 Jan 2030 03:04:05 GMT"
        assert got["Metadata"] == {"author": "Ann", "empty": "", "utf": "ok"}
    overridden = s3.get_object(Bucket=bucket, Key="meta", ResponseContentType="text/plain",
                               ResponseCacheControl="max-age=5")
    assert overridden["ContentType"] == "text/plain"
    assert overridden["CacheControl"] == "max-age=5"
    assert fails(s3.put_object, Bucket=bucket, Key="meta-big", Body=b"x",
                 Metadata={"big": "v" * 2100}) == ("MetadataTooLarge", 400)
    assert fails(s3.put_object, Bucket=bucket, Key="meta-big", Body=b"x",
                 Metadata={f"m{i}": "v" * 100 for i in range(25)}) == ("MetadataTooLarge", 400)
    assert fails(s3.create_multipart_upload, Bucket=bucket, Key="meta-big",
                 Metadata={"big": "v" * 2100}) == ("MetadataTooLarge", 400)
    assert fails(s3.head_object, Bucket=bucket, Key="meta-big") == ("404", 404)


def test_key_length_limit(s3: Any, bucket: str) -> None:
    longest = "k" * 1024
    s3.put_object(Bucket=bucket, Key=longest, Body=b"ok")
    assert s3.get_object(Bucket=bucket, Key=longest)["Body"].read() == b"ok"
    s3.delete_object(Bucket=bucket, Key=longest)
    assert fails(s3.put_object, Bucket=bucket, Key="k" * 1025, Body=b"x") == (
        "KeyTooLongError", 400)
    assert fails(s3.put_object, Bucket=bucket, Key="é" * 513, Body=b"x") == (
        "KeyTooLongError", 400)
    assert fails(s3.create_multipart_upload, Bucket=bucket, Key="k" * 1025) == (
        "KeyTooLongError", 400)
    assert fails(s3.copy_object, Bucket=bucket, Key="k" * 1025,
                 CopySource={"Bucket": bucket, "Key": "x"}) == ("KeyTooLongError", 400)


# ---- auth ------------------------------------------------------------------------------


def test_presigned_get_and_expiry(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="shared/file.txt", Body=b"presigned")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket,
                                                          "Key": "shared/file.txt"})
    status, _, body = fetch(url)
    assert (status, body) == (200, b"presigned")
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket,
                                                              "Key": "shared/put.txt"})
    assert fetch(put_url, "PUT", b"uploaded")[0] == 200
    assert s3.get_object(Bucket=bucket, Key="shared/put.txt")["Body"].read() == b"uploaded"
    # The signature covers the key: another key with this URL's signature is refused.
    status, _, reply = fetch(url.replace("file.txt", "put.txt"))
    assert (status, error_code(reply)) == (403, "SignatureDoesNotMatch")
    short = s3.generate_presigned_url("get_object", ExpiresIn=1,
                                      Params={"Bucket": bucket, "Key": "shared/file.txt"})
    outcome: list[tuple[int, bytes]] = []

    def expired() -> bool:
        status, _, reply = fetch(short)
        outcome.append((status, reply))
        return status != 200

    wait_until(expired, 10, "the presigned URL to expire")
    status, reply = outcome[-1]
    assert (status, error_code(reply)) == (403, "AccessDenied")
    assert b"expired" in reply


def test_stale_signatures(s3_cloudland: Running, access_key: tuple[str, str], s3: Any,
                          bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.auth

    s3.put_object(Bucket=bucket, Key="stale", Body=b"x")
    url = f"{endpoint(s3_cloudland)}/{bucket}/stale"
    assert fetch(url, headers=sign(access_key, "GET", url))[0] == 200
    past = datetime.now(UTC) - timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: past)
    status, _, reply = fetch(url, headers=sign(access_key, "GET", url))
    assert (status, error_code(reply)) == (403, "RequestTimeTooSkewed")
    # A presigned URL made 20 minutes ago, valid for 10: expired.
    presigner = client(s3_cloudland, access_key)
    old = presigner.generate_presigned_url("get_object", ExpiresIn=600,
                                           Params={"Bucket": bucket, "Key": "stale"})
    monkeypatch.undo()
    status, _, reply = fetch(old)
    assert (status, error_code(reply)) == (403, "AccessDenied") and b"expired" in reply


def test_tampered_signature(s3_cloudland: Running, access_key: tuple[str, str],
                            s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="tamper", Body=b"x")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "tamper"})
    signature = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)["X-Amz-Signature"][0]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    status, _, reply = fetch(url.replace(signature, flipped))
    assert (status, error_code(reply)) == (403, "SignatureDoesNotMatch")

    tampering = client(s3_cloudland, access_key)

    def tamper(request: Any, **kwargs: Any) -> None:
        auth = request.headers["Authorization"]
        auth = auth.decode() if isinstance(auth, bytes) else auth
        head, _eq, sig = auth.rpartition("Signature=")
        request.headers["Authorization"] = head + "Signature=" + \
            ("0" if sig[0] != "0" else "1") + sig[1:]

    tampering.meta.events.register("before-send.s3", tamper)
    assert fails(tampering.get_object, Bucket=bucket, Key="tamper") == (
        "SignatureDoesNotMatch", 403)
    assert fails(tampering.put_object, Bucket=bucket, Key="tamper", Body=b"evil") == (
        "SignatureDoesNotMatch", 403)
    assert s3.get_object(Bucket=bucket, Key="tamper")["Body"].read() == b"x"
    # A body that is not the one signed is refused too.
    url2 = f"{endpoint(s3_cloudland)}/{bucket}/tamper"
    headers = sign(access_key, "PUT", url2, b"signed body")
    status, _, reply = fetch(url2, "PUT", b"other body!", headers)
    assert (status, error_code(reply)) == (400, "XAmzContentSHA256Mismatch")
    assert s3.get_object(Bucket=bucket, Key="tamper")["Body"].read() == b"x"


def test_public_read_bucket(s3_cloudland: Running, s3: Any) -> None:
    s3.create_bucket(Bucket="open-house", ACL="public-read")
    s3.put_object(Bucket="open-house", Key="readme", Body=b"welcome")
    anonymous = client(s3_cloudland, None)
    assert anonymous.get_object(Bucket="open-house", Key="readme")["Body"].read() == b"welcome"
    assert anonymous.head_object(Bucket="open-house", Key="readme")["ContentLength"] == 7
    assert [o["Key"] for o in anonymous.list_objects_v2(Bucket="open-house")["Contents"]] == [
        "readme"]
    anonymous.head_bucket(Bucket="open-house")
    status, _, body = fetch(f"{endpoint(s3_cloudland)}/open-house/readme")
    assert (status, body) == (200, b"welcome")
    assert fails(anonymous.put_object, Bucket="open-house", Key="graffiti",
                 Body=b"x") == ("AccessDenied", 403)
    assert fails(anonymous.delete_object, Bucket="open-house", Key="readme") == (
        "AccessDenied", 403)
    assert fails(anonymous.list_buckets) == ("AccessDenied", 403)
    assert fails(anonymous.delete_bucket, Bucket="open-house") == ("AccessDenied", 403)
    assert s3.get_object(Bucket="open-house", Key="readme")["Body"].read() == b"welcome"
    assert fails(s3.head_object, Bucket="open-house", Key="graffiti") == ("404", 404)
    s3.delete_object(Bucket="open-house", Key="readme")
    s3.delete_bucket(Bucket="open-house")


# ---- bad input on the wire --------------------------------------------------------------


def test_truncated_upload_is_never_committed(s3_cloudland: Running,
                                             access_key: tuple[str, str], s3: Any,
                                             bucket: str) -> None:
    url = f"{endpoint(s3_cloudland)}/{bucket}/truncated"
    parsed = urllib.parse.urlparse(url)
    headers = sign(access_key, "PUT", url, b"", {"Content-Length": "1000"},
                   unsigned_payload=True)
    headers["Content-Length"] = "1000"
    assert headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    lines = [f"PUT {parsed.path} HTTP/1.1", f"Host: {parsed.netloc}"] + [
        f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((parsed.hostname, parsed.port or 80), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"x" * 500)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    # Whatever the server answered (if anything), it was not a success.
    assert not reply.startswith(b"HTTP/1.1 200"), reply
    assert fails(s3.head_object, Bucket=bucket, Key="truncated") == ("404", 404)
    # The same request in full does commit (so the signing above was right).
    full = sign(access_key, "PUT", url, b"y" * 1000, unsigned_payload=True)
    assert fetch(url, "PUT", b"y" * 1000, full)[0] == 200
    assert s3.head_object(Bucket=bucket, Key="truncated")["ContentLength"] == 1000


def test_concurrent_writers_one_key(s3: Any, bucket: str) -> None:
    bodies = [bytes([65 + i]) * (256 << 10) for i in range(8)]
    barrier = threading.Barrier(len(bodies))

    def put(body: bytes) -> str:
        barrier.wait(10)
        return str(s3.put_object(Bucket=bucket, Key="contended", Body=body)["ETag"])

    for _ in range(3):
        with ThreadPoolExecutor(len(bodies)) as pool:
            etags = list(pool.map(put, bodies))
        got = s3.get_object(Bucket=bucket, Key="contended")
        data = got["Body"].read()
        assert data in bodies
        assert got["ETag"] == etags[bodies.index(data)]


def test_copy_source_date_conditions(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="copy-dates", Body=b"dated")
    modified = s3.head_object(Bucket=bucket, Key="copy-dates")["LastModified"]
    before, after = modified - timedelta(hours=1), modified + timedelta(hours=1)
    source = {"Bucket": bucket, "Key": "copy-dates"}
    assert fails(s3.copy_object, Bucket=bucket, Key="copy-dated", CopySource=source,
                 CopySourceIfModifiedSince=after) == ("PreconditionFailed", 412)
    assert fails(s3.copy_object, Bucket=bucket, Key="copy-dated", CopySource=source,
                 CopySourceIfUnmodifiedSince=before) == ("PreconditionFailed", 412)
    assert fails(s3.head_object, Bucket=bucket, Key="copy-dated") == ("404", 404)
    s3.copy_object(Bucket=bucket, Key="copy-dated", CopySource=source,
                   CopySourceIfModifiedSince=before, CopySourceIfUnmodifiedSince=after)
    assert s3.get_object(Bucket=bucket, Key="copy-dated")["Body"].read() == b"dated"


def test_integrity_headers(s3: Any, bucket: str) -> None:
    wrong_md5 = "1B2M2Y8AsgTpgAmY7PhCfg=="  # the MD5 of nothing
    assert fails(s3.put_object, Bucket=bucket, Key="digest", Body=b"something",
                 ContentMD5=wrong_md5) == ("BadDigest", 400)
    assert fails(s3.put_object, Bucket=bucket, Key="digest", Body=b"something",
                 ChecksumSHA256="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=") == (
        "BadDigest", 400)
    assert fails(s3.head_object, Bucket=bucket, Key="digest") == ("404", 404)
    s3.put_object(Bucket=bucket, Key="digest", Body=b"something", ChecksumAlgorithm="SHA256")
    head = s3.head_object(Bucket=bucket, Key="digest", ChecksumMode="ENABLED")
    assert "ChecksumSHA256" in head


def test_integrity_headers_on_large_bodies(s3: Any, bucket: str) -> None:
    """Bodies of several blocks are checked by threads (MD5 once, for the ETag and
    Content-MD5 both; SHA-256 and checksums beside it): a wrong digest still refuses."""
    body = bytes(range(256)) * (9 * 1024 + 7)  # > 2 MiB, not a whole number of blocks
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    assert fails(s3.put_object, Bucket=bucket, Key="big-digest", Body=body,
                 ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==") == ("BadDigest", 400)
    assert fails(s3.put_object, Bucket=bucket, Key="big-digest", Body=body,
                 ChecksumSHA256="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=") == (
        "BadDigest", 400)
    assert fails(s3.head_object, Bucket=bucket, Key="big-digest") == ("404", 404)
    put = s3.put_object(Bucket=bucket, Key="big-digest", Body=body, ContentMD5=md5)
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="big-digest")["Body"].read() == body


def test_virtual_host_style(s3_cloudland: Running, access_key: tuple[str, str],
                            s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="vhost/key.txt", Body=b"virtual")
    port = urllib.parse.urlparse(endpoint(s3_cloudland)).port
    signed_url = f"http://{bucket}.localhost:{port}/vhost/key.txt"
    headers = sign(access_key, "GET", signed_url)
    headers["Host"] = f"{bucket}.localhost:{port}"
    status, _, body = fetch(f"http://127.0.0.1:{port}/vhost/key.txt", headers=headers)
    assert (status, body) == (200, b"virtual")


def test_missing_content_length(s3_cloudland: Running, access_key: tuple[str, str],
                                s3: Any, bucket: str) -> None:
    url = f"{endpoint(s3_cloudland)}/{bucket}/no-length"
    parsed = urllib.parse.urlparse(url)
    headers = sign(access_key, "PUT", url, b"", unsigned_payload=True)
    headers.pop("Content-Length", None)
    lines = [f"PUT {parsed.path} HTTP/1.1", f"Host: {parsed.netloc}"] + [
        f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((parsed.hostname, parsed.port or 80), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 411 ")
    assert b"<Code>MissingContentLength</Code>" in reply
    assert fails(s3.head_object, Bucket=bucket, Key="no-length") == ("404", 404)


def test_multipart_listing_pages_and_copy_conditions(s3: Any, fresh: str) -> None:
    s3.put_object(Bucket=fresh, Key="src", Body=b"0123456789")
    ids = [s3.create_multipart_upload(Bucket=fresh, Key=key)["UploadId"]
           for key in ("u/a", "u/b", "u/b", "v/c")]
    first = s3.list_multipart_uploads(Bucket=fresh, MaxUploads=2)
    assert first["IsTruncated"] and first["MaxUploads"] == 2
    assert [(u["Key"], u["UploadId"]) for u in first["Uploads"]] == [("u/a", ids[0]),
                                                                      ("u/b", ids[1])]
    assert (first["NextKeyMarker"], first["NextUploadIdMarker"]) == ("u/b", ids[1])
    rest = s3.list_multipart_uploads(Bucket=fresh, KeyMarker=first["NextKeyMarker"],
                                     UploadIdMarker=first["NextUploadIdMarker"])
    assert [u["UploadId"] for u in rest["Uploads"]] == ids[2:] and not rest["IsTruncated"]
    prefixed = s3.list_multipart_uploads(Bucket=fresh, Prefix="v/")
    assert [u["Key"] for u in prefixed["Uploads"]] == ["v/c"]
    source = {"Bucket": fresh, "Key": "src"}
    assert fails(s3.upload_part_copy, Bucket=fresh, Key="u/a", UploadId=ids[0], PartNumber=1,
                 CopySource=source, CopySourceIfMatch='"ffffffffffffffffffffffffffffffff"') == (
        "PreconditionFailed", 412)
    assert fails(s3.upload_part_copy, Bucket=fresh, Key="u/a", UploadId=ids[0], PartNumber=1,
                 CopySource=source, CopySourceRange="bytes=5") == ("InvalidArgument", 400)
    assert fails(s3.upload_part_copy, Bucket=fresh, Key="u/a", UploadId=ids[0], PartNumber=1,
                 CopySource={"Bucket": fresh, "Key": "nope"}) == ("NoSuchKey", 404)
    whole = s3.upload_part_copy(Bucket=fresh, Key="u/a", UploadId=ids[0], PartNumber=1,
                                CopySource=source)["CopyPartResult"]["ETag"]
    assert whole == f'"{hashlib.md5(b"0123456789").hexdigest()}"'
