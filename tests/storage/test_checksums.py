"""Checksums as S3 keeps and reports them, through boto3 against a real CloudLand:
listings name each object's algorithm and type, PUT/HEAD/GET say the type, and a
multipart upload's object gets a COMPOSITE or FULL_OBJECT checksum made of its parts'
(checked against what CompleteMultipartUpload says). Expected values are computed here
independently (zlib, the CRC catalogue's check values, a table-driven CRC-64/NVME)."""

from __future__ import annotations

import base64
import hashlib
import zlib
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.storage.test_s3_api import fails

MIB = 1 << 20
PART = 5 * MIB


def b64(value: int, size: int) -> str:
    return base64.b64encode(value.to_bytes(size, "big")).decode()


def crc32(data: bytes) -> str:
    return b64(zlib.crc32(data), 4)


def _crc64nvme_table() -> list[int]:
    poly = 0x9A6C9329AC4BC9B5  # CRC-64/NVME, reflected
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc64nvme_table()


def crc64nvme(data: bytes) -> str:
    """A plain table-driven CRC-64/NVME (init and xorout all ones, reflected)."""
    crc = 0xFFFFFFFFFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return b64(crc ^ 0xFFFFFFFFFFFFFFFF, 8)


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket="sums")
    return "sums"


def composite_upload(s3: Any, bucket: str, key: str, bodies: list[bytes]) -> dict[str, Any]:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key,
                                           ChecksumAlgorithm="CRC32")["UploadId"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(
        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=body,
        ChecksumAlgorithm="CRC32")["ETag"], "ChecksumCRC32": crc32(body)}
        for n, body in enumerate(bodies, 1)]
    done: dict[str, Any] = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    return done


def test_listings_name_each_objects_checksum(s3: Any, plain: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="listed/crc32", Body=b"a")  # boto3's default: CRC32
    s3.put_object(Bucket=bucket, Key="listed/sha256", Body=b"b", ChecksumAlgorithm="SHA256")
    plain.put_object(Bucket=bucket, Key="listed/none", Body=b"c")
    composite_upload(s3, bucket, "listed/parts", [b"p" * PART, b"tail"])
    expected = {"listed/crc32": (["CRC32"], "FULL_OBJECT"),
                "listed/none": (None, None),
                "listed/parts": (["CRC32"], "COMPOSITE"),
                "listed/sha256": (["SHA256"], "FULL_OBJECT")}
    v2 = s3.list_objects_v2(Bucket=bucket, Prefix="listed/")["Contents"]
    v1 = s3.list_objects(Bucket=bucket, Prefix="listed/")["Contents"]
    versions = s3.list_object_versions(Bucket=bucket, Prefix="listed/")["Versions"]
    for entries in (v2, v1, versions):
        assert {o["Key"]: (o.get("ChecksumAlgorithm"), o.get("ChecksumType"))
                for o in entries} == expected


