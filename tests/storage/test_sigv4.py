"""SigV4 verification against requests signed by botocore, and aws-chunked bodies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from multidict import CIMultiDict

from cloudland.storage.errors import S3Error
from cloudland.storage.sigv4 import (
    EMPTY_SHA256,
    Credentials,
    PayloadVerifier,
    Verified,
    canonical_query,
    canonical_uri,
    signing_key,
    verify,
)

AK = "AKIDEXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
KEYS = {AK: Credentials(AK, SK)}
HOST = "localhost:9000"
T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def lookup(access_key: str) -> Credentials | None:
    return KEYS.get(access_key)


class Wire:
    """A request as the server sees it: raw path, raw query, headers, body."""

    def __init__(self, method: str, url: str, headers: Iterable[tuple[str, str]],
                 body: bytes = b"") -> None:
        parts = urlsplit(url)
        self.method = method
        self.path = parts.path
        self.query = parts.query
        self.headers: CIMultiDict[str] = CIMultiDict(headers)
        self.body = body

    def verify(self, **kw: object) -> Verified | None:
        return verify(self.method, self.path, self.query, self.headers, lookup,
                      **kw)  # type: ignore[arg-type]


def url_for(key: str, query: str = "") -> str:
    url = f"http://{HOST}/bkt/{quote(key, safe='/~')}"
    return url + (f"?{query}" if query else "")


class Signer(S3SigV4Auth):
    """botocore's S3 signer; `mode` stands in for the payload hash (botocore picks
    UNSIGNED-PAYLOAD / STREAMING-* itself only from https and operation context)."""

    def __init__(self, credentials: BotoCredentials, mode: str | None = None) -> None:
        super().__init__(credentials, "s3", "us-east-1")
        self.mode = mode

    def payload(self, request: AWSRequest) -> str:
        return self.mode or str(super().payload(request))


def sign(method: str, key: str, query: str = "", headers: dict[str, str] | None = None,
         body: bytes = b"", *, unsigned: bool = False, secret: str = SK,
         when: datetime | None = None) -> Wire:
    """Sign with botocore's S3SigV4Auth, as boto3 does on the wire."""
    hdrs = dict(headers or {})
    hdrs["X-Amz-Content-SHA256"] = ("UNSIGNED-PAYLOAD" if unsigned
                                    else hashlib.sha256(body).hexdigest())
    request = AWSRequest(method=method, url=url_for(key, query), headers=hdrs, data=body)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when or T0):
        Signer(BotoCredentials(AK, secret),
               "UNSIGNED-PAYLOAD" if unsigned else None).add_auth(request)
    return Wire(method, request.url, [("Host", HOST), *request.headers.items()], body)


def presign(method: str, key: str, query: str = "", expires: int = 60,
            when: datetime | None = None) -> Wire:
    request = AWSRequest(method=method, url=url_for(key, query))
    with mock.patch("botocore.auth.get_current_datetime", return_value=when or T0):
        S3SigV4QueryAuth(BotoCredentials(AK, SK), "s3", "us-east-1",
                         expires=expires).add_auth(request)
    return Wire(method, request.url, [("Host", HOST), *request.headers.items()])


def expect_error(code: str, status: int, fn: Callable[[], object]) -> S3Error:
    with pytest.raises(S3Error) as info:
        fn()
    assert (info.value.code, info.value.status) == (code, status), info.value.message
    return info.value


KEYS_TO_TRY = ["plain.txt", "with space/and more spaces", "ünïcødé/日本語.bin", "a+b=c~d",
               "slashes//in///a/row/", "percent%20literal", "x!*'();:@&$,?#[]", "..",
               "a/../b/./c"]
QUERIES = ["", "uploads", "list-type=2&prefix=a%20b&prefix=a&delimiter=%2F",
           "a=2&a=1&b=&c", "partNumber=1&uploadId=abc~def_ghi.jkl-mno",
           "prefix=%C3%BC%2B"]


# --------------------------------------------------------------------------- header auth


@pytest.mark.parametrize("key", KEYS_TO_TRY)
@pytest.mark.parametrize("query", QUERIES)
def test_header_auth_hex_payload_verifies(key: str, query: str) -> None:
    body = b"some body bytes"
    wire = sign("PUT", key, query, {"Content-Type": "text/plain", "x-amz-meta-a": "  x   y "},
                body)
    verified = wire.verify(now=T0)
    assert verified is not None
    assert verified.access_key == AK
    assert verified.payload == hashlib.sha256(body).hexdigest()
    assert (verified.region, verified.date, verified.timestamp) == (
        "us-east-1", "20261125", "20261125T120000Z")
    assert verified.scope == "20261125/us-east-1/s3/aws4_request"
    assert verified.seed_signature == wire.headers["Authorization"].rsplit("=", 1)[1]
    checker = PayloadVerifier(verified, wire.headers)
    assert checker.feed(body) == body
    checker.finish()


