"""Bucket CORS against a real CloudLand: the configuration through boto3, and what a
browser sees (preflights and Origin-carrying requests) through plain HTTP."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.conftest import Running, wait_for

APP = "https://app.example"
NOT_ALLOWED = ("CORSResponse: This CORS request is not allowed. This is usually because the "
               "evalution of Origin, request method / Access-Control-Request-Method or "
               "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.")


def code(err: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, str]:
    response = err.value.response
    return (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"],
            response["Error"]["Message"])


def error(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"] == "application/xml"
    return {e.tag: e.text or "" for e in ET.fromstring(response.content)}


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items()
            if k.lower().startswith("access-control-") or k.lower() == "vary"}


@pytest.fixture(scope="module")
def endpoint(s3_cloudland: Running) -> str:
    return str(s3_cloudland.state["s3"])


@pytest.fixture(scope="module")
def web(s3: Any) -> str:
    """A bucket a web app on APP uploads to and reads from; others may only read."""
    s3.create_bucket(Bucket="web")
    s3.put_bucket_cors(Bucket="web", CORSConfiguration={"CORSRules": [
        {"ID": "app", "AllowedOrigins": [APP, "https://*.app.example"],
         "AllowedMethods": ["GET", "PUT", "HEAD"], "AllowedHeaders": ["content-type", "x-amz-*"],
         "ExposeHeaders": ["ETag", "x-amz-request-id"], "MaxAgeSeconds": 600},
        {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
        {"AllowedOrigins": [APP], "AllowedMethods": ["DELETE"], "MaxAgeSeconds": 5}]})
    s3.put_object(Bucket="web", Key="hello.txt", Body=b"hello")
    return "web"


@pytest.fixture(scope="module")
def bad(s3: Any) -> str:
    """A bucket every refused configuration is tried on: it must stay without one."""
    s3.create_bucket(Bucket="cors-bad")
    return "cors-bad"


def test_put_get_delete_bucket_cors(s3: Any) -> None:
    s3.create_bucket(Bucket="cors-api")
    with pytest.raises(ClientError) as err:
        s3.get_bucket_cors(Bucket="cors-api")
    assert code(err) == ("NoSuchCORSConfiguration", 404, "The CORS configuration does not exist")
    assert err.value.response["Error"]["BucketName"] == "cors-api"
    assert s3.delete_bucket_cors(Bucket="cors-api")["ResponseMetadata"]["HTTPStatusCode"] == 204
    rules = [{"ID": "uploads", "AllowedHeaders": ["x-amz-*", "Content-Type"],
              "AllowedMethods": ["PUT", "POST"], "AllowedOrigins": ["https://a.example", ""],
              "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3000},
             {"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]}]
    put = s3.put_bucket_cors(Bucket="cors-api", CORSConfiguration={"CORSRules": rules})
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_bucket_cors(Bucket="cors-api")["CORSRules"] == rules  # as sent, in order
    replaced = [{"AllowedMethods": ["DELETE"], "AllowedOrigins": ["http://*.b.example"]}]
    s3.put_bucket_cors(Bucket="cors-api", CORSConfiguration={"CORSRules": replaced})
    assert s3.get_bucket_cors(Bucket="cors-api")["CORSRules"] == replaced
    assert s3.delete_bucket_cors(Bucket="cors-api")["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as err:
        s3.get_bucket_cors(Bucket="cors-api")
    assert code(err)[:2] == ("NoSuchCORSConfiguration", 404)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_cors(Bucket="no-such-bucket")
    assert code(err)[:2] == ("NoSuchBucket", 404)


@pytest.mark.parametrize(("rule", "expected"), [
    ({"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "MYMETHOD"]},
     ("InvalidRequest", 400, "Found unsupported HTTP method in CORS config. Unsupported method "
      "is MYMETHOD")),
    ({"AllowedOrigins": ["*"], "AllowedMethods": ["OPTIONS"]},
     ("InvalidRequest", 400, "Found unsupported HTTP method in CORS config. Unsupported method "
      "is OPTIONS")),
    ({"AllowedOrigins": ["*example*.com"], "AllowedMethods": ["GET"]},
     ("InvalidRequest", 400, 'AllowedOrigin "*example*.com" can not have more than one '
      "wildcard.")),
    ({"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["x-*-*"]},
     ("InvalidRequest", 400, 'AllowedHeader "x-*-*" can not have more than one wildcard.')),
    ({"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "ExposeHeaders": ["*"]},
     ("InvalidRequest", 400, 'ExposeHeader "*" contains wildcard. We currently do not support '
      "wildcard for ExposeHeader.")),
    ({"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "ID": "x" * 256},
     ("InvalidArgument", 400, "ID length should not exceed allowed limit of 255")),
    # Echoed into answers' headers: a line break there would break every answer.
    ({"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "ExposeHeaders": ["a\nb"]},
     ("InvalidArgument", 400, "ExposeHeader must be a header name")),
    ({"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["x y"]},
     ("InvalidArgument", 400, "AllowedHeader must be a header name")),
    ({"AllowedOrigins": ["https://é.example"], "AllowedMethods": ["GET"]},
     ("InvalidArgument", 400, "AllowedOrigin must be printable ASCII")),
])
def test_put_bucket_cors_refuses_what_s3_refuses(s3: Any, bad: str, rule: dict[str, Any],
                                                 expected: tuple[str, int, str]) -> None:
    with pytest.raises(ClientError) as err:
        s3.put_bucket_cors(Bucket="cors-bad", CORSConfiguration={"CORSRules": [rule]})
    assert code(err) == expected
    with pytest.raises(ClientError) as err:  # nothing was kept
        s3.get_bucket_cors(Bucket="cors-bad")
    assert code(err)[0] == "NoSuchCORSConfiguration"


def raw_put_cors(s3: Any, body: bytes) -> pytest.ExceptionInfo[ClientError]:
    """PutBucketCors with `body` as the document, signed as boto3 signs any body."""
    def replace(request: Any, **_: Any) -> None:
        request.data = body
        for name in [h for h in request.headers if h.lower().startswith("x-amz-checksum-")
                     or h.lower() in ("content-md5", "x-amz-sdk-checksum-algorithm")]:
            del request.headers[name]
        request.headers["Content-Length"] = str(len(body))

    s3.meta.events.register("before-sign.s3.PutBucketCors", replace)
    try:
        with pytest.raises(ClientError) as err:
            s3.put_bucket_cors(Bucket="cors-bad", CORSConfiguration={"CORSRules": [
                {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]})
    finally:
        s3.meta.events.unregister("before-sign.s3.PutBucketCors", replace)
    return err


@pytest.mark.parametrize("body", [
    b"<CORSConfiguration><CORSRule>",  # not XML
    b'<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/" />',  # no rules
    b"<CORSConfiguration><CORSRule/></CORSConfiguration>",
    b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin></CORSRule>"
    b"</CORSConfiguration>",  # no method
    b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET"
    b"</AllowedMethod><MaxAgeSeconds>soon</MaxAgeSeconds></CORSRule></CORSConfiguration>",
    b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET"
    b"</AllowedMethod><Colour>red</Colour></CORSRule></CORSConfiguration>",
    b"<Configuration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET"
    b"</AllowedMethod></CORSRule></Configuration>",
    b"<CORSConfiguration>" + b"<CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET"
    b"</AllowedMethod></CORSRule>" * 101 + b"</CORSConfiguration>",
])
def test_malformed_cors_documents_are_malformed_xml(s3: Any, bad: str, body: bytes) -> None:
    err = raw_put_cors(s3, body)
    assert code(err)[:2] == ("MalformedXML", 400)


def test_a_hundred_rules_are_accepted(s3: Any) -> None:
    s3.create_bucket(Bucket="cors-many")
    rules = [{"AllowedOrigins": [f"https://{n}.example"], "AllowedMethods": ["GET"]}
             for n in range(100)]
    s3.put_bucket_cors(Bucket="cors-many", CORSConfiguration={"CORSRules": rules})
    assert len(s3.get_bucket_cors(Bucket="cors-many")["CORSRules"]) == 100


def test_bucket_cors_needs_a_signature(s3_cloudland: Running, endpoint: str, web: str) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = httpx.request(method, f"{endpoint}/{web}?cors")
        assert (response.status_code, error(response)["Code"]) == (403, "AccessDenied")


def options(url: str, **headers: str) -> httpx.Response:
    return httpx.options(url, headers=headers)


def test_preflight_errors_are_s3s(s3: Any, endpoint: str, web: str) -> None:
    s3.create_bucket(Bucket="cors-none")
    for url in (f"{endpoint}/{web}/hello.txt", f"{endpoint}/no-such-bucket/k"):
        response = options(url, **{"Access-Control-Request-Method": "GET"})
        assert response.status_code == 400
        assert error(response)["Code"] == "BadRequest"
        assert error(response)["Message"] == ("Insufficient information. Origin request header "
                                              "needed.")
    response = options(f"{endpoint}/no-such-bucket/k", Origin=APP)
    assert response.status_code == 403
    assert {k: error(response)[k] for k in ("Code", "Message", "Method", "ResourceType")} == {
        "Code": "AccessForbidden", "Message": "CORSResponse: Bucket not found",
        "Method": "OPTIONS", "ResourceType": "BUCKET"}
    response = options(f"{endpoint}/cors-none/k", Origin=APP,
                       **{"Access-Control-Request-Method": "PUT"})
    assert response.status_code == 403
    assert {k: error(response)[k] for k in ("Code", "Message", "Method", "ResourceType")} == {
        "Code": "AccessForbidden", "Message": "CORSResponse: CORS is not enabled for this bucket.",
        "Method": "PUT", "ResourceType": "BUCKET"}
    response = options(f"{endpoint}/{web}/hello.txt", Origin=APP)
    assert response.status_code == 400
    assert error(response)["Message"] == "Invalid Access-Control-Request-Method: null"
    response = options(f"{endpoint}/{web}/hello.txt", Origin=APP,
                       **{"Access-Control-Request-Method": "PATCH"})
    assert (response.status_code, error(response)["Code"]) == (400, "BadRequest")
    assert not cors_headers(response)


def test_preflight_answers_from_the_first_matching_rule(endpoint: str, web: str) -> None:
    url = f"{endpoint}/{web}/uploads/cat.jpg"  # the key need not exist
    response = options(url, Origin=APP, **{"Access-Control-Request-Method": "PUT",
                                           "Access-Control-Request-Headers":
                                               "Content-Type,X-Amz-Date, x-amz-content-sha256"})
    assert response.status_code == 200 and response.content == b""
    assert response.headers["x-amz-request-id"]
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, PUT, HEAD",
        "access-control-allow-headers": "content-type, x-amz-date, x-amz-content-sha256",
        "access-control-expose-headers": "ETag, x-amz-request-id",
        "access-control-max-age": "600",
        "vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"}
    sub = options(url, Origin="https://eu.app.example", **{"Access-Control-Request-Method": "HEAD"})
    assert sub.headers["access-control-allow-origin"] == "https://eu.app.example"
    # Another origin: only the second rule (any origin, GET) answers, with `*`.
    anyone = options(url, Origin="http://elsewhere.example",
                     **{"Access-Control-Request-Method": "GET"})
    assert cors_headers(anyone) == {
        "access-control-allow-origin": "*", "access-control-allow-methods": "GET",
        "vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"}
    # DELETE from APP: the third rule, since the first two do not allow it.
    delete = options(url, Origin=APP, **{"Access-Control-Request-Method": "DELETE"})
    assert (delete.headers["access-control-allow-methods"],
            delete.headers["access-control-max-age"]) == ("DELETE", "5")
    bucket = options(f"{endpoint}/{web}", Origin=APP, **{"Access-Control-Request-Method": "GET"})
    assert bucket.status_code == 200


def test_a_preflight_asks_each_header_once_and_at_most_64(endpoint: str, web: str) -> None:
    url = f"{endpoint}/{web}/uploads/cat.jpg"
    ask = {"Origin": APP, "Access-Control-Request-Method": "PUT"}
    repeated = options(url, **ask, **{"Access-Control-Request-Headers":
                                      ",".join(["Content-Type", "content-type"] * 250)})
    assert repeated.status_code == 200  # each distinct name is checked (and echoed) once
    assert repeated.headers["access-control-allow-headers"] == "content-type"
    many = ",".join(f"x-amz-meta-{n}" for n in range(65))
    too_many = options(url, **ask, **{"Access-Control-Request-Headers": many})
    assert too_many.status_code == 403 and error(too_many)["Code"] == "AccessForbidden"
    enough = options(url, **ask, **{"Access-Control-Request-Headers": many.rsplit(",", 1)[0]})
    assert enough.status_code == 200


@pytest.mark.parametrize(("origin", "method", "requested", "resource"), [
    ("http://elsewhere.example", "PUT", None, "OBJECT"),  # origin allowed only to GET
    ("http://app.example", "PUT", None, "OBJECT"),  # scheme counts
    ("https://app.example/", "PUT", None, "OBJECT"),  # so does a trailing slash
    ("https://APP.example", "PUT", None, "OBJECT"),  # and case
    (APP, "POST", None, "OBJECT"),  # no rule allows POST
    (APP, "PUT", "content-type, authorization", "OBJECT"),  # one header not allowed
    ("http://elsewhere.example", "GET", "x-amz-date", "OBJECT"),  # the rule allows no header
    ("http://elsewhere.example", "PUT", None, "BUCKET"),
])
def test_a_preflight_no_rule_allows_is_403(endpoint: str, web: str, origin: str, method: str,
                                           requested: str | None, resource: str) -> None:
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if requested:
        headers["Access-Control-Request-Headers"] = requested
    path = f"/{web}/hello.txt" if resource == "OBJECT" else f"/{web}"
    response = httpx.options(endpoint + path, headers=headers)
    assert response.status_code == 403
    assert {k: error(response)[k] for k in ("Code", "Message", "Method", "ResourceType")} == {
        "Code": "AccessForbidden", "Message": NOT_ALLOWED, "Method": method,
        "ResourceType": resource}
    assert not cors_headers(response)


def test_a_preflight_to_a_presigned_url_is_not_checked_as_signed(s3: Any, web: str) -> None:
    url = s3.generate_presigned_url("put_object", Params={"Bucket": web, "Key": "up/a.txt"},
                                    ExpiresIn=300)
    response = options(url, Origin=APP, **{"Access-Control-Request-Method": "PUT"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP


def test_browser_upload_and_download_with_presigned_urls(s3: Any, endpoint: str,
                                                         web: str) -> None:
    """What fetch() does from APP: preflight, presigned PUT, presigned GET, HEAD."""
    put_url = s3.generate_presigned_url("put_object", Params={
        "Bucket": web, "Key": "up/photo.bin", "ContentType": "image/png"}, ExpiresIn=300)
    pre = options(put_url, Origin=APP, **{"Access-Control-Request-Method": "PUT",
                                          "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 200
    body = b"\x89PNG" + bytes(200_000)  # large enough to be streamed back with sendfile
    put = httpx.put(put_url, content=body, headers={"Origin": APP, "Content-Type": "image/png"})
    assert put.status_code == 200, put.text
    assert put.headers["access-control-allow-origin"] == APP
    assert put.headers["access-control-expose-headers"] == "ETag, x-amz-request-id"
    assert put.headers["vary"].startswith("Origin")
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": web,
                                                              "Key": "up/photo.bin"})
    got = httpx.get(get_url, headers={"Origin": APP})
    assert got.content == body and got.headers["etag"] == put.headers["etag"]
    assert got.headers["access-control-allow-origin"] == APP
    assert got.headers["access-control-allow-credentials"] == "true"
    head_url = s3.generate_presigned_url("head_object", Params={"Bucket": web,
                                                                "Key": "up/photo.bin"})
    head = httpx.head(head_url, headers={"Origin": "https://eu.app.example"})
    assert head.headers["access-control-allow-origin"] == "https://eu.app.example"
    small = httpx.get(s3.generate_presigned_url("get_object", Params={
        "Bucket": web, "Key": "hello.txt"}), headers={"Origin": "http://elsewhere.example"})
    assert small.content == b"hello" and small.headers["access-control-allow-origin"] == "*"


def test_errors_carry_cors_headers_so_a_browser_can_read_them(s3: Any, endpoint: str,
                                                              web: str) -> None:
    missing = httpx.get(s3.generate_presigned_url("get_object", Params={
        "Bucket": web, "Key": "no/such.txt"}), headers={"Origin": APP})
    assert (missing.status_code, error(missing)["Code"]) == (404, "NoSuchKey")
    assert missing.headers["access-control-allow-origin"] == APP
    unsigned = httpx.put(f"{endpoint}/{web}/up/x.txt", content=b"x", headers={"Origin": APP})
    assert (unsigned.status_code, error(unsigned)["Code"]) == (403, "AccessDenied")
    assert unsigned.headers["access-control-allow-origin"] == APP
    head = httpx.head(f"{endpoint}/{web}/hello.txt", headers={"Origin": APP})
    assert head.status_code == 403 and head.headers["access-control-allow-origin"] == APP


def test_requests_no_rule_allows_get_no_cors_headers(s3: Any, endpoint: str, web: str) -> None:
    url = s3.generate_presigned_url("get_object", Params={"Bucket": web, "Key": "hello.txt"})
    for headers in ({},  # not a cross-origin request
                    {"Referer": APP},
                    # GET is allowed to any origin, but S3 takes this header's method over
                    # the request's own, and checks the requested headers
                    {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "PUT"},
                    {"Origin": APP, "Access-Control-Request-Headers": "authorization"}):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 200 and response.content == b"hello"
        assert not cors_headers(response), headers
    # A refused method is not refused: served, without CORS headers.
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": web, "Key": "p.txt"})
    response = httpx.put(put_url, content=b"p", headers={"Origin": "http://elsewhere.example"})
    assert response.status_code == 200 and not cors_headers(response)
    s3.create_bucket(Bucket="cors-off")
    s3.put_object(Bucket="cors-off", Key="k", Body=b"k")
    response = httpx.get(s3.generate_presigned_url("get_object", Params={
        "Bucket": "cors-off", "Key": "k"}), headers={"Origin": APP})
    assert response.status_code == 200 and not cors_headers(response)
    response = httpx.get(f"{endpoint}/no-such-bucket/k", headers={"Origin": APP})
    assert response.status_code == 403 and not cors_headers(response)


# ---- the Bucket kind's spec.cors ---------------------------------------------------------

SPA = """\
apiVersion: cloudland/v1
kind: Bucket
metadata: {{name: {name}}}
spec:
  access: {access}
{cors}
"""


def apply(running: Running, tmp_path: Any, name: str, cors: str = "",
          access: str = "private") -> Any:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPA.format(name=name, access=access, cors=cors))
    return running.cli("apply", "-f", str(path))


def rules_of(s3: Any, bucket: str) -> list[dict[str, Any]] | None:
    try:
        return list(s3.get_bucket_cors(Bucket=bucket)["CORSRules"])
    except ClientError as err:
        if err.response["Error"]["Code"] in ("NoSuchCORSConfiguration", "NoSuchBucket"):
            return None
        raise


def test_a_bucket_manifest_declares_cors_and_wins_over_s3_when_it_does(
        s3_cloudland: Running, s3: Any, endpoint: str, tmp_path: Any) -> None:
    declared = """\
  cors:
    - id: app
      allowedOrigins: ["https://app.example"]
      allowedMethods: [GET, PUT]
      allowedHeaders: ["*"]
      exposeHeaders: [ETag]
      maxAgeSeconds: {age}