def test_put_head_and_get_say_the_checksum_type(s3: Any, plain: Any, bucket: str) -> None:
    body = b"wait times " * 100
    put = s3.put_object(Bucket=bucket, Key="typed", Body=body, ChecksumAlgorithm="CRC32")
    assert (put["ChecksumCRC32"], put["ChecksumType"]) == (crc32(body), "FULL_OBJECT")
    head = s3.head_object(Bucket=bucket, Key="typed", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC32"], head["ChecksumType"]) == (crc32(body), "FULL_OBJECT")
    got = s3.get_object(Bucket=bucket, Key="typed", ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert (got["ChecksumCRC32"], got["ChecksumType"]) == (crc32(body), "FULL_OBJECT")
    # Not asked for, or a range (which the whole object's checksum does not describe).
    assert "ChecksumType" not in plain.head_object(Bucket=bucket, Key="typed")
    ranged = s3.get_object(Bucket=bucket, Key="typed", Range="bytes=0-9",
                           ChecksumMode="ENABLED")
    assert ranged["Body"].read() == body[:10]
    assert "ChecksumType" not in ranged and "ChecksumCRC32" not in ranged


def test_composite_multipart_checksum(s3: Any, bucket: str) -> None:
    bodies = [b"1" * PART, b"2" * 1000]
    created = s3.create_multipart_upload(Bucket=bucket, Key="composite",
                                         ChecksumAlgorithm="CRC32")
    assert (created["ChecksumAlgorithm"], created["ChecksumType"]) == ("CRC32", "COMPOSITE")
    upload_id = created["UploadId"]
    listed = s3.list_multipart_uploads(Bucket=bucket, Prefix="composite")["Uploads"]
    assert (listed[0]["ChecksumAlgorithm"], listed[0]["ChecksumType"]) == ("CRC32",
                                                                           "COMPOSITE")
    etags = []
    for n, body in enumerate(bodies, 1):
        sent = s3.upload_part(Bucket=bucket, Key="composite", UploadId=upload_id,
                              PartNumber=n, Body=body, ChecksumAlgorithm="CRC32")
        assert sent["ChecksumCRC32"] == crc32(body)
        etags.append(sent["ETag"])
    parts = s3.list_parts(Bucket=bucket, Key="composite", UploadId=upload_id)
    assert (parts["ChecksumAlgorithm"], parts["ChecksumType"]) == ("CRC32", "COMPOSITE")
    assert [p["ChecksumCRC32"] for p in parts["Parts"]] == [crc32(b) for b in bodies]

    def complete(part_sums: list[str], **kwargs: Any) -> Any:
        return s3.complete_multipart_upload(
            Bucket=bucket, Key="composite", UploadId=upload_id, **kwargs,
            MultipartUpload={"Parts": [
                {"PartNumber": n, "ETag": e, "ChecksumCRC32": c}
                for n, (e, c) in enumerate(zip(etags, part_sums, strict=True), 1)]})

    right = [crc32(b) for b in bodies]
    assert fails(complete, part_sums=[right[0], crc32(b"other")]) == ("InvalidPart", 400)
    assert fails(complete, part_sums=right, ChecksumType="FULL_OBJECT") == (
        "InvalidRequest", 400)
    assert fails(complete, part_sums=right, ChecksumCRC32=crc32(b"".join(bodies))) == (
        "BadDigest", 400)
    expected = crc32(b"".join(base64.b64decode(c) for c in right)) + "-2"
    done = complete(right, ChecksumCRC32=expected)
    assert (done["ChecksumCRC32"], done["ChecksumType"]) == (expected, "COMPOSITE")
    head = s3.head_object(Bucket=bucket, Key="composite", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC32"], head["ChecksumType"]) == (expected, "COMPOSITE")


def test_full_object_multipart_checksum(s3: Any, bucket: str, tmp_path: Path) -> None:
    """s3transfer uploads with a whole-file checksum given as FULL_OBJECT: the parts'
    CRCs combine into the CRC of the whole body, which CompleteMultipartUpload checks."""
    body = bytes(range(256)) * (12 * MIB // 256) + b"end"
    source = tmp_path / "whole.bin"
    source.write_bytes(body)
    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
    s3.upload_file(str(source), bucket, "whole", Config=config,
                   ExtraArgs={"ChecksumCRC32": crc32(body)})
    head = s3.head_object(Bucket=bucket, Key="whole", ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-3"')
    assert (head["ChecksumCRC32"], head["ChecksumType"]) == (crc32(body), "FULL_OBJECT")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="whole")["Contents"][0]
    assert (listed["ChecksumAlgorithm"], listed["ChecksumType"]) == (["CRC32"], "FULL_OBJECT")
    with pytest.raises(Exception, match="BadDigest"):
        s3.upload_file(str(source), bucket, "whole-wrong", Config=config,
                       ExtraArgs={"ChecksumCRC32": crc32(b"not the body")})
    assert fails(s3.head_object, Bucket=bucket, Key="whole-wrong") == ("404", 404)
    # Only CRCs combine; CRC-64/NVME parts combine only that way.
    assert fails(s3.create_multipart_upload, Bucket=bucket, Key="x", ChecksumAlgorithm="SHA256",
                 ChecksumType="FULL_OBJECT") == ("InvalidRequest", 400)
    assert fails(s3.create_multipart_upload, Bucket=bucket, Key="x",
                 ChecksumAlgorithm="CRC64NVME", ChecksumType="COMPOSITE") == (
        "InvalidRequest", 400)


def test_upload_part_copy_gets_the_uploads_checksum(s3: Any, bucket: str) -> None:
    source = b"0123456789" * 100
    s3.put_object(Bucket=bucket, Key="copy-source", Body=source)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="copied",
                                           ChecksumAlgorithm="CRC32")["UploadId"]
    result = s3.upload_part_copy(Bucket=bucket, Key="copied", UploadId=upload_id, PartNumber=1,
                                 CopySource={"Bucket": bucket, "Key": "copy-source"},
                                 CopySourceRange="bytes=100-199")["CopyPartResult"]
    assert result["ChecksumCRC32"] == crc32(source[100:200])
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="copied", UploadId=upload_id, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": result["ETag"], "ChecksumCRC32": result["ChecksumCRC32"]}]})
    assert done["ChecksumCRC32"] == crc32(base64.b64decode(crc32(source[100:200]))) + "-1"


def test_parts_sent_without_checksums_still_make_the_objects(plain: Any, bucket: str) -> None:
    """The upload's algorithm is computed for every part, whether the client sent it or
    not; a part sent with another algorithm is refused, as S3 does."""
    upload_id = plain.create_multipart_upload(Bucket=bucket, Key="quiet",
                                              ChecksumAlgorithm="CRC64NVME")["UploadId"]
    bodies = [b"q" * PART, b"last part"]
    assert fails(plain.upload_part, Bucket=bucket, Key="quiet", UploadId=upload_id,
                 PartNumber=1, Body=bodies[0], ChecksumCRC32=crc32(bodies[0])) == (
        "InvalidRequest", 400)
    parts = []
    for n, body in enumerate(bodies, 1):
        sent = plain.upload_part(Bucket=bucket, Key="quiet", UploadId=upload_id, PartNumber=n,
                                 Body=body)
        parts.append({"PartNumber": n, "ETag": sent["ETag"]})
    plain.complete_multipart_upload(Bucket=bucket, Key="quiet", UploadId=upload_id,
                                    MultipartUpload={"Parts": parts})
    head = plain.head_object(Bucket=bucket, Key="quiet", ChecksumMode="ENABLED")
    whole = crc64nvme(b"".join(bodies))
    assert (head["ChecksumCRC64NVME"], head["ChecksumType"]) == (whole, "FULL_OBJECT")


def test_crc64nvme_and_crc32c(plain: Any, bucket: str) -> None:
    """S3's default (CRC-64/NVME) and CRC-32C, checked against the CRC catalogue's check
    values (the CRC of "123456789")."""
    check = b"123456789"
    assert crc64nvme(check) == b64(0xAE8B14860A799888, 8)
    put = plain.put_object(Bucket=bucket, Key="nvme", Body=check,
                           ChecksumCRC64NVME=b64(0xAE8B14860A799888, 8))
    assert put["ChecksumType"] == "FULL_OBJECT"
    head = plain.head_object(Bucket=bucket, Key="nvme", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == b64(0xAE8B14860A799888, 8)
    plain.put_object(Bucket=bucket, Key="c", Body=check, ChecksumCRC32C=b64(0xE3069283, 4))
    assert plain.head_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")[
        "ChecksumCRC32C"] == b64(0xE3069283, 4)
    with pytest.raises(ClientError) as err:
        plain.put_object(Bucket=bucket, Key="nvme-wrong", Body=check,
                         ChecksumCRC64NVME=b64(0xAE8B14860A799889, 8))
    assert err.value.response["Error"]["Code"] == "BadDigest"
    listed = plain.list_objects_v2(Bucket=bucket, Prefix="nvme")["Contents"]
    assert [(o["Key"], o["ChecksumAlgorithm"]) for o in listed] == [("nvme", ["CRC64NVME"])]


def test_copy_object_checksums(s3: Any, bucket: str) -> None:
    """A copy keeps its source's checksum and says so; with x-amz-checksum-algorithm it
    gets that one instead, computed from the bytes (as S3 does)."""
    body = b"copy me " * 100
    s3.put_object(Bucket=bucket, Key="copy-src", Body=body, ChecksumAlgorithm="CRC32")
    source = {"Bucket": bucket, "Key": "copy-src"}
    same = s3.copy_object(Bucket=bucket, Key="copy-same", CopySource=source)
    assert (same["CopyObjectResult"]["ChecksumCRC32"],
            same["CopyObjectResult"]["ChecksumType"]) == (crc32(body), "FULL_OBJECT")
    other = s3.copy_object(Bucket=bucket, Key="copy-sha", CopySource=source,
                           ChecksumAlgorithm="SHA256")["CopyObjectResult"]
    sha = base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert other["ChecksumSHA256"] == sha and "ChecksumCRC32" not in other
    head = s3.head_object(Bucket=bucket, Key="copy-sha", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha and "ChecksumCRC32" not in head
    assert fails(s3.copy_object, Bucket=bucket, Key="copy-bad", CopySource=source,
                 ChecksumAlgorithm="MD4") == ("InvalidRequest", 400)


def test_a_part_says_its_own_checksum(s3: Any, plain: Any, bucket: str) -> None:
    """GET or HEAD ?partNumber with checksum mode: a COMPOSITE object's part carries its
    own checksum (boto3 checks the part's bytes against it), a FULL_OBJECT one's none
    (the object's does not describe the part), as S3 answers them."""
    bodies = [b"x" * PART, b"last"]
    composite_upload(s3, bucket, "by-part", bodies)
    for n, body in enumerate(bodies, 1):
        head = s3.head_object(Bucket=bucket, Key="by-part", PartNumber=n, ChecksumMode="ENABLED")
        assert (head["ChecksumCRC32"], head["ChecksumType"], head["PartsCount"],
                head["ContentLength"]) == (crc32(body), "COMPOSITE", 2, len(body))
        got = s3.get_object(Bucket=bucket, Key="by-part", PartNumber=n, ChecksumMode="ENABLED")
        assert got["Body"].read() == body
        assert (got["ChecksumCRC32"], got["ChecksumType"]) == (crc32(body), "COMPOSITE")
    assert "ChecksumCRC32" not in plain.head_object(Bucket=bucket, Key="by-part", PartNumber=1)
    upload_id = plain.create_multipart_upload(Bucket=bucket, Key="whole-parts",
                                              ChecksumAlgorithm="CRC32",
                                              ChecksumType="FULL_OBJECT")["UploadId"]
    etags = [plain.upload_part(Bucket=bucket, Key="whole-parts", UploadId=upload_id,
                               PartNumber=n, Body=body)["ETag"] for n, body in enumerate(bodies, 1)]
    plain.complete_multipart_upload(Bucket=bucket, Key="whole-parts", UploadId=upload_id,
                                    MultipartUpload={"Parts": [
                                        {"PartNumber": n, "ETag": e} for n, e in
                                        enumerate(etags, 1)]})
    part = s3.head_object(Bucket=bucket, Key="whole-parts", PartNumber=2, ChecksumMode="ENABLED")
    assert part["PartsCount"] == 2 and "ChecksumCRC32" not in part and "ChecksumType" not in part


def test_a_range_that_is_the_whole_object_keeps_its_checksum(s3: Any, bucket: str) -> None:
    """A single PUT's part 1, or a Range of every byte, is the object: its checksum
    holds (and no x-amz-mp-parts-count: no multipart upload made it)."""
    body = b"single " * 10
    s3.put_object(Bucket=bucket, Key="single", Body=body, ChecksumAlgorithm="CRC32")
    one = s3.get_object(Bucket=bucket, Key="single", PartNumber=1, ChecksumMode="ENABLED")
    assert one["Body"].read() == body and "PartsCount" not in one
    assert (one["ChecksumCRC32"], one["ChecksumType"]) == (crc32(body), "FULL_OBJECT")
    every = s3.get_object(Bucket=bucket, Key="single", Range=f"bytes=0-{len(body) - 1}",
                          ChecksumMode="ENABLED")
    assert every["Body"].read() == body and every["ChecksumCRC32"] == crc32(body)


def test_complete_of_a_composite_upload_names_each_parts_checksum(s3: Any, bucket: str) -> None:
    """S3 refuses a CompleteMultipartUpload of a COMPOSITE upload that leaves out a part's
    checksum (InvalidRequest), or gives another algorithm's (BadDigest); the upload stays."""
    bodies = [b"s" * PART, b"end"]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="named",
                                           ChecksumAlgorithm="SHA256")["UploadId"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(
        Bucket=bucket, Key="named", UploadId=upload_id, PartNumber=n, Body=body,
        ChecksumAlgorithm="SHA256")["ETag"],
        "ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode()}
        for n, body in enumerate(bodies, 1)]

    def complete(*listed: dict[str, Any]) -> Any:
        return s3.complete_multipart_upload(Bucket=bucket, Key="named", UploadId=upload_id,
                                            MultipartUpload={"Parts": list(listed)})

    missing = {"PartNumber": 2, "ETag": parts[1]["ETag"]}
    with pytest.raises(ClientError) as err:
        complete(parts[0], missing)
    assert err.value.response["Error"] == {
        "Code": "InvalidRequest", "Message": "The upload was created using a sha256 checksum. "
        "The complete request must include the checksum for each part. It was missing for "
        "part 2 in the request.", "Resource": "/sums/named"}
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as err:
        complete(parts[0], {**missing, "ChecksumCRC32": crc32(bodies[1])})
    assert (err.value.response["Error"]["Code"], err.value.response["Error"]["Message"]) == (
        "BadDigest", "The crc32 you specified for part 2 did not match what we received.")
    assert complete(*parts)["ChecksumType"] == "COMPOSITE"