@pytest.mark.parametrize("key", KEYS_TO_TRY[:4])
def test_header_auth_unsigned_payload_verifies(key: str) -> None:
    wire = sign("GET", key, "versionId=null", unsigned=True)
    verified = wire.verify(now=T0)
    assert verified is not None and verified.payload == "UNSIGNED-PAYLOAD"
    checker = PayloadVerifier(verified, wire.headers)
    checker.feed(b"anything")
    checker.finish()


def test_tampering_fails() -> None:
    wire = sign("PUT", "a b/c", "x=1", {"Content-Type": "text/plain"}, b"body")
    assert wire.verify(now=T0) is not None

    tampered = sign("PUT", "a b/c", "x=1", {"Content-Type": "text/plain"}, b"body")
    tampered.headers["Content-Type"] = "text/html"
    error = expect_error("SignatureDoesNotMatch", 403, lambda: tampered.verify(now=T0))
    assert "text/html" in error.extra["CanonicalRequest"]
    assert error.extra["StringToSign"].startswith("AWS4-HMAC-SHA256\n20261125T120000Z\n")
    assert error.extra["AWSAccessKeyId"] == AK

    tampered = sign("PUT", "a b/c", "x=1", {"Content-Type": "text/plain"}, b"body")
    tampered.path = tampered.path.replace("c", "d")
    expect_error("SignatureDoesNotMatch", 403, lambda: tampered.verify(now=T0))

    tampered = sign("PUT", "a b/c", "x=1", {"Content-Type": "text/plain"}, b"body")
    tampered.query = "x=2"
    expect_error("SignatureDoesNotMatch", 403, lambda: tampered.verify(now=T0))

    tampered = sign("PUT", "a b/c", "x=1", {"Content-Type": "text/plain"}, b"body")
    tampered.method = "DELETE"
    expect_error("SignatureDoesNotMatch", 403, lambda: tampered.verify(now=T0))

    wrong_secret = sign("PUT", "a b/c", "x=1", body=b"body", secret="not-the-secret")
    expect_error("SignatureDoesNotMatch", 403, lambda: wrong_secret.verify(now=T0))


def test_path_is_not_normalised() -> None:
    wire = sign("GET", "a/../b", unsigned=True)
    assert wire.path == "/bkt/a/../b"
    assert wire.verify(now=T0) is not None
    moved = sign("GET", "a/../b", unsigned=True)
    moved.path = "/bkt/b"
    expect_error("SignatureDoesNotMatch", 403, lambda: moved.verify(now=T0))


def test_unsigned_amz_header_added_is_refused() -> None:
    wire = sign("PUT", "k", body=b"x")
    wire.headers["x-amz-acl"] = "public-read"
    error = expect_error("AccessDenied", 403, lambda: wire.verify(now=T0))
    assert error.extra["HeadersNotSigned"] == "x-amz-acl"


def test_unknown_key_skew_anonymous_and_sigv2() -> None:
    wire = sign("GET", "k", unsigned=True)
    wire.headers["Authorization"] = wire.headers["Authorization"].replace(AK, "AKIDUNKNOWN")
    error = expect_error("InvalidAccessKeyId", 403, lambda: wire.verify(now=T0))
    assert error.extra["AWSAccessKeyId"] == "AKIDUNKNOWN"

    wire = sign("GET", "k", unsigned=True)
    expect_error("RequestTimeTooSkewed", 403,
                 lambda: wire.verify(now=T0 + timedelta(minutes=16)))
    expect_error("RequestTimeTooSkewed", 403,
                 lambda: wire.verify(now=T0 - timedelta(minutes=16)))
    assert wire.verify(now=T0 + timedelta(minutes=14)) is not None

    assert verify("GET", "/bkt/k", "", CIMultiDict({"Host": HOST}), lookup) is None
    assert verify("GET", "/bkt/k", "list-type=2", {}, lookup) is None

    sigv2 = CIMultiDict({"Host": HOST, "Authorization": "AWS AKIDEXAMPLE:c2lnbmF0dXJl"})
    error = expect_error("InvalidRequest", 400, lambda: verify("GET", "/b", "", sigv2, lookup))
    assert "AWS4-HMAC-SHA256" in error.message
    # SigV2 query auth is verified (tests/storage/test_sigv2_presign.py): this one expired
    expect_error("AccessDenied", 403, lambda: verify(
        "GET", "/b", "AWSAccessKeyId=AKIDEXAMPLE&Expires=1&Signature=abc", {}, lookup))