"""
    result = apply(s3_cloudland, tmp_path, "spa", declared.format(age=300))
    assert result.exit_code == 0, result.output
    expected = {"ID": "app", "AllowedOrigins": [APP], "AllowedMethods": ["GET", "PUT"],
                "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 300}
    wait_for(lambda: rules_of(s3, "spa") == [expected], message="the manifest's CORS rules")
    pre = options(f"{endpoint}/spa/a.txt", Origin=APP, **{"Access-Control-Request-Method": "PUT"})
    assert pre.status_code == 200 and pre.headers["access-control-max-age"] == "300"
    # An S3 client replaces them; the manifest, declaring cors, wins at the next
    # reconcile, which a change to anything else of the Bucket brings.
    s3.put_bucket_cors(Bucket="spa", CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["*"], "AllowedMethods": ["DELETE"]}]})
    result = apply(s3_cloudland, tmp_path, "spa", declared.format(age=300),
                   access="public-read")
    assert result.exit_code == 0, result.output
    wait_for(lambda: rules_of(s3, "spa") == [expected], message="the manifest's rules back")
    result = apply(s3_cloudland, tmp_path, "spa", declared.format(age=60))  # and its changes
    assert result.exit_code == 0, result.output
    wait_for(lambda: rules_of(s3, "spa") == [{**expected, "MaxAgeSeconds": 60}],
             message="the manifest's new rules")
    result = apply(s3_cloudland, tmp_path, "spa", "  cors: []")  # declared empty: none
    assert result.exit_code == 0, result.output
    wait_for(lambda: rules_of(s3, "spa") is None, message="the configuration removed")


def test_a_bucket_manifest_without_cors_leaves_s3s_configuration(
        s3_cloudland: Running, s3: Any, tmp_path: Any) -> None:
    result = apply(s3_cloudland, tmp_path, "s3-owned")
    assert result.exit_code == 0, result.output
    wait_for(lambda: "s3-owned" in {b["Name"] for b in s3.list_buckets()["Buckets"]},
             message="the bucket")
    rules = [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]
    s3.put_bucket_cors(Bucket="s3-owned", CORSConfiguration={"CORSRules": rules})
    result = apply(s3_cloudland, tmp_path, "s3-owned", access="public-read")  # a reconcile

    def public() -> bool:
        return bool(httpx.get(f"{s3_cloudland.state['s3']}/s3-owned").status_code == 200)

    wait_for(public, message="the change reconciled")
    assert rules_of(s3, "s3-owned") == rules


@pytest.mark.parametrize(("rule", "field", "says"), [
    ("{allowedOrigins: ['*'], allowedMethods: [PATCH]}", "spec.cors[0].allowedMethods[0]",
     "'GET', 'PUT', 'POST', 'DELETE' or 'HEAD'"),
    ("{allowedOrigins: ['https://*.*.example'], allowedMethods: [GET]}",
     "spec.cors[0].allowedOrigins", "S3 allows one '*'"),
    ("{allowedOrigins: ['*'], allowedMethods: [GET], exposeHeaders: ['x-*']}",
     "spec.cors[0].exposeHeaders", "no wildcard"),
    ("{allowedOrigins: [], allowedMethods: [GET]}", "spec.cors[0].allowedOrigins",
     "at least 1 item"),
    ("{allowedOrigins: ['*'], allowedMethods: [GET], maxAgeSeconds: -5}",
     "spec.cors[0].maxAgeSeconds", "greater than or equal to 0"),
    ("{allowedOrigin: ['*'], allowedMethods: [GET]}", "spec.cors[0].allowedOrigin",
     "did you mean 'allowedOrigins'"),
    ("{allowedOrigins: ['*'], allowedMethods: [GET], exposeHeaders: ['ETag, x']}",
     "spec.cors[0].exposeHeaders", "is not a header name"),
])
def test_a_bad_cors_rule_in_a_manifest_is_refused_with_its_field(
        s3_cloudland: Running, tmp_path: Any, rule: str, field: str, says: str) -> None:
    result = apply(s3_cloudland, tmp_path, "refused", f"  cors:\n    - {rule}")
    assert result.exit_code != 0
    assert field in result.output and says in result.output, result.output
    assert rules_of_bucket_resource(s3_cloudland) is None


def rules_of_bucket_resource(running: Running) -> Any:
    with running.http() as http:
        r = http.get("/apis/cloudland/v1/namespaces/default/buckets/refused")
    return None if r.status_code == 404 else r.json()
