"""SigV2 query-string (presigned) URLs as boto3's default `generate_presigned_url` makes
them, verified by `sigv4.verify`."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.config import Config
from multidict import CIMultiDict

from cloudland.storage.sigv4 import (
    V2_SUBRESOURCES,
    PayloadVerifier,
    Verified,
    v2_canonical_resource,
    verify,
)
from tests.storage.test_sigv4 import AK, SK, expect_error, lookup

ENDPOINT = "http://127.0.0.1:9"


def client(endpoint: str = ENDPOINT, **config: Any) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=AK, aws_secret_access_key=SK,
                        config=Config(**config) if config else None)


class Url:
    """A presigned URL as the server sees it: method, raw path, raw query, headers."""

    def __init__(self, method: str, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.method = method
        self.host = parts.netloc
        self.path = parts.path
        self.query = parts.query
        self.headers: CIMultiDict[str] = CIMultiDict({"Host": parts.netloc, **(headers or {})})

    def verify(self, **kw: Any) -> Verified | None:
        return verify(self.method, self.path, self.query, self.headers, lookup, **kw)

    def param(self, name: str) -> str:
        for piece in self.query.split("&"):
            if piece.split("=", 1)[0] == name:
                return piece.split("=", 1)[1]
        raise KeyError(name)

    def replace_param(self, name: str, value: str) -> None:
        self.query = "&".join(f"{name}={value}" if p.split("=", 1)[0] == name else p
                              for p in self.query.split("&"))


def presign(operation: str, method: str, expires: int = 3600, *,
            headers: dict[str, str] | None = None, **params: Any) -> Url:
    url = client().generate_presigned_url(operation, Params={"Bucket": "bkt", **params},
                                          ExpiresIn=expires)
    wire = Url(method, url, headers)
    assert "AWSAccessKeyId=" in wire.query and "X-Amz-" not in wire.query, url
    return wire


KEYS_TO_TRY = ["plain.txt", "with space/and more spaces", "ünïcødé/日本語.bin", "a+b=c~d",
               "1+1 = 2 + 3%", "slashes//in///a/row/", "x!*'();:@&$,?#[]", "percent%20literal"]


@pytest.mark.parametrize("key", KEYS_TO_TRY)
def test_presigned_get_and_head(key: str) -> None:
    for operation, method in (("get_object", "GET"), ("head_object", "HEAD")):
        wire = presign(operation, method, Key=key)
        verified = wire.verify()
        assert verified is not None
        assert verified.presigned and verified.signature_version == 2
        assert verified.access_key == AK and verified.payload == "UNSIGNED-PAYLOAD"
        assert verified.signing_key == b"" and verified.seed_signature == ""


@pytest.mark.parametrize("key", KEYS_TO_TRY[:5])
@pytest.mark.parametrize("overrides", [
    {"ResponseContentDisposition": 'attachment; filename="a b+c ü.txt"'},
    {"ResponseContentType": "text/plain; charset=utf-8",
     "ResponseCacheControl": "no-cache", "ResponseContentLanguage": "en",
     "ResponseContentEncoding": "gzip", "ResponseExpires": datetime(2030, 1, 1, tzinfo=UTC)},
    {"VersionId": "null", "ResponseContentDisposition": "inline; a=1&b=2"},
    {"PartNumber": 1},
])
def test_presigned_get_with_subresources(key: str, overrides: dict[str, Any]) -> None:
    wire = presign("get_object", "GET", Key=key, **overrides)
    assert wire.verify() is not None
    # the sub-resources are signed: changing one breaks the signature
    name, _, value = wire.query.split("&")[0].partition("=")
    wire.replace_param(name, value + "x")
    expect_error("SignatureDoesNotMatch", 403, wire.verify)


@pytest.mark.parametrize("key", KEYS_TO_TRY[:5])
def test_presigned_put(key: str) -> None:
    body = b"hello, world"
    wire = presign("put_object", "PUT", Key=key)
    verified = wire.verify()
    assert verified is not None and verified.payload == "UNSIGNED-PAYLOAD"
    checker = PayloadVerifier(verified, wire.headers)
    assert checker.feed(body) == body
    checker.finish()

    # Content-Type and Content-MD5 signed: sent as headers, or only in the query
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    typed = presign("put_object", "PUT", Key=key, ContentType="text/plain", ContentMD5=md5)
    assert "content-type=" in typed.query and "content-md5=" in typed.query
    assert typed.verify() is not None
    typed.headers["Content-Type"] = "text/plain"
    typed.headers["Content-MD5"] = md5
    verified = typed.verify()
    assert verified is not None
    checker = PayloadVerifier(verified, typed.headers)
    checker.feed(b"tampered body")
    expect_error("BadDigest", 400, checker.finish)  # Content-MD5 still checked
    typed.headers["Content-Type"] = "text/html"
    expect_error("SignatureDoesNotMatch", 403, typed.verify)


def test_presigned_put_with_amz_headers() -> None:
    wire = presign("put_object", "PUT", Key="k", ACL="private", Metadata={"Owner": "Me"})
    assert wire.verify() is not None
    wire.headers["x-amz-acl"] = "private"
    wire.headers["x-amz-meta-owner"] = "Me"
    assert wire.verify() is not None
    wire.headers["x-amz-acl"] = "public-read"
    expect_error("SignatureDoesNotMatch", 403, wire.verify)

    commas = presign("put_object", "PUT", Key="k", Metadata={"tags": " a, b ,c "})
    commas.headers["x-amz-meta-tags"] = " a, b ,c "
    assert commas.verify() is not None
    commas.headers["x-amz-meta-tags"] = "a,b,c"
    expect_error("SignatureDoesNotMatch", 403, commas.verify)

    plain = presign("put_object", "PUT", Key="k")
    plain.headers["x-amz-acl"] = "public-read"  # an x-amz header the signer never saw
    expect_error("SignatureDoesNotMatch", 403, plain.verify)
    plain = presign("put_object", "PUT", Key="k")
    plain.query += "&x-amz-acl=public-read"
    expect_error("SignatureDoesNotMatch", 403, plain.verify)


def test_presigned_multipart_and_streaming() -> None:
    assert presign("create_multipart_upload", "POST", Key="k a").verify() is not None
    part = presign("upload_part", "PUT", Key="k a", UploadId="u+1/2=", PartNumber=3)
    assert part.verify() is not None
    part.replace_param("partNumber", "4")
    expect_error("SignatureDoesNotMatch", 403, part.verify)

    # a SigV2 request can never stream signed aws-chunked bodies
    wire = presign("put_object", "PUT", Key="k")
    wire.headers["x-amz-content-sha256"] = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    expect_error("InvalidRequest", 400, wire.verify)
    fake = Verified(access_key=AK, payload="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                    region="us-east-1", date="", signing_key=b"", seed_signature="",
                    timestamp="", scope="", presigned=True, signature_version=2)
    expect_error("InvalidRequest", 400, lambda: PayloadVerifier(fake, wire.headers))


def test_tampering_expiry_and_unknown_key() -> None:
    wire = presign("get_object", "GET", expires=60, Key="k")
    expires = int(wire.param("Expires"))
    now = datetime.fromtimestamp(expires, UTC)
    assert wire.verify(now=now) is not None
    error = expect_error("AccessDenied", 403, lambda: wire.verify(now=now + timedelta(seconds=1)))
    assert error.message == "Request has expired"

    later = presign("get_object", "GET", Key="k")
    later.replace_param("Expires", str(int(later.param("Expires")) + 3600))
    expect_error("SignatureDoesNotMatch", 403, later.verify)
    past = presign("get_object", "GET", Key="k")
    past.replace_param("Expires", "1000")
    expect_error("AccessDenied", 403, past.verify)
    bad = presign("get_object", "GET", Key="k")
    for junk in ("soon", "%C2%B2", "-5", "1" * 13):
        bad.replace_param("Expires", junk)
        expect_error("AccessDenied", 403, bad.verify)

    other_key = presign("get_object", "GET", Key="k")
    other_key.path = "/bkt/other"
    expect_error("SignatureDoesNotMatch", 403, other_key.verify)
    other_bucket = presign("get_object", "GET", Key="k")
    other_bucket.path = "/bkt2/k"
    expect_error("SignatureDoesNotMatch", 403, other_bucket.verify)
    other_method = presign("get_object", "GET", Key="k")
    other_method.method = "DELETE"
    expect_error("SignatureDoesNotMatch", 403, other_method.verify)

    signature = presign("get_object", "GET", Key="k")
    sig = signature.param("Signature")
    signature.replace_param("Signature", ("A" if sig[0] != "A" else "B") + sig[1:])
    error = expect_error("SignatureDoesNotMatch", 403, signature.verify)
    assert error.extra["StringToSign"].startswith("GET\n\n\n")
    signature.replace_param("Signature", "%C3%BC")  # non-ASCII: refused, not a crash
    expect_error("SignatureDoesNotMatch", 403, signature.verify)

    wrong_secret = Url("GET", boto3.client(
        "s3", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id=AK,
        aws_secret_access_key="not-the-secret").generate_presigned_url(
            "get_object", Params={"Bucket": "bkt", "Key": "k"}))
    expect_error("SignatureDoesNotMatch", 403, wrong_secret.verify)

    unknown = presign("get_object", "GET", Key="k")
    unknown.replace_param("AWSAccessKeyId", "AKIDUNKNOWN")
    error = expect_error("InvalidAccessKeyId", 403, unknown.verify)
    assert error.extra["AWSAccessKeyId"] == "AKIDUNKNOWN"


def test_malformed_v2_queries() -> None:
    wire = presign("get_object", "GET", Key="k")
    missing = "&".join(p for p in wire.query.split("&") if not p.startswith("Expires="))
    expect_error("AccessDenied", 403, lambda: verify("GET", wire.path, missing,
                                                      wire.headers, lookup))
    expect_error("InvalidArgument", 400, lambda: verify(
        "GET", wire.path, wire.query + "&Signature=abc", wire.headers, lookup))
    both = CIMultiDict({"Host": wire.host, "Authorization": "AWS AKIDEXAMPLE:abc"})
    expect_error("InvalidArgument", 400, lambda: verify("GET", wire.path, wire.query,
                                                         both, lookup))
    # a query parameter named Signature alone is not an auth attempt
    assert verify("GET", "/bkt/k", "Signature=x", {}, lookup) is None
    # header SigV2 stays refused with a clear message
    header = CIMultiDict({"Host": wire.host, "Authorization": "AWS AKIDEXAMPLE:abc"})
    error = expect_error("InvalidRequest", 400, lambda: verify("GET", "/bkt/k", "", header,
                                                               lookup))
    assert "AWS4-HMAC-SHA256" in error.message


def test_virtual_host_style() -> None:
    virtual = client("http://s3.localhost:9", s3={"addressing_style": "virtual"})
    url = virtual.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "a b/ü"})
    wire = Url("GET", url)
    assert wire.host.startswith("bkt.") and wire.path == "/a%20b/%C3%BC"
    assert wire.verify(virtual_bucket="bkt") is not None
    expect_error("SignatureDoesNotMatch", 403, wire.verify)
    expect_error("SignatureDoesNotMatch", 403, lambda: wire.verify(virtual_bucket="other"))


@pytest.mark.parametrize("key", KEYS_TO_TRY)
def test_as_aiohttp_hands_it_over(key: str) -> None:
    """aiohttp's raw_path/raw_query_string re-quote (`%21` -> `!`, `%7E` -> `~`): the
    path botocore signed is then not the wire path byte for byte, but still verifies."""
    from aiohttp.test_utils import make_mocked_request

    url = client().generate_presigned_url("get_object", Params={
        "Bucket": "bkt", "Key": key, "ResponseContentDisposition": "attachment; x=!*'()"})
    parts = urlsplit(url)
    request = make_mocked_request("GET", f"{parts.path}?{parts.query}",
                                  headers={"Host": parts.netloc})
    assert verify("GET", request.rel_url.raw_path, request.rel_url.raw_query_string,
                  request.headers, lookup) is not None
    other = make_mocked_request("GET", f"{parts.path}x?{parts.query}")
    expect_error("SignatureDoesNotMatch", 403, lambda: verify(
        "GET", other.rel_url.raw_path, other.rel_url.raw_query_string, other.headers,
        lookup))


def test_subresources_are_botocores() -> None:
    from botocore.auth import HmacV1Auth

    assert set(HmacV1Auth.QSAOfInterest) == V2_SUBRESOURCES
    for operation, params in (("get_object_retention", {"Key": "k"}),
                              ("get_object_legal_hold", {"Key": "k"}),
                              ("get_bucket_encryption", {}), ("get_object_acl", {"Key": "k"}),
                              ("get_object_tagging", {"Key": "k", "VersionId": "3"}),
                              ("list_object_versions", {"Prefix": "a b"}),
                              ("list_objects_v2", {"Prefix": "ü/", "Delimiter": "/"}),
                              ("list_objects", {"Marker": "a+b"}),
                              ("list_multipart_uploads", {}),
                              ("delete_objects", {"Delete": {"Objects": [{"Key": "k"}]}})):
        wire = presign(operation, "GET", **params)
        if operation == "delete_objects":
            wire.method = "POST"
        assert wire.verify() is not None, operation


def test_canonical_resource() -> None:
    assert v2_canonical_resource("/bkt/a%20b", "") == "/bkt/a%20b"
    assert v2_canonical_resource("", "") == "/"
    query = ("versionId=v%2B1&uploads&foo=bar&acl=&response-content-type=a%20b+c"
             "&AWSAccessKeyId=x&Signature=y&Expires=1")
    assert v2_canonical_resource("/b/k", query) == (
        "/b/k?acl=&response-content-type=a b+c&uploads&versionId=v+1")
    assert v2_canonical_resource("/k", "", virtual_bucket="b") == "/b/k"
    assert v2_canonical_resource("/", "acl", virtual_bucket="b") == "/b/?acl"


def test_default_clock_and_non_multidict_headers() -> None:
    key = "ü k"
    url = client().generate_presigned_url("get_object", Params={"Bucket": "b", "Key": key})
    parts = urlsplit(url)
    assert parts.path == "/b/" + quote(key)
    assert verify("GET", parts.path, parts.query, {"Host": parts.netloc}, lookup) is not None
    put = client().generate_presigned_url("put_object", Params={
        "Bucket": "b", "Key": key, "ContentType": "image/png"})
    parts = urlsplit(put)
    assert verify("PUT", parts.path, parts.query, {"content-type": "image/png"},
                  lookup) is not None
    expect_error("SignatureDoesNotMatch", 403, lambda: verify(
        "PUT", parts.path, parts.query, {"Content-Type": "image/gif"}, lookup))


def test_encoded_or_repeated_subresources_cannot_ride_along() -> None:
    """A sub-resource sent under a percent-encoded name would be left out of the SigV2
    string to sign yet acted on by the server: such URLs are refused, as are repeats."""
    wire = presign("get_object", "GET", Key="k", ResponseContentDisposition="attachment")
    query = wire.query
    wire.query = query + "&response-content-typ%65=text/html"
    expect_error("InvalidArgument", 400, wire.verify)
    wire.query = query + "&response-content-disposition=inline"
    expect_error("InvalidArgument", 400, wire.verify)
    wire.query = query
    assert wire.verify() is not None
