"""Object tagging through boto3 against a real CloudLand, as S3 does it: tags given with
PutObject, CreateMultipartUpload and CopyObject (`x-amz-tagging`, the copy's
`x-amz-tagging-directive`), read and replaced through `?tagging`, counted by GET and HEAD
(`x-amz-tagging-count`), checked against S3's limits with S3's errors, and kept in the
object's row across a restart."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import Running, start_cloudland
from tests.storage.conftest import client
from tests.storage.test_s3_api import endpoint, error_code, fails, fetch, sign

PART = 5 << 20


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket="tags")
    return "tags"


def tag_set(tags: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    return {"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}


def tags_of(s3: Any, bucket: str, key: str, **kwargs: Any) -> dict[str, str]:
    answer = s3.get_object_tagging(Bucket=bucket, Key=key, **kwargs)
    assert answer["VersionId"] == "null"  # x-amz-version-id: null, as S3 for unversioned
    return {t["Key"]: t["Value"] for t in answer["TagSet"]}


def count_header(answer: dict[str, Any]) -> str | None:
    return answer["ResponseMetadata"]["HTTPHeaders"].get("x-amz-tagging-count")


def test_put_object_keeps_its_tags(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="ride.txt", Body=b"queue: 5 min",
                  Tagging="ride=coaster&zone=north%20side&empty=&bare&sp+ace=a+b")
    expected = {"ride": "coaster", "zone": "north side", "empty": "", "bare": "",
                "sp ace": "a b"}
    assert tags_of(s3, bucket, "ride.txt") == expected
    assert tags_of(s3, bucket, "ride.txt", VersionId="null") == expected
    got = s3.get_object(Bucket=bucket, Key="ride.txt")
    assert got["TagCount"] == 5 and got["Body"].read() == b"queue: 5 min"
    assert count_header(s3.head_object(Bucket=bucket, Key="ride.txt")) == "5"
    s3.put_object(Bucket=bucket, Key="plain.txt", Body=b"no tags")
    assert tags_of(s3, bucket, "plain.txt") == {}
    assert "TagCount" not in s3.get_object(Bucket=bucket, Key="plain.txt")
    assert count_header(s3.head_object(Bucket=bucket, Key="plain.txt")) is None
    # A new PUT of the key is a new object: its tags are only those it is sent with.
    s3.put_object(Bucket=bucket, Key="ride.txt", Body=b"queue: 10 min")
    assert tags_of(s3, bucket, "ride.txt") == {}


def test_put_get_delete_object_tagging(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="board.json", Body=b"{}", Tagging="old=1&keep=no")
    before = s3.head_object(Bucket=bucket, Key="board.json")
    unicode = {"Größe": "groß", "ключ": "значение", "a+b-c=d.e_f:g/h@i": "x y", "v": ""}
    answer = s3.put_object_tagging(Bucket=bucket, Key="board.json", Tagging=tag_set(unicode))
    assert answer["VersionId"] == "null"
    assert tags_of(s3, bucket, "board.json") == unicode  # replaced whole, order kept
    after = s3.head_object(Bucket=bucket, Key="board.json")
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])
    assert count_header(after) == "4"
    gone = s3.delete_object_tagging(Bucket=bucket, Key="board.json")
    assert gone["ResponseMetadata"]["HTTPStatusCode"] == 204 and gone["VersionId"] == "null"
    assert tags_of(s3, bucket, "board.json") == {}
    assert s3.get_object(Bucket=bucket, Key="board.json")["Body"].read() == b"{}"
    s3.put_object_tagging(Bucket=bucket, Key="board.json", Tagging=tag_set({"a": "1"}))
    s3.put_object_tagging(Bucket=bucket, Key="board.json", Tagging={"TagSet": []})
    assert tags_of(s3, bucket, "board.json") == {}  # an empty set removes the tags


def test_tagging_a_missing_object_or_version(s3_cloudland: Running,
                                             access_key: tuple[str, str], s3: Any,
                                             bucket: str) -> None:
    for call, extra in ((s3.get_object_tagging, {}), (s3.delete_object_tagging, {}),
                        (s3.put_object_tagging, {"Tagging": tag_set({"a": "b"})})):
        assert fails(call, Bucket=bucket, Key="never", **extra) == ("NoSuchKey", 404)
        assert fails(call, Bucket="no-such-tags", Key="k", **extra) == ("NoSuchBucket", 404)
    s3.put_object(Bucket=bucket, Key="v", Body=b"")
    assert fails(s3.get_object_tagging, Bucket=bucket, Key="v", VersionId="3") == (
        "InvalidArgument", 400)
    # POST and HEAD ?tagging are no operation of S3's: refused, the object left alone.
    url = f"{endpoint(s3_cloudland)}/{bucket}/v?tagging"
    status, _, reply = fetch(url, "POST", b"x", sign(access_key, "POST", url, b"x"))
    assert (status, error_code(reply)) == (501, "NotImplemented")
    assert fetch(url, "HEAD", None, sign(access_key, "HEAD", url))[0] == 501
    assert s3.get_object(Bucket=bucket, Key="v")["Body"].read() == b""


def test_tag_limits_answer_s3s_errors(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="limits", Body=b"x", Tagging="kept=yes")

    def refused(tags: dict[str, str]) -> tuple[str, str, int]:
        import botocore.exceptions

        try:
            s3.put_object_tagging(Bucket=bucket, Key="limits", Tagging=tag_set(tags))
        except botocore.exceptions.ClientError as err:
            error = err.response["Error"]
            return (error["Code"], error["Message"],
                    err.response["ResponseMetadata"]["HTTPStatusCode"])
        raise AssertionError(f"{tags} were taken")

    wide = "\N{DESERET CAPITAL LETTER LONG I}"  # a letter beyond the BMP: 2 UTF-16 units
    longest = {"k" * 128: "v" * 256, wide * 64: wide * 128}
    s3.put_object_tagging(Bucket=bucket, Key="limits", Tagging=tag_set(longest))
    assert tags_of(s3, bucket, "limits") == longest
    ten = {f"k{i}": str(i) for i in range(10)}
    s3.put_object_tagging(Bucket=bucket, Key="limits", Tagging=tag_set(ten))
    assert refused({f"k{i}": "" for i in range(11)}) == (
        "BadRequest", "Object tags cannot be greater than 10", 400)
    assert refused({"k" * 129: ""}) == (
        "InvalidTag", "The TagKey you have provided is too long, max 128", 400)
    assert refused({wide * 65: ""}) == (
        "InvalidTag", "The TagKey you have provided is too long, max 128", 400)
    assert refused({"k": "v" * 257}) == (
        "InvalidTag", "The TagValue you have provided is too long, max 256", 400)
    for bad_key in ("semi;colon", "a&b", "tab\tkey", "q?", "<x>", "a,b", "*"):
        assert refused({bad_key: "v"}) == (
            "InvalidTag", "The TagKey you have provided is invalid", 400), bad_key
    for bad_value in ("semi;colon", "100%", "new\nline", "#1"):
        assert refused({"k": bad_value}) == (
            "InvalidTag", "The TagValue you have provided is invalid", 400), bad_value
    assert refused({"aws:cloudformation": "x"}) == (
        "InvalidTag", "Your TagKey cannot be prefixed with aws:", 400)
    assert tags_of(s3, bucket, "limits") == ten  # nothing refused changed a thing


def test_duplicate_keys_and_malformed_documents(s3_cloudland: Running,
                                                access_key: tuple[str, str], s3: Any,
                                                bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="xml", Body=b"x", Tagging="kept=yes")
    url = f"{endpoint(s3_cloudland)}/{bucket}/xml?tagging"

    def put(body: bytes) -> tuple[int, str, bytes]:
        status, _, reply = fetch(url, "PUT", body, sign(access_key, "PUT", url, body))
        return status, error_code(reply) if reply else "", reply

    tag = b"<Tag><Key>a</Key><Value>1</Value></Tag>"
    status, code, reply = put(b"<Tagging><TagSet>" + tag + tag + b"</TagSet></Tagging>")
    assert (status, code) == (400, "InvalidTag")
    assert b"Cannot provide multiple Tags with the same key" in reply
    status, code, reply = put(b"<Tagging><TagSet><Tag><Key></Key><Value>1</Value></Tag>"
                              b"</TagSet></Tagging>")  # boto3 checks this one itself
    assert (status, code) == (400, "InvalidTag")
    assert b"The TagKey you have provided is invalid" in reply
    for body in (b"not xml", b"<Tagging><TagSet>" + tag, b"<Other><TagSet/></Other>",
                 b"<Tagging/>", b"<Tagging><TagSet><Tag><Key>a</Key></Tag></TagSet></Tagging>",
                 b"<Tagging><TagSet><Tag><Value>a</Value></Tag></TagSet></Tagging>",
                 b'<!DOCTYPE x [<!ENTITY e "a">]><Tagging><TagSet/></Tagging>',
                 # Nothing but Tags of one Key and one Value: nothing is ignored.
                 b"<Tagging><TagSet>" + tag + b"</TagSet><TagSet/></Tagging>",
                 b"<Tagging><TagSet><Tag><Key>a</Key><Value>1</Value><Colour>red</Colour>"
                 b"</Tag></TagSet></Tagging>",
                 b"<Tagging><TagSet><Tag><Key>a</Key><Key>b</Key><Value>1</Value></Tag>"
                 b"</TagSet></Tagging>",
                 b"<Tagging><TagSet><Label/></TagSet></Tagging>"):
        assert put(body)[:2] == (400, "MalformedXML"), body
    assert tags_of(s3, bucket, "xml") == {"kept": "yes"}
    namespaced = (b'<Tagging xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><TagSet>'
                  + tag + b"</TagSet></Tagging>")
    assert put(namespaced)[:2] == (200, "")
    assert tags_of(s3, bucket, "xml") == {"a": "1"}


def test_a_bad_tagging_header_is_refused_before_anything_is_written(s3: Any,
                                                                    bucket: str) -> None:
    header = ("InvalidArgument", 400)
    for bad in ("a=1&a=2", "=", "=v", "a=b=c", "TagSet=[{Key=string,Value=string}]",
                "a=%ff"):
        assert fails(s3.put_object, Bucket=bucket, Key="hdr", Body=b"x", Tagging=bad) == \
            header, bad
        assert fails(s3.create_multipart_upload, Bucket=bucket, Key="hdr",
                     Tagging=bad) == header, bad
    assert fails(s3.put_object, Bucket=bucket, Key="hdr", Body=b"x",
                 Tagging="&".join(f"k{i}=v" for i in range(11))) == ("BadRequest", 400)
    assert fails(s3.put_object, Bucket=bucket, Key="hdr", Body=b"x",
                 Tagging=urllib.parse.quote("TagSet=[{Key=string}]", safe="")) == (
        "InvalidTag", 400)
    assert fails(s3.put_object, Bucket=bucket, Key="hdr", Body=b"x",
                 Tagging="k=" + "v" * 257) == ("InvalidTag", 400)
    assert fails(s3.head_object, Bucket=bucket, Key="hdr") == ("404", 404)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_multipart_upload_gives_its_tags_to_the_object(s3: Any, bucket: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="big.bin",
                                           Tagging="kind=video&size=big")["UploadId"]
    bodies = [b"1" * PART, b"tail"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(
        Bucket=bucket, Key="big.bin", UploadId=upload_id, PartNumber=n, Body=b)["ETag"]}
        for n, b in enumerate(bodies, 1)]
    s3.complete_multipart_upload(Bucket=bucket, Key="big.bin", UploadId=upload_id,
                                 MultipartUpload={"Parts": parts})
    assert tags_of(s3, bucket, "big.bin") == {"kind": "video", "size": "big"}
    assert s3.get_object(Bucket=bucket, Key="big.bin", PartNumber=2)["TagCount"] == 2


def test_copy_object_tagging_directive(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"photo", Tagging="a=1&b=2")
    source = {"Bucket": bucket, "Key": "src"}
    s3.copy_object(Bucket=bucket, Key="copied", CopySource=source)
    assert tags_of(s3, bucket, "copied") == {"a": "1", "b": "2"}  # COPY is the default
    s3.copy_object(Bucket=bucket, Key="copied-too", CopySource=source,
                   TaggingDirective="COPY", Tagging="ignored=yes")
    assert tags_of(s3, bucket, "copied-too") == {"a": "1", "b": "2"}
    s3.copy_object(Bucket=bucket, Key="replaced", CopySource=source,
                   TaggingDirective="REPLACE", Tagging="c=3")
    assert tags_of(s3, bucket, "replaced") == {"c": "3"}
    s3.copy_object(Bucket=bucket, Key="cleared", CopySource=source,
                   TaggingDirective="REPLACE")
    assert tags_of(s3, bucket, "cleared") == {}
    assert s3.get_object(Bucket=bucket, Key="cleared")["Body"].read() == b"photo"
    assert fails(s3.copy_object, Bucket=bucket, Key="odd", CopySource=source,
                 TaggingDirective="MERGE") == ("InvalidArgument", 400)
    assert fails(s3.copy_object, Bucket=bucket, Key="odd", CopySource=source,
                 TaggingDirective="REPLACE", Tagging="x=1&x=2") == ("InvalidArgument", 400)
    assert fails(s3.head_object, Bucket=bucket, Key="odd") == ("404", 404)
    assert tags_of(s3, bucket, "src") == {"a": "1", "b": "2"}


def test_a_presigned_put_carries_its_tags_in_the_query(s3_cloudland: Running, s3: Any,
                                                        access_key: tuple[str, str],
                                                        bucket: str) -> None:
    # boto3 keeps Tagging a header when it presigns; other signers move it into the
    # query, where the signature covers it. Signed here with the tags in the query, and
    # sent without the header.
    tags = urllib.parse.quote("from=url&by=query")
    request = AWSRequest(method="PUT",
                         url=f"{endpoint(s3_cloudland)}/{bucket}/presigned?x-amz-tagging={tags}")
    S3SigV4QueryAuth(Credentials(*access_key), "s3", "us-east-1", expires=60).add_auth(request)
    assert "x-amz-tagging=" in request.url
    status, _, _ = fetch(request.url, "PUT", b"body", {})
    assert status == 200
    assert tags_of(s3, bucket, "presigned") == {"from": "url", "by": "query"}


def test_tags_survive_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    running = start_cloudland(home)
    try:
        made = running.cli("keys", "create", "-o", "json").json()
        key = (made["accessKeyId"], made["secretAccessKey"])
        s3 = client(running, key)
        s3.create_bucket(Bucket="kept")
        s3.put_object(Bucket="kept", Key="put", Body=b"x", Tagging="how=put")
        s3.put_object(Bucket="kept", Key="retagged", Body=b"y")
        s3.put_object_tagging(Bucket="kept", Key="retagged", Tagging=tag_set({"how": "api"}))
        upload_id = s3.create_multipart_upload(Bucket="kept", Key="pending",
                                               Tagging="how=multipart")["UploadId"]
    finally:
        running.stop()
    again = start_cloudland(home)
    try:
        s3 = client(again, key)
        assert tags_of(s3, "kept", "put") == {"how": "put"}
        assert tags_of(s3, "kept", "retagged") == {"how": "api"}
        etag = s3.upload_part(Bucket="kept", Key="pending", UploadId=upload_id,
                              PartNumber=1, Body=b"z")["ETag"]
        s3.complete_multipart_upload(Bucket="kept", Key="pending", UploadId=upload_id,
                                     MultipartUpload={"Parts": [{"PartNumber": 1,
                                                                 "ETag": etag}]})
        assert tags_of(s3, "kept", "pending") == {"how": "multipart"}
    finally:
        again.stop()