def test_malformed_authorization_headers() -> None:
    def with_auth(value: str, **extra: str) -> Callable[[], object]:
        wire = sign("GET", "k", unsigned=True)
        wire.headers["Authorization"] = value
        for name, header in extra.items():
            wire.headers[name] = header
        return lambda: wire.verify(now=T0)

    good = sign("GET", "k", unsigned=True).headers["Authorization"]
    expect_error("AuthorizationHeaderMalformed", 400,
                 with_auth(good.replace("Credential=AKIDEXAMPLE/", "Credential=")))
    expect_error("AuthorizationHeaderMalformed", 400,
                 with_auth(good.replace("/s3/", "/ec2/")))
    expect_error("AuthorizationHeaderMalformed", 400,
                 with_auth(good.replace("/20261125/", "/20261124/")))
    expect_error("AuthorizationHeaderMalformed", 400,
                 with_auth(good.split(", Signature=")[0]))
    expect_error("AuthorizationHeaderMalformed", 400,
                 with_auth(good.replace("SignedHeaders=host;", "SignedHeaders=")))
    expect_error("InvalidArgument", 400,
                 with_auth(good.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512")))
    error = expect_error("AuthorizationHeaderMalformed", 400, lambda: sign(
        "GET", "k", unsigned=True).verify(now=T0, region="eu-west-1"))
    assert "us-east-1" in error.message
    wire = sign("GET", "k", unsigned=True)
    del wire.headers["X-Amz-Content-SHA256"]
    expect_error("InvalidRequest", 400, lambda: wire.verify(now=T0))
    wire = sign("GET", "k", unsigned=True)
    wire.headers["X-Amz-Content-SHA256"] = "nonsense"
    expect_error("InvalidArgument", 400, lambda: wire.verify(now=T0))
    both = presign("GET", "k")
    both.headers["Authorization"] = good
    expect_error("InvalidArgument", 400, lambda: both.verify(now=T0))


def test_content_sha256_mismatch_and_md5() -> None:
    body = b"the real body"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    wire = sign("PUT", "k", headers={"Content-MD5": md5}, body=body)
    verified = wire.verify(now=T0)
    checker = PayloadVerifier(verified, wire.headers)
    checker.feed(b"the fake body")
    error = expect_error("XAmzContentSHA256Mismatch", 400, checker.finish)
    assert error.extra["ClientComputedContentSHA256"] == hashlib.sha256(body).hexdigest()

    wire = sign("PUT", "k", headers={"Content-MD5": md5}, body=body, unsigned=True)
    checker = PayloadVerifier(wire.verify(now=T0), wire.headers)
    checker.feed(b"the fake body")
    expect_error("BadDigest", 400, checker.finish)
    checker = PayloadVerifier(wire.verify(now=T0), wire.headers)
    checker.feed(body)
    checker.finish()

    wire = sign("PUT", "k", headers={"Content-MD5": "bm90IG1kNQ=="}, unsigned=True)
    expect_error("InvalidDigest", 400,
                 lambda: PayloadVerifier(wire.verify(now=T0), wire.headers))


@pytest.mark.parametrize("algorithm", ["crc32", "sha1", "sha256"])
def test_checksum_headers(algorithm: str) -> None:
    body = b"checksummed" * 1000
    digest = {"crc32": zlib.crc32(body).to_bytes(4, "big"),
              "sha1": hashlib.sha1(body).digest(),
              "sha256": hashlib.sha256(body).digest()}[algorithm]
    value = base64.b64encode(digest).decode()
    wire = sign("PUT", "k", headers={f"x-amz-checksum-{algorithm}": value}, body=body)
    checker = PayloadVerifier(wire.verify(now=T0), wire.headers)
    checker.feed(body)
    checker.finish()
    assert checker.checksums == {algorithm: value}

    wire = sign("PUT", "k", headers={f"x-amz-checksum-{algorithm}": value}, unsigned=True)
    checker = PayloadVerifier(wire.verify(now=T0), wire.headers)
    checker.feed(body[:-1] + b"!")
    error = expect_error("BadDigest", 400, checker.finish)
    assert error.message == (f"The x-amz-checksum-{algorithm} you specified did not match "
                             "the calculated checksum.")


def test_bad_checksum_header_values() -> None:
    wire = sign("PUT", "k", headers={"x-amz-checksum-crc32": "not base64!"}, unsigned=True)
    expect_error("InvalidRequest", 400,
                 lambda: PayloadVerifier(wire.verify(now=T0), wire.headers))
    wire = sign("PUT", "k", headers={"x-amz-checksum-crc32": "AAAAAA==",
                                     "x-amz-checksum-sha1": "AAAAAA=="}, unsigned=True)
    expect_error("InvalidRequest", 400,
                 lambda: PayloadVerifier(wire.verify(now=T0), wire.headers))


# --------------------------------------------------------------------------- presigned


@pytest.mark.parametrize("key", KEYS_TO_TRY)
@pytest.mark.parametrize("query", ["", "response-content-type=text%2Fplain&a=&a=1",
                                   "versionId=null"])
def test_presigned_get_verifies(key: str, query: str) -> None:
    wire = presign("GET", key, query, expires=300)
    assert "X-Amz-Signature=" in wire.query
    verified = wire.verify(now=T0 + timedelta(seconds=299))
    assert verified is not None and verified.presigned
    assert verified.payload == "UNSIGNED-PAYLOAD"


def test_presigned_failures() -> None:
    wire = presign("GET", "k", expires=60)
    error = expect_error("AccessDenied", 403,
                         lambda: wire.verify(now=T0 + timedelta(seconds=61)))
    assert error.message == "Request has expired"
    expect_error("AccessDenied", 403, lambda: wire.verify(now=T0 - timedelta(hours=1)))

    tampered = presign("GET", "k", "versionId=1")
    tampered.query = tampered.query.replace("versionId=1", "versionId=2")
    expect_error("SignatureDoesNotMatch", 403, lambda: tampered.verify(now=T0))

    tampered = presign("GET", "k")
    tampered.query = tampered.query.replace("X-Amz-Expires=60", "X-Amz-Expires=600")
    expect_error("SignatureDoesNotMatch", 403, lambda: tampered.verify(now=T0))

    tampered = presign("GET", "k")
    tampered.method = "PUT"
    expect_error("SignatureDoesNotMatch", 403, lambda: tampered.verify(now=T0))

    tampered = presign("GET", "k")
    tampered.path = "/bkt/other"
    expect_error("SignatureDoesNotMatch", 403, lambda: tampered.verify(now=T0))

    week = presign("GET", "k", expires=604800)
    assert week.verify(now=T0 + timedelta(days=6)) is not None
    too_long = presign("GET", "k", expires=604801)
    expect_error("AuthorizationQueryParametersError", 400, lambda: too_long.verify(now=T0))

    unknown = presign("GET", "k")
    unknown.query = unknown.query.replace(AK, "AKIDUNKNOWN")
    expect_error("InvalidAccessKeyId", 403, lambda: unknown.verify(now=T0))

    partial = presign("GET", "k")
    partial.query = "&".join(p for p in partial.query.split("&")
                             if not p.startswith("X-Amz-Date="))
    expect_error("AuthorizationQueryParametersError", 400, lambda: partial.verify(now=T0))

    extra_header = presign("GET", "k")
    extra_header.headers["x-amz-copy-source"] = "other/key"
    expect_error("AccessDenied", 403, lambda: extra_header.verify(now=T0))


def test_presigned_uses_real_clock_by_default() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    assert presign("GET", "k", when=now).verify() is not None


# --------------------------------------------------------------------------- canonical forms


def test_canonical_forms() -> None:
    assert canonical_uri("/bkt/a b/%C3%BC+~=") == "/bkt/a%20b/%C3%BC%2B~%3D"
    assert canonical_uri("/bkt/a%20b") == "/bkt/a%20b"
    assert canonical_uri("") == "/"
    assert canonical_query("b=2&a=2&a=1&c&d=") == "a=1&a=2&b=2&c=&d="
    assert canonical_query("p=a%2fb~&x=%7e") == "p=a%2Fb~&x=~"
    assert canonical_query("X-Amz-Signature=abc&a=1", exclude="X-Amz-Signature") == "a=1"
    assert canonical_query("a=b+c") == "a=b%2Bc"
    assert canonical_query("a=b+c", plus_is_space=True) == "a=b%20c"


# --------------------------------------------------------------------------- aws-chunked


def _hmac_hex(key: bytes, msg: str) -> str:
    return hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()


def chunked_body(verified: Verified, chunks: list[bytes],
                 trailers: dict[str, str] | None = None) -> bytes:
    """Frame `chunks` as a signed aws-chunked body, following the S3 docs."""
    out = bytearray()
    previous = verified.seed_signature
    for chunk in [*chunks, b""]:
        string_to_sign = "\n".join([
            "AWS4-HMAC-SHA256-PAYLOAD", verified.timestamp, verified.scope, previous,
            EMPTY_SHA256, hashlib.sha256(chunk).hexdigest()])
        previous = _hmac_hex(verified.signing_key, string_to_sign)
        out += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk
        if chunk or trailers is None:
            out += b"\r\n"
    if trailers is not None:
        canonical = "".join(f"{k}:{v}\n" for k, v in trailers.items())
        string_to_sign = "\n".join([
            "AWS4-HMAC-SHA256-TRAILER", verified.timestamp, verified.scope, previous,
            hashlib.sha256(canonical.encode()).hexdigest()])
        for name, value in trailers.items():
            out += f"{name}:{value}\r\n".encode()
        signature = _hmac_hex(verified.signing_key, string_to_sign)
        out += f"x-amz-trailer-signature:{signature}\r\n\r\n".encode()
    return bytes(out)


def feed_all(checker: PayloadVerifier, body: bytes, step: int | None) -> bytes:
    if step is None:
        return checker.feed(body)
    return b"".join(checker.feed(body[i:i + step]) for i in range(0, len(body), step))


def streaming_wire(mode: str, payload: bytes, extra: dict[str, str] | None = None) -> Wire:
    headers = {"Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(payload)), **(extra or {})}
    request = AWSRequest(method="PUT", url=url_for("stream me"), headers=headers)
    with mock.patch("botocore.auth.get_current_datetime", return_value=T0):
        Signer(BotoCredentials(AK, SK), mode).add_auth(request)
    return Wire("PUT", request.url, [("Host", HOST), *request.headers.items()])


PAYLOAD = bytes(range(256)) * 40 + b"tail"
CHUNKS = [PAYLOAD[:8192], PAYLOAD[8192:10000], PAYLOAD[10000:]]


@pytest.mark.parametrize("step", [1, 7, None])
def test_signed_streaming_decodes(step: int | None) -> None:
    wire = streaming_wire("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", PAYLOAD)
    verified = wire.verify(now=T0)
    assert verified is not None and verified.payload == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    body = chunked_body(verified, CHUNKS)
    checker = PayloadVerifier(verified, wire.headers)
    assert feed_all(checker, body, step) == PAYLOAD
    checker.finish()
    assert checker.decoded_length == len(PAYLOAD)


@pytest.mark.parametrize("step", [1, 7, None])
def test_signed_streaming_flipped_byte_fails(step: int | None) -> None:
    wire = streaming_wire("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", PAYLOAD)
    verified = wire.verify(now=T0)
    assert verified is not None
    body = bytearray(chunked_body(verified, CHUNKS))
    body[9000] ^= 0x01  # inside the second chunk's data
    checker = PayloadVerifier(verified, wire.headers)
    expect_error("SignatureDoesNotMatch", 403, lambda: feed_all(checker, bytes(body), step))


def test_signed_streaming_chain_and_framing_errors() -> None:
    wire = streaming_wire("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", PAYLOAD)
    verified = wire.verify(now=T0)
    assert verified is not None
    body = chunked_body(verified, CHUNKS)

    # chunks swapped / dropped break the signature chain
    first_end = body.index(b"\r\n", body.index(b"\r\n") + 2 + 8192 - 1)
    dropped = body[first_end + 2:]
    checker = PayloadVerifier(verified, wire.headers)
    expect_error("SignatureDoesNotMatch", 403, lambda: checker.feed(dropped))

    # truncated: no final chunk
    checker = PayloadVerifier(verified, wire.headers)
    checker.feed(body[:-100])
    expect_error("IncompleteBody", 400, checker.finish)

    # a header line that never ends
    checker = PayloadVerifier(verified, wire.headers)
    expect_error("InvalidRequest", 400, lambda: [checker.feed(b"1" * 1024) for _ in range(8)])

    # not hex
    checker = PayloadVerifier(verified, wire.headers)
    expect_error("InvalidRequest", 400, lambda: checker.feed(b"zz;chunk-signature=0\r\n"))

    # declared decoded length is wrong
    short = streaming_wire("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", PAYLOAD[:-1])
    verified_short = short.verify(now=T0)
    assert verified_short is not None
    checker = PayloadVerifier(verified_short, short.headers)
    expect_error("IncompleteBody", 400,
                 lambda: checker.feed(chunked_body(verified_short, CHUNKS)))

    # data after the end
    checker = PayloadVerifier(verified, wire.headers)
    expect_error("InvalidRequest", 400, lambda: checker.feed(body + b"junk"))


@pytest.mark.parametrize("step", [1, 7, None])
def test_signed_streaming_with_signed_trailer(step: int | None) -> None:
    crc = base64.b64encode(zlib.crc32(PAYLOAD).to_bytes(4, "big")).decode()
    wire = streaming_wire("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", PAYLOAD,
                          {"x-amz-trailer": "x-amz-checksum-crc32"})
    verified = wire.verify(now=T0)
    assert verified is not None
    body = chunked_body(verified, CHUNKS, {"x-amz-checksum-crc32": crc})
    checker = PayloadVerifier(verified, wire.headers)
    assert feed_all(checker, body, step) == PAYLOAD
    checker.finish()
    assert checker.checksums == {"crc32": crc}

    forged = body.replace(crc.encode(), b"AAAAAA==")
    checker = PayloadVerifier(verified, wire.headers)
    expect_error("SignatureDoesNotMatch", 403, lambda: feed_all(checker, forged, step))


def unsigned_trailer_body(chunks: list[bytes], trailer: str) -> bytes:
    out = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks)
    return out + f"0\r\n{trailer}\r\n\r\n".encode()


@pytest.mark.parametrize("step", [1, 7, None])
def test_unsigned_trailer_crc32(step: int | None) -> None:
    crc = base64.b64encode(zlib.crc32(PAYLOAD).to_bytes(4, "big")).decode()
    wire = streaming_wire("STREAMING-UNSIGNED-PAYLOAD-TRAILER", PAYLOAD,
                          {"x-amz-trailer": "x-amz-checksum-crc32"})
    verified = wire.verify(now=T0)
    assert verified is not None
    body = unsigned_trailer_body(CHUNKS, f"x-amz-checksum-crc32:{crc}")
    checker = PayloadVerifier(verified, wire.headers)
    assert feed_all(checker, body, step) == PAYLOAD
    checker.finish()
    assert checker.checksums == {"crc32": crc}

    corrupt = bytearray(body)
    corrupt[50] ^= 0xFF
    checker = PayloadVerifier(verified, wire.headers)
    feed_all(checker, bytes(corrupt), step)
    expect_error("BadDigest", 400, checker.finish)

    missing = unsigned_trailer_body(CHUNKS, "")[:-2]  # no trailer line at all
    checker = PayloadVerifier(verified, wire.headers)
    feed_all(checker, missing, step)
    expect_error("InvalidRequest", 400, checker.finish)


# Captured from boto3/botocore 1.43.11 (put_object, upload_part) against a local TLS
# server: over https botocore sends STREAMING-UNSIGNED-PAYLOAD-TRAILER with an aws-chunked
# body inside HTTP chunked transfer encoding (the body here is after HTTP de-chunking) and
# a CRC32 trailer. Over plain http it sends a hex payload hash and x-amz-checksum-crc32 as
# a header instead (PUT_HEX).
CAPTURE_NOW = datetime(2026, 11, 25, 15, 24, 0, tzinfo=UTC)
PUT_TRAILER = {
    "method": "PUT", "path": "/bkt/a%20b/%C3%BC%2B~%3D.txt", "query": "",
    "headers": [
        ("Host", "127.0.0.1:53471"), ("Expect", "100-continue"),
        ("Transfer-Encoding", "chunked"), ("Content-Encoding", "aws-chunked"),
        ("X-Amz-Trailer", "x-amz-checksum-crc32"), ("X-Amz-Decoded-Content-Length", "11"),
        ("x-amz-sdk-checksum-algorithm", "CRC32"), ("X-Amz-Date", "20261125T152400Z"),
        ("X-Amz-Content-SHA256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/s3/"
         "aws4_request, SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date;"
         "x-amz-decoded-content-length;x-amz-sdk-checksum-algorithm;x-amz-trailer, "
         "Signature=44b8ce3bafd44a102a6e2f68c486294a5371fcbb6b3616978ad38ae67a802c2b")],
    "body": b"b\r\nhello world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n",
    "decoded": b"hello world", "checksums": {"crc32": "DUoRhQ=="},
}
UPLOAD_PART_TRAILER = {
    "method": "PUT", "path": "/bkt/mp", "query": "uploadId=U1&partNumber=1",
    "headers": [
        ("Host", "127.0.0.1:53471"), ("Expect", "100-continue"),
        ("Transfer-Encoding", "chunked"), ("Content-Encoding", "aws-chunked"),
        ("X-Amz-Trailer", "x-amz-checksum-crc32"), ("X-Amz-Decoded-Content-Length", "9"),
        ("x-amz-sdk-checksum-algorithm", "CRC32"), ("X-Amz-Date", "20261125T152400Z"),
        ("X-Amz-Content-SHA256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/s3/"
         "aws4_request, SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date;"
         "x-amz-decoded-content-length;x-amz-sdk-checksum-algorithm;x-amz-trailer, "
         "Signature=7b544a316afe9319c1c9cba2899d3130c3cb77547c75203e11d70cdb073223e0")],
    "body": b"9\r\npart data\r\n0\r\nx-amz-checksum-crc32:rNn68A==\r\n\r\n",
    "decoded": b"part data", "checksums": {"crc32": "rNn68A=="},
}
PUT_HEX = {
    "method": "PUT", "path": "/bkt/a%20b/%C3%BC%2B~%3D.txt", "query": "",
    "headers": [
        ("Host", "127.0.0.1:54767"), ("Expect", "100-continue"),
        ("x-amz-checksum-crc32", "DUoRhQ=="), ("x-amz-sdk-checksum-algorithm", "CRC32"),
        ("X-Amz-Date", "20261125T152312Z"),
        ("X-Amz-Content-SHA256",
         "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"),
        ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/s3/"
         "aws4_request, SignedHeaders=host;x-amz-checksum-crc32;x-amz-content-sha256;"
         "x-amz-date;x-amz-sdk-checksum-algorithm, "
         "Signature=e4103e3fb1a263873cbd7ca69a9b4569423c4afa3d5076bc72c0f8b7a043d5ce"),
        ("Content-Length", "11")],
    "body": b"hello world", "decoded": b"hello world", "checksums": {"crc32": "DUoRhQ=="},
}


@pytest.mark.parametrize("capture", [PUT_TRAILER, UPLOAD_PART_TRAILER, PUT_HEX],
                         ids=["put-trailer", "upload-part-trailer", "put-hex"])
@pytest.mark.parametrize("step", [1, 7, None])
def test_real_boto3_captures(capture: dict[str, object], step: int | None) -> None:
    wire = Wire(str(capture["method"]), "", capture["headers"])  # type: ignore[arg-type]
    wire.path, wire.query = str(capture["path"]), str(capture["query"])
    verified = wire.verify(now=CAPTURE_NOW)
    assert verified is not None and verified.access_key == AK
    checker = PayloadVerifier(verified, wire.headers)
    assert feed_all(checker, capture["body"], step) == capture["decoded"]  # type: ignore[arg-type]
    checker.finish()
    assert checker.checksums == capture["checksums"]

    tampered = Wire(str(capture["method"]), "", capture["headers"])  # type: ignore[arg-type]
    tampered.path, tampered.query = str(capture["path"]) + "x", str(capture["query"])
    expect_error("SignatureDoesNotMatch", 403, lambda: tampered.verify(now=CAPTURE_NOW))


def test_anonymous_body_still_checked() -> None:
    headers = CIMultiDict({"x-amz-checksum-crc32": "AAAAAA=="})
    checker = PayloadVerifier(None, headers)
    checker.feed(b"")
    checker.finish()
    checker = PayloadVerifier(None, headers)
    checker.feed(b"x")
    expect_error("BadDigest", 400, checker.finish)
    expect_error("InvalidRequest", 400, lambda: PayloadVerifier(
        None, {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"}))


@pytest.mark.parametrize("payload", [b"", b"a" * 10, PAYLOAD], ids=["empty", "ten", "10k"])
@pytest.mark.parametrize("step", [1, 7, None])
def test_botocore_aws_chunked_wrapper(payload: bytes, step: int | None) -> None:
    """botocore's own aws-chunked framing (what boto3 streams over https)."""
    wire = streaming_wire("STREAMING-UNSIGNED-PAYLOAD-TRAILER", payload,
                          {"x-amz-trailer": "x-amz-checksum-crc32"})
    verified = wire.verify(now=T0)
    body = AwsChunkedWrapper(io.BytesIO(payload), checksum_cls=Crc32Checksum,
                             checksum_name="x-amz-checksum-crc32", chunk_size=4).read()
    checker = PayloadVerifier(verified, wire.headers)
    assert feed_all(checker, body, step) == payload
    checker.finish()
    assert checker.checksums == {
        "crc32": base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode()}


def test_checksum_headers_can_be_ignored_for_complete_multipart() -> None:
    wire = sign("POST", "k", "uploadId=U1",
                {"x-amz-checksum-crc32": "AAAAAA=="}, b"<CompleteMultipartUpload/>")
    checker = PayloadVerifier(wire.verify(now=T0), wire.headers, body_checksums=False)
    checker.feed(b"<CompleteMultipartUpload/>")
    checker.finish()
    assert checker.checksums == {}


def test_aws_documented_chunk_signatures() -> None:
    """The chunk signatures of the S3 docs' "Example: PUT Object" (sigv4-streaming)."""
    seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    documented = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
                  "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
                  "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]
    verified = Verified(
        access_key="AKIAIOSFODNN7EXAMPLE", payload="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        region="us-east-1", date="20130524",
        signing_key=signing_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524",
                                "us-east-1"),
        seed_signature=seed, timestamp="20130524T000000Z",
        scope="20130524/us-east-1/s3/aws4_request")
    chunks = [b"a" * 65536, b"a" * 1024, b""]
    body = b"".join(f"{len(c):x};chunk-signature={sig}\r\n".encode() + c + b"\r\n"
                    for c, sig in zip(chunks, documented, strict=True))
    assert body == chunked_body(verified, chunks[:2])
    checker = PayloadVerifier(verified, {"x-amz-decoded-content-length": "66560"})
    assert feed_all(checker, body, 4093) == b"a" * 66560
    checker.finish()


DOC_KEY = "AKIAIOSFODNN7EXAMPLE"
DOC_KEYS = {DOC_KEY: Credentials(DOC_KEY, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")}
DOC_NOW = datetime(2013, 5, 24, 0, 0, 5, tzinfo=UTC)


def test_aws_documented_header_example() -> None:
    """S3 docs, sig-v4-header-based-auth "GET Object"; plain dict headers, any case."""
    headers = {
        "Host": "examplebucket.s3.amazonaws.com", "Range": "bytes=0-9",
        "x-amz-content-sha256": EMPTY_SHA256, "X-Amz-Date": "20130524T000000Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/"
        "s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature="
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"}
    verified = verify("GET", "/test.txt", "", headers, DOC_KEYS.get, now=DOC_NOW)
    assert verified is not None and verified.access_key == DOC_KEY
    headers["Range"] = "bytes=0-10"
    expect_error("SignatureDoesNotMatch", 403,
                 lambda: verify("GET", "/test.txt", "", headers, DOC_KEYS.get, now=DOC_NOW))


def test_aws_documented_presigned_example() -> None:
    """S3 docs, sigv4-query-string-auth example (X-Amz-Expires=86400)."""
    query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524"
             "%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400"
             "&X-Amz-SignedHeaders=host&X-Amz-Signature="
             "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    headers = {"host": "examplebucket.s3.amazonaws.com"}
    assert verify("GET", "/test.txt", query, headers, DOC_KEYS.get, now=DOC_NOW) is not None
    expect_error("AccessDenied", 403, lambda: verify(
        "GET", "/test.txt", query, headers, DOC_KEYS.get, now=DOC_NOW + timedelta(days=1)))


def test_live_boto3_against_a_tiny_server() -> None:
    """boto3 -> http.server that runs verify() + PayloadVerifier (plain http: hex payload
    hash and an x-amz-checksum-crc32 header; presigned GET and PUT through urllib, with
    boto3's default SigV2 presigning and with s3v4)."""
    import threading
    import urllib.error
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import boto3
    from botocore.config import Config

    seen: list[tuple[str, bytes, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # answers Expect: 100-continue at once

        def log_message(self, *args: object) -> None:
            pass

        def handle_any(self) -> None:
            path, _, query = self.path.partition("?")
            headers = CIMultiDict(self.headers.items())
            try:
                verified = verify(self.command, path, query, headers, lookup)
                checker = PayloadVerifier(verified, headers)
                remaining = int(self.headers.get("Content-Length") or 0)
                body = b""
                while remaining:
                    piece = self.rfile.read(min(remaining, 7))
                    remaining -= len(piece)
                    body += checker.feed(piece)
                checker.finish()
            except S3Error as error:
                seen.append((error.code, b"", {}))
                payload = f"<Error><Code>{error.code}</Code></Error>".encode()
                self.send_response(error.status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            seen.append((self.command, body, checker.checksums))
            self.send_response(200)
            self.send_header("ETag", '"x"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=AK, aws_secret_access_key=SK,
                              config=Config(s3={"addressing_style": "path"},
                                            retries={"max_attempts": 1}))
        client.put_object(Bucket="bkt", Key="dir/ünï côdé+~=.txt", Body=b"hello world")
        assert seen[-1] == ("PUT", b"hello world", {"crc32": "DUoRhQ=="})
        client.upload_part(Bucket="bkt", Key="k", UploadId="U1", PartNumber=1,
                           Body=b"part data")
        assert seen[-1] == ("PUT", b"part data", {"crc32": "rNn68A=="})
        params = {"Bucket": "bkt", "Key": "a b/c+d", "ResponseContentType": "text/plain"}
        # botocore 1.43 presigns S3 URLs with SigV2 unless told otherwise
        url = client.generate_presigned_url("get_object", Params=params, ExpiresIn=60)
        assert "AWSAccessKeyId=" in url and "X-Amz-Signature" not in url
        with urllib.request.urlopen(url) as response:  # and CloudLand verifies them
            assert response.status == 200
        assert seen[-1][0] == "GET"
        url = client.generate_presigned_url("put_object", ExpiresIn=60, Params={
            "Bucket": "bkt", "Key": "a b/c+d", "ContentType": "text/plain"})
        assert "AWSAccessKeyId=" in url
        put = urllib.request.Request(url, data=b"via sigv2", method="PUT",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(put) as response:
            assert response.status == 200
        assert seen[-1] == ("PUT", b"via sigv2", {})
        put = urllib.request.Request(url, data=b"x", method="PUT",
                                     headers={"Content-Type": "text/html"})
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(put)
        assert seen[-1][0] == "SignatureDoesNotMatch"
        v4 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=AK, aws_secret_access_key=SK,
                          config=Config(s3={"addressing_style": "path"},
                                        signature_version="s3v4"))
        url = v4.generate_presigned_url("get_object", Params=params, ExpiresIn=60)
        assert "X-Amz-Signature=" in url
        with urllib.request.urlopen(url) as response:
            assert response.status == 200
        assert seen[-1][0] == "GET"
        bad = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id=AK, aws_secret_access_key="wrong",
                           config=Config(retries={"max_attempts": 1}))
        with pytest.raises(Exception, match="SignatureDoesNotMatch"):
            bad.put_object(Bucket="bkt", Key="k", Body=b"x")
    finally:
        server.shutdown()
        server.server_close()
