"""GetObjectAttributes through boto3 against a real CloudLand, answered as S3 answers
it: the ETag without quotes, a COMPOSITE checksum without its "-N", ObjectParts only for
an object a multipart upload made, with its parts (paged, each with its checksum) only
when they have checksums of their own (a COMPOSITE upload's), else just their count."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from tests.storage.test_checksums import PART, composite_upload, crc32
from tests.storage.test_s3_api import fails

ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket="attrs")
    return "attrs"


def attributes(s3: Any, bucket: str, key: str, wanted: list[str] = ALL,
               **kwargs: Any) -> dict[str, Any]:
    answer: dict[str, Any] = s3.get_object_attributes(Bucket=bucket, Key=key,
                                                      ObjectAttributes=wanted, **kwargs)
    answer.pop("ResponseMetadata")
    return answer


def test_a_single_put_object(s3: Any, bucket: str) -> None:
    body = b"ride times\n" * 1000
    s3.put_object(Bucket=bucket, Key="board.txt", Body=body, ChecksumAlgorithm="CRC32")
    head = s3.head_object(Bucket=bucket, Key="board.txt")
    assert attributes(s3, bucket, "board.txt") == {
        "LastModified": head["LastModified"], "ETag": hashlib.md5(body).hexdigest(),
        "Checksum": {"ChecksumCRC32": crc32(body), "ChecksumType": "FULL_OBJECT"},
        "StorageClass": "STANDARD", "ObjectSize": len(body)}
    assert attributes(s3, bucket, "board.txt", ["ObjectSize"], VersionId="null") == {
        "LastModified": head["LastModified"], "ObjectSize": len(body)}


def test_a_composite_multipart_object_lists_its_parts(s3: Any, bucket: str) -> None:
    bodies = [b"1" * PART, b"2" * PART, b"tail"]
    done = composite_upload(s3, bucket, "parts.bin", bodies)
    composite = crc32(b"".join(base64.b64decode(crc32(b)) for b in bodies))
    assert done["ChecksumCRC32"] == composite + "-3"
    parts = [{"PartNumber": n, "Size": len(b), "ChecksumCRC32": crc32(b)}
             for n, b in enumerate(bodies, 1)]
    got = attributes(s3, bucket, "parts.bin")
    assert got["ETag"] == done["ETag"].strip('"') and got["ETag"].endswith("-3")
    assert got["Checksum"] == {"ChecksumCRC32": composite, "ChecksumType": "COMPOSITE"}
    assert got["ObjectSize"] == 2 * PART + 4
    assert got["ObjectParts"] == {"TotalPartsCount": 3, "PartNumberMarker": 0,
                                  "NextPartNumberMarker": 3, "MaxParts": 1000,
                                  "IsTruncated": False, "Parts": parts}
    first = attributes(s3, bucket, "parts.bin", ["ObjectParts"], MaxParts=2)["ObjectParts"]
    assert first == {"TotalPartsCount": 3, "PartNumberMarker": 0, "NextPartNumberMarker": 2,
                     "MaxParts": 2, "IsTruncated": True, "Parts": parts[:2]}
    rest = attributes(s3, bucket, "parts.bin", ["ObjectParts"], MaxParts=2,
                      PartNumberMarker=2)["ObjectParts"]
    assert rest == {"TotalPartsCount": 3, "PartNumberMarker": 2, "NextPartNumberMarker": 3,
                    "MaxParts": 2, "IsTruncated": False, "Parts": parts[2:]}


def test_other_multipart_objects_give_only_their_part_count(s3: Any, plain: Any,
                                                            bucket: str) -> None:
    """Without part checksums (no algorithm, or FULL_OBJECT) S3 says how many parts
    there are and nothing more."""
    bodies = [b"a" * PART, b"b"]
    for key, algorithm in (("none", None), ("whole", "CRC32")):
        extra = {"ChecksumAlgorithm": algorithm, "ChecksumType": "FULL_OBJECT"} \
            if algorithm else {}
        upload_id = plain.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
        etags = [plain.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n,
                                   Body=body)["ETag"] for n, body in enumerate(bodies, 1)]
        plain.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": [
                {"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
        assert attributes(plain, bucket, key, ["ObjectParts"])["ObjectParts"] == {
            "TotalPartsCount": 2}
    assert "Checksum" not in attributes(plain, bucket, "none")
    assert attributes(plain, bucket, "whole", ["Checksum"])["Checksum"] == {
        "ChecksumCRC32": crc32(b"".join(bodies)), "ChecksumType": "FULL_OBJECT"}


def test_bad_requests_get_s3s_errors(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="there", Body=b"x")
    call = s3.get_object_attributes
    assert fails(call, Bucket=bucket, Key="there", ObjectAttributes=[]) == (
        "InvalidRequest", 400)
    assert fails(call, Bucket=bucket, Key="there", ObjectAttributes=["ETag", "Etag"]) == (
        "InvalidArgument", 400)
    assert fails(call, Bucket=bucket, Key="missing", ObjectAttributes=["ETag"]) == (
        "NoSuchKey", 404)
    assert fails(call, Bucket="no-such-attrs", Key="k", ObjectAttributes=["ETag"]) == (
        "NoSuchBucket", 404)
    assert fails(call, Bucket=bucket, Key="there", ObjectAttributes=["ETag"],
                 VersionId="3HL4kqtJlcpXroDTDmJ") == ("InvalidArgument", 400)
    for header, value in (("x-amz-max-parts", "many"), ("x-amz-part-number-marker", "-1")):
        def garble(request: Any, header: str = header, value: str = value, **_: Any) -> None:
            request.headers[header] = value  # what boto3 would not send

        s3.meta.events.register("before-sign.s3.GetObjectAttributes", garble)
        try:
            assert fails(call, Bucket=bucket, Key="there", ObjectAttributes=["ObjectParts"]) == (
                "InvalidArgument", 400)
        finally:
            s3.meta.events.unregister("before-sign.s3.GetObjectAttributes", garble)
