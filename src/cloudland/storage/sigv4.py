"""AWS Signature Version 4 verification for the S3 API, and the body checks that go with it.

Framework-free: the server hands `verify` the method, the raw path and query as they
came on the wire, and the request headers (any case-insensitive mapping; an aiohttp
`CIMultiDictProxy` works, repeated headers are joined with `,` as SigV4 wants).

    verified = verify(method, raw_path, query_string, headers, lookup)   # None: anonymous
    body = PayloadVerifier(verified, headers)
    for piece in stream:
        write(body.feed(piece))        # decoded bytes (aws-chunked framing removed)
    body.finish()                      # sha256 / checksums / lengths; then commit
    store(body.checksums)              # verified x-amz-checksum-* values, by algorithm

Every check raises `S3Error`. `feed` hands bytes back before the chunk they belong to
has had its signature checked (a chunk can be large), so a caller must treat any
exception from `feed` or `finish` as "discard everything written" -- which an object
store that commits by rename does anyway.

S3 specifics (they differ from the generic SigV4 rules): the path is not normalised
(no `..` or `//` folding) and is URI-encoded once; the payload hash in the canonical
request is the `x-amz-content-sha256` header as sent; presigned URLs use
`UNSIGNED-PAYLOAD`.

Signature Version 2 is accepted in its query-string (presigned) form only
(`?AWSAccessKeyId=..&Expires=..&Signature=..`), because boto3's
`generate_presigned_url` still makes those by default; see `_verify_query_v2`. The
header form (`Authorization: AWS AKID:sig`) is refused with InvalidRequest.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from . import checksums
from .errors import S3Error, invalid_request

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINAL = "aws4_request"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_EXPIRES = 7 * 24 * 3600  # presigned URLs live at most a week

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
PAYLOAD_MODES = frozenset({UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER,
                           STREAMING_UNSIGNED_TRAILER})

MAX_LINE = 4096  # longest aws-chunked header or trailer line we buffer
MAX_TRAILER_BYTES = 16 * 1024

_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SIG = re.compile(r"[0-9a-f]{64}")
_DATE = re.compile(r"\d{8}")
_EXPIRES = re.compile(r"[0-9]{1,12}")
_CREDENTIAL_SHAPE = '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request"'
V2_PARAMS = ("AWSAccessKeyId", "Expires", "Signature")
# The query parameters that are part of a SigV2 CanonicalizedResource: exactly
# botocore's HmacV1Auth.QSAOfInterest, since boto3 is the client that still presigns
# with SigV2 (a parameter it leaves out, e.g. `retention`, must stay out here too).
V2_SUBRESOURCES = frozenset({
    "accelerate", "acl", "analytics", "cors", "defaultObjectAcl", "delete", "inventory",
    "lifecycle", "location", "logging", "metrics", "notification", "object-lock",
    "partNumber", "policy", "replication", "requestPayment", "response-cache-control",
    "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires", "restore",
    "select", "select-type", "storageClass", "tagging", "torrent", "uploadId", "uploads",
    "versionId", "versioning", "versions", "website"})


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class Verified:
    """A request whose signature checked out, and what the body must still satisfy."""

    access_key: str
    payload: str  # x-amz-content-sha256 as signed: hex sha256 or one of PAYLOAD_MODES
    region: str
    date: str  # yyyymmdd, from the credential scope
    signing_key: bytes
    seed_signature: str  # the request's own signature; the first chunk chains from it
    timestamp: str  # the x-amz-date (yyyymmddThhmmssZ)
    scope: str  # date/region/s3/aws4_request
    presigned: bool = False
    # 4 for SigV4; 2 for a SigV2 presigned URL. A SigV2 `Verified` has no signing key,
    # seed signature or scope (empty), so no aws-chunked signed streaming; `region` is
    # the server's (or us-east-1) and `date`/`timestamp` are the verification time,
    # not anything the client signed -- the server must not rely on them.
    signature_version: int = 4
    # The Content-MD5, Content-Type and x-amz-* values the signature covers, by lower-
    # case name. For a SigV2 presigned URL botocore moved them into the query, so a
    # client may send only the body: these are what the request must be taken to say.
    signed_values: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


_UNRESERVED = re.compile(rb"[A-Za-z0-9_.~-]*")
_UNRESERVED_PATH = re.compile(rb"[A-Za-z0-9_.~/-]*")


def uri_encode(value: str | bytes, *, encode_slash: bool = True) -> str:
    """AWS's UriEncode: every byte but A-Z a-z 0-9 - _ . ~ (and `/` if asked) as %XY."""
    raw = value.encode() if isinstance(value, str) else value
    if (_UNRESERVED if encode_slash else _UNRESERVED_PATH).fullmatch(raw):
        return raw.decode("ascii")  # the usual case: nothing to encode
    return quote(raw, safe="" if encode_slash else "/")


@functools.lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """The day's key for a scope: four HMACs, so kept (a key signs a day's requests)."""
    key = _hmac(("AWS4" + secret).encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, TERMINAL)


def forget_signing_keys() -> None:
    """Drop every cached day key: an access key was deleted or changed, and nothing
    derived from its secret should stay in memory (the rest are derived again)."""
    signing_key.cache_clear()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _sign(key: bytes, string_to_sign: str) -> str:
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """One header's value; repeated headers joined with `,` (multidicts with getall)."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        values = getall(name, [])
        return ",".join(values) if values else None
    value = headers.get(name)
    return None if value is None else str(value)


def _case_insensitive(headers: Mapping[str, str]) -> Mapping[str, str]:
    """Multidicts (aiohttp, multidict) are already case-insensitive; lower-case the rest."""
    if hasattr(headers, "getall"):
        return headers
    return {str(name).lower(): value for name, value in headers.items()}


def _decode(part: str, plus_is_space: bool) -> bytes:
    if plus_is_space:
        part = part.replace("+", " ")
    return unquote_to_bytes(part) if "%" in part else part.encode()


def _parse_query(query: str) -> list[tuple[str, str]]:
    """Raw query -> decoded (name, value) pairs, in order; `+` kept as `+`."""
    pairs = []
    for piece in query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        pairs.append((_decode(name, False).decode("utf-8", "replace"),
                      _decode(value, False).decode("utf-8", "replace")))
    return pairs


def canonical_query(query: str, *, plus_is_space: bool = False,
                    exclude: str | None = None) -> str:
    """Each name and value decoded then URI-encoded once, sorted by name then value."""
    pairs = []
    for piece in query.split("&"):
        if not piece:
            continue
        raw_name, _, raw_value = piece.partition("=")
        name = _decode(raw_name, plus_is_space)
        if exclude is not None and name == exclude.encode():
            continue
        pairs.append((uri_encode(name), uri_encode(_decode(raw_value, plus_is_space))))
    pairs.sort()
    return "&".join(f"{n}={v}" for n, v in pairs)


def canonical_uri(raw_path: str) -> str:
    """The raw path URI-encoded once (decoded first, so `%20` and ` ` agree), `/` kept."""
    if not raw_path:
        return "/"
    return uri_encode(unquote_to_bytes(raw_path), encode_slash=False)


def _trim(value: str) -> str:
    return " ".join(value.split())


def _fmt_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _malformed_header(detail: str, **extra: str) -> S3Error:
    return S3Error("AuthorizationHeaderMalformed",
                   f"The authorization header is malformed; {detail}", 400, **extra)


def _malformed_query(detail: str) -> S3Error:
    return S3Error("AuthorizationQueryParametersError", detail, 400)


def _sigv2() -> S3Error:
    return S3Error("InvalidRequest", "The authorization mechanism you have provided is not "
                   "supported. Please use AWS4-HMAC-SHA256.", 400)


def _access_denied(message: str, **extra: str) -> S3Error:
    return S3Error("AccessDenied", message, 403, **extra)


# --------------------------------------------------------------------------- verify


def verify(method: str, raw_path: str, query: str, headers: Mapping[str, str],
           lookup: Callable[[str], Credentials | None], *, now: datetime | None = None,
           max_skew: timedelta = timedelta(minutes=15),
           region: str | None = None, virtual_bucket: str | None = None) -> Verified | None:
    """Check a request's SigV4 signature (Authorization header or presigned query), or
    a SigV2 presigned query.

    Returns None when the request carries no signature at all (anonymous), a
    `Verified` when the signature is right; raises `S3Error` otherwise. `region`, when
    given, is the only region accepted in the credential scope. `virtual_bucket` is the
    bucket of a virtual-host-style request (`bucket.<domain>`): SigV2 signs
    `/bucket/key` even when the wire path is `/key` (SigV4 ignores it).
    """
    headers = _case_insensitive(headers)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    authorization = _header(headers, "authorization")
    params = _parse_query(query)
    names = {n for n, _ in params}
    query_v4 = bool(names & {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"})
    query_v2 = "AWSAccessKeyId" in names or ("Signature" in names and "Expires" in names)
    if authorization is not None and (query_v4 or query_v2):
        raise S3Error("InvalidArgument", "Only one auth mechanism allowed; only the "
                      "X-Amz-Algorithm query parameter, Signature query string parameter or "
                      "the Authorization header should be specified", 400,
                      ArgumentName="Authorization", ArgumentValue=authorization)
    if authorization is None:
        if query_v4:
            return _verify_query(method, raw_path, query, params, headers, lookup, now,
                                 max_skew, region)
        if query_v2:
            return _verify_query_v2(method, raw_path, query, params, headers, lookup, now,
                                    region, virtual_bucket)
        return None
    return _verify_header(method, raw_path, query, authorization, headers, lookup, now,
                          max_skew, region)


def _parse_credential(credential: str, malformed: Callable[[str], S3Error],
                      region: str | None) -> tuple[str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or not parts[0]:
        raise malformed(f"the Credential is mal-formed; expecting {_CREDENTIAL_SHAPE}.")
    access_key, date, scope_region, service, terminal = parts
    if not _DATE.fullmatch(date):
        raise malformed(f"incorrect date format \"{date}\". This date in the credential "
                        "must be in the format \"yyyyMMdd\".")
    if not scope_region:
        raise malformed(f"the Credential is mal-formed; expecting {_CREDENTIAL_SHAPE}.")
    if service != SERVICE:
        raise malformed(f"incorrect service \"{service}\". This endpoint belongs to "
                        f"\"{SERVICE}\".")
    if terminal != TERMINAL:
        raise malformed(f"incorrect terminal \"{terminal}\". This endpoint uses "
                        f"\"{TERMINAL}\".")
    if region is not None and scope_region != region:
        raise malformed(f"the region '{scope_region}' is wrong; expecting '{region}'")
    return access_key, date, scope_region


def _parse_timestamp(value: str) -> datetime | None:
    """'20261125T120000Z' as an aware datetime; None if it is not one. By hand: strptime
    is a tenth of a signature check's time."""
    digits = value[:8] + value[9:15]
    if len(value) != 16 or value[8] != "T" or value[15] != "Z" or \
            not (digits.isascii() and digits.isdigit()):
        return None
    try:
        return datetime(int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                        int(value[11:13]), int(value[13:15]), tzinfo=UTC)
    except ValueError:
        return None


def _verify_header(method: str, raw_path: str, query: str, authorization: str,
                   headers: Mapping[str, str], lookup: Callable[[str], Credentials | None],
                   now: datetime, max_skew: timedelta, region: str | None) -> Verified:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm == "AWS":
        raise _sigv2()
    if algorithm != ALGORITHM:
        raise S3Error("InvalidArgument", "Unsupported Authorization Type", 400,
                      ArgumentName="Authorization", ArgumentValue=authorization)
    fields: dict[str, str] = {}
    for component in rest.split(","):
        key, eq, value = component.strip().partition("=")
        if not eq or key in fields:
            raise _malformed_header(f"the authorization component \"{component.strip()}\" "
                                    "is malformed.")
        fields[key] = value.strip()
    for required in ("Credential", "SignedHeaders", "Signature"):
        if required not in fields:
            raise _malformed_header(f"the authorization header requires the {required} "
                                    "component.")

    def malformed(detail: str) -> S3Error:
        return _malformed_header(detail)

    access_key, date, scope_region = _parse_credential(fields["Credential"], malformed, region)
    signature = fields["Signature"].lower()
    if not _SIG.fullmatch(signature):
        raise malformed("the Signature is mal-formed; expecting 64 hexadecimal characters.")

    amz_date = _header(headers, "x-amz-date")
    if amz_date is not None:
        timestamp = amz_date.strip()
        when = _parse_timestamp(timestamp)
    else:
        http_date = _header(headers, "date")
        when = None
        if http_date is not None:
            try:
                when = parsedate_to_datetime(http_date).astimezone(UTC)
            except (TypeError, ValueError):
                when = None
        timestamp = when.strftime(_TIMESTAMP_FORMAT) if when else ""
    if when is None:
        raise _access_denied("AWS authentication requires a valid Date or x-amz-date header")
    if timestamp[:8] != date:
        raise malformed(f"Invalid credential date \"{date}\". This date is not the same as "
                        "X-Amz-Date: \"" + timestamp[:8] + "\".")

    payload = _header(headers, "x-amz-content-sha256")
    if payload is None:
        raise S3Error("InvalidRequest",
                      "Missing required header for this request: x-amz-content-sha256", 400)
    payload = payload.strip()
    _check_payload_mode(payload)

    credentials = lookup(access_key)
    if credentials is None:
        raise _unknown_key(access_key)
    if abs(now - when) > max_skew:
        raise S3Error("RequestTimeTooSkewed", "The difference between the request time and "
                      "the current time is too large.", 403, RequestTime=timestamp,
                      ServerTime=_fmt_time(now),
                      MaxAllowedSkewMilliseconds=str(int(max_skew.total_seconds() * 1000)))
    signed = _signed_header_list(fields["SignedHeaders"], headers, malformed, presigned=False)
    return _check_signature(method, raw_path, query, headers, signed, [payload], access_key,
                            credentials, date, scope_region, timestamp, signature,
                            presigned=False)


def _verify_query(method: str, raw_path: str, query: str, params: list[tuple[str, str]],
                  headers: Mapping[str, str], lookup: Callable[[str], Credentials | None],
                  now: datetime, max_skew: timedelta, region: str | None) -> Verified:
    values: dict[str, str] = {}
    for name, value in params:
        if name.startswith("X-Amz-") and name in values:
            raise _malformed_query(f"The {name} query parameter is repeated.")
        values.setdefault(name, value)
    required = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date",
                "X-Amz-SignedHeaders", "X-Amz-Expires")
    if any(name not in values for name in required):
        raise _malformed_query("Query-string authentication version 4 requires the "
                               "X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, "
                               "X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.")
    if values["X-Amz-Algorithm"] != ALGORITHM:
        raise _malformed_query(f"X-Amz-Algorithm only supports \"{ALGORITHM}\"")

    def malformed(detail: str) -> S3Error:
        return _malformed_query(f"Error parsing the X-Amz-Credential parameter; {detail}")

    access_key, date, scope_region = _parse_credential(values["X-Amz-Credential"], malformed,
                                                       region)
    timestamp = values["X-Amz-Date"]
    when = _parse_timestamp(timestamp)
    if when is None:
        raise _malformed_query("X-Amz-Date must be in the ISO8601 Long Format "
                               "\"yyyyMMdd'T'HHmmss'Z'\"")
    if timestamp[:8] != date:
        raise malformed(f"Invalid credential date \"{date}\". This date is not the same as "
                        f"X-Amz-Date: \"{timestamp[:8]}\".")
    try:
        expires = int(values["X-Amz-Expires"])
    except ValueError:
        raise _malformed_query("X-Amz-Expires should be a number") from None
    if expires < 0:
        raise _malformed_query("X-Amz-Expires must be non-negative")
    if expires > MAX_EXPIRES:
        raise _malformed_query("X-Amz-Expires must be less than a week (in seconds) that is; "
                               f"{MAX_EXPIRES} seconds")
    signature = values["X-Amz-Signature"].lower()
    if not _SIG.fullmatch(signature):
        raise _malformed_query("X-Amz-Signature must be 64 hexadecimal characters")

    credentials = lookup(access_key)
    if credentials is None:
        raise _unknown_key(access_key)
    if now < when - max_skew:
        raise _access_denied("Request is not valid yet", RequestTime=timestamp,
                             ServerTime=_fmt_time(now))
    if now > when + timedelta(seconds=expires):
        raise _access_denied("Request has expired", **{
            "X-Amz-Expires": str(expires),
            "Expires": _fmt_time(when + timedelta(seconds=expires)),
            "ServerTime": _fmt_time(now)})
    signed = _signed_header_list(values["X-Amz-SignedHeaders"], headers, _malformed_query,
                                 presigned=True)
    # botocore puts an x-amz-content-sha256 header into the canonical request if the
    # request had one when presigning; otherwise (and per the docs) UNSIGNED-PAYLOAD.
    payloads = [UNSIGNED_PAYLOAD]
    header_payload = _header(headers, "x-amz-content-sha256")
    if header_payload is not None:
        header_payload = header_payload.strip()
        _check_payload_mode(header_payload)
        payloads.insert(0, header_payload)
    return _check_signature(method, raw_path, query, headers, signed, payloads, access_key,
                            credentials, date, scope_region, timestamp, signature,
                            presigned=True)


def _unknown_key(access_key: str) -> S3Error:
    return S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist "
                   "in our records.", 403, AWSAccessKeyId=access_key)


def _check_payload_mode(payload: str) -> None:
    if payload in PAYLOAD_MODES or _HEX64.fullmatch(payload):
        return
    raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                  "STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
                  "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.", 400,
                  ArgumentName="x-amz-content-sha256", ArgumentValue=payload)


def _signed_header_list(value: str, headers: Mapping[str, str],
                        malformed: Callable[[str], S3Error], *, presigned: bool) -> list[str]:
    signed = value.split(";")
    if not value or any(not name or name != name.lower() or name.strip() != name
                        for name in signed):
        raise malformed("the SignedHeaders component is malformed.")
    if "host" not in signed:
        raise malformed("the SignedHeaders must include host.")
    # Headers S3 acts on must not be addable to a signed request by whoever holds it.
    exempt = {"x-amz-content-sha256"} if presigned else set()
    unsigned = sorted({name.lower() for name in headers
                       if name.lower().startswith("x-amz-")} - set(signed) - exempt)
    if unsigned:
        raise _access_denied("There were headers present in the request which were not "
                             "signed", HeadersNotSigned=", ".join(unsigned))
    return signed


def _check_signature(method: str, raw_path: str, query: str, headers: Mapping[str, str],
                     signed: list[str], payloads: list[str], access_key: str,
                     credentials: Credentials, date: str, scope_region: str, timestamp: str,
                     signature: str, *, presigned: bool) -> Verified:
    scope = f"{date}/{scope_region}/{SERVICE}/{TERMINAL}"
    key = signing_key(credentials.secret_key, date, scope_region)
    canonical_headers = "".join(f"{name}:{_trim(_header(headers, name) or '')}\n"
                                for name in signed)
    signed_headers = ";".join(signed)
    exclude = "X-Amz-Signature" if presigned else None
    uris = [canonical_uri(raw_path)]
    if raw_path and raw_path != uris[0]:
        uris.append(raw_path)  # a client that signed its own (odd) encoding as sent
    queries = [canonical_query(query, exclude=exclude)]
    if "+" in query:
        queries.append(canonical_query(query, plus_is_space=True, exclude=exclude))
    first: tuple[str, str] | None = None
    for payload in payloads:
        for uri in uris:
            for canonical_q in queries:
                canonical_request = "\n".join([method.upper(), uri, canonical_q,
                                               canonical_headers, signed_headers, payload])
                string_to_sign = "\n".join([
                    ALGORITHM, timestamp, scope,
                    hashlib.sha256(canonical_request.encode()).hexdigest()])
                if first is None:
                    first = (canonical_request, string_to_sign)
                if hmac.compare_digest(_sign(key, string_to_sign), signature):
                    return Verified(access_key=access_key, payload=payload,
                                    region=scope_region, date=date, signing_key=key,
                                    seed_signature=signature, timestamp=timestamp,
                                    scope=scope, presigned=presigned)
    assert first is not None
    canonical_request, string_to_sign = first
    raise S3Error(
        "SignatureDoesNotMatch", "The request signature we calculated does not match the "
        "signature you provided. Check your key and signing method.", 403,
        AWSAccessKeyId=access_key, StringToSign=string_to_sign, SignatureProvided=signature,
        StringToSignBytes=" ".join(f"{b:02x}" for b in string_to_sign.encode()),
        CanonicalRequest=canonical_request,
        CanonicalRequestBytes=" ".join(f"{b:02x}" for b in canonical_request.encode()))


# --------------------------------------------------------------------------- SigV2 query


MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # as SigV4 presigned URLs


def _refuse_disguised_names(query: str) -> None:
    """SigV2 signs the sub-resources by their names as sent; the server acts on decoded
    names. A percent-encoded name (`uploadI%64`) or a repeated sub-resource would be
    left out of the signature yet change what the request does, so both are refused."""
    seen: set[str] = set()
    for piece in query.split("&"):
        raw = piece.partition("=")[0]
        name = urllib.parse.unquote_plus(raw)
        if name != raw:
            raise S3Error("InvalidArgument", f"query parameter name '{raw}' is percent-encoded; "
                          "a presigned (SigV2) URL must send names as they were signed",
                          400, ArgumentName=raw)
        lowered = name.lower()
        signed_value = lowered.startswith(("x-amz-", "content-"))
        if name in V2_SUBRESOURCES or signed_value:
            # A repeat would be signed joined ("a,b") yet acted on as one of its values.
            if lowered in seen:
                raise S3Error("InvalidArgument", f"The {name} query parameter is repeated.",
                              400, ArgumentName=name)
            seen.add(lowered)


def v2_canonical_resource(raw_path: str, query: str, *, plus_is_space: bool = False,
                          virtual_bucket: str | None = None) -> str:
    """SigV2 CanonicalizedResource as botocore's HmacV1Auth builds it: the path as
    sent (`/bucket` in front for virtual-host style), then the sub-resource
    parameters, sorted by name (stably), values percent-decoded, `name` alone when the
    query had no `=`."""
    resource = raw_path or "/"
    if virtual_bucket is not None:
        resource = "/" + virtual_bucket + (resource if resource.startswith("/")
                                           else "/" + resource)
    picked: list[tuple[str, str | None]] = []
    for piece in query.split("&"):
        name, eq, value = piece.partition("=")
        if name in V2_SUBRESOURCES:
            decoded = _decode(value, plus_is_space).decode("utf-8", "replace")
            picked.append((name, decoded if eq else None))
    if picked:
        picked.sort(key=lambda pair: pair[0])
        resource += "?" + "&".join(name if value is None else f"{name}={value}"
                                   for name, value in picked)
    return resource


def v2_string_to_sign(method: str, content_md5: str, content_type: str, date: str,
                      amz_headers: Mapping[str, str], resource: str) -> str:
    """METHOD, Content-MD5, Content-Type, Date (Expires for query auth), then the
    x-amz-* headers (`name:value`, lower-cased, sorted) and the resource."""
    lines = [method.upper(), content_md5.strip(), content_type.strip(), date.strip()]
    lines += [f"{name}:{amz_headers[name]}" for name in sorted(amz_headers)]
    return "\n".join(lines) + "\n" + resource


def _nonempty(values: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in values.items() if value}


def _sign_v2(secret: str, string_to_sign: str) -> str:
    digest = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _verify_query_v2(method: str, raw_path: str, query: str, params: list[tuple[str, str]],
                     headers: Mapping[str, str], lookup: Callable[[str], Credentials | None],
                     now: datetime, region: str | None,
                     virtual_bucket: str | None) -> Verified:
    """A SigV2 presigned URL (what boto3's generate_presigned_url makes by default).

    botocore's HmacV1QueryAuth moves the Content-MD5, Content-Type and x-amz-* headers
    it signed into the query (lower-cased names), so each of those is taken from the
    request header when sent, else from the query. Every x-amz-* header on the request
    is in the string to sign, so none can be added by whoever holds the URL. The body
    is not signed: the result's payload is UNSIGNED-PAYLOAD, or the
    x-amz-content-sha256 the signer included (a hex sha256, or unsigned aws-chunked
    with trailer); signed aws-chunked streaming needs SigV4 and is refused.
    """
    _refuse_disguised_names(query)
    values: dict[str, str] = {}
    signed_query: dict[str, list[str]] = {}
    for name, value in params:
        if name in V2_PARAMS:
            if name in values:
                raise S3Error("InvalidArgument", f"The {name} query parameter is repeated.",
                              400, ArgumentName=name, ArgumentValue=value)
            values[name] = value
        lowered = name.lower()
        if lowered.startswith("x-amz-") or lowered in ("content-md5", "content-type"):
            signed_query.setdefault(lowered, []).append(value)
    if any(name not in values for name in V2_PARAMS):
        raise _access_denied("Query-string authentication requires the Signature, Expires "
                             "and AWSAccessKeyId parameters")
    access_key = values["AWSAccessKeyId"]
    expires_text = values["Expires"].strip()
    if not _EXPIRES.fullmatch(expires_text):
        raise _access_denied("Invalid date (should be seconds since epoch): "
                             f"{values['Expires']}")
    expires = int(expires_text)
    # a `+` the client left unencoded may have become a space on the way
    signature = values["Signature"].strip().replace(" ", "+")

    credentials = lookup(access_key)
    if credentials is None:
        raise _unknown_key(access_key)
    if expires - now.timestamp() > MAX_PRESIGN_SECONDS:
        raise S3Error("AuthorizationQueryParametersError", "Query-string authentication "
                      "requires an expiry within a week (604800 seconds)", 400)
    if now.timestamp() > expires:
        raise _access_denied("Request has expired", Expires=_fmt_time(
            datetime.fromtimestamp(expires, UTC)), ServerTime=_fmt_time(now))

    def signed_value(name: str) -> str:
        header = _header(headers, name)
        if header is not None:
            return header
        return ",".join(signed_query.get(name, []))

    # every x-amz-* header sent (repeats joined with `,`, as botocore does), and those
    # botocore moved into the query; a header wins over a query parameter
    amz = {name: ",".join(v.strip() for v in values)
           for name, values in signed_query.items() if name.startswith("x-amz-")}
    getall = getattr(headers, "getall", None)
    for name in {str(n).lower() for n in headers}:
        if name.startswith("x-amz-"):
            sent = getall(name, []) if getall is not None else [str(headers[name])]
            amz[name] = ",".join(str(v).strip() for v in sent)
    payload = amz.get("x-amz-content-sha256", UNSIGNED_PAYLOAD)
    _check_payload_mode(payload)
    if payload in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
        raise invalid_request(f"{payload} requires AWS Signature Version 4")

    # The path as sent first; then the same path re-encoded the way botocore encodes
    # keys (aiohttp's raw_path turns `%21` back into `!` and the like); `/bucket/` for
    # a path-style bucket request `/bucket` (botocore signs its auth_path, which has the
    # slash); `+` as space in sub-resource values. All name the same resource.
    paths = [raw_path, canonical_uri(raw_path)]
    if virtual_bucket is None and raw_path.count("/") == 1 and raw_path.startswith("/") \
            and len(raw_path) > 1:
        paths.append(raw_path + "/")
    resources: list[str] = []
    for path in paths:
        for plus in (False, True) if "+" in query else (False,):
            resource = v2_canonical_resource(path, query, plus_is_space=plus,
                                             virtual_bucket=virtual_bucket)
            if resource not in resources:
                resources.append(resource)
    provided = signature.encode("utf-8", "replace")
    first = ""
    for resource in resources:
        string_to_sign = v2_string_to_sign(method, signed_value("content-md5"),
                                           signed_value("content-type"), values["Expires"],
                                           amz, resource)
        first = first or string_to_sign
        if hmac.compare_digest(_sign_v2(credentials.secret_key, string_to_sign).encode(),
                               provided):
            return Verified(access_key=access_key, payload=payload,
                            region=region or "us-east-1", date=now.strftime("%Y%m%d"),
                            signing_key=b"", seed_signature="",
                            timestamp=now.strftime(_TIMESTAMP_FORMAT), scope="",
                            presigned=True, signature_version=2,
                            signed_values=_nonempty({
                                "content-md5": signed_value("content-md5"),
                                "content-type": signed_value("content-type"), **amz}))
    raise S3Error(
        "SignatureDoesNotMatch", "The request signature we calculated does not match the "
        "signature you provided. Check your key and signing method.", 403,
        AWSAccessKeyId=access_key, StringToSign=first, SignatureProvided=signature,
        StringToSignBytes=" ".join(f"{b:02x}" for b in first.encode()))


# --------------------------------------------------------------------------- payload


SUPPORTED_CHECKSUMS = checksums.ALGORITHMS
_CHECKSUM_PREFIX = "x-amz-checksum-"
_NOT_ALGORITHMS = {"x-amz-checksum-type", "x-amz-checksum-algorithm", "x-amz-checksum-mode"}


def _incomplete(message: str = "You did not provide the number of bytes specified by the "
                "Content-Length HTTP header.") -> S3Error:
    return S3Error("IncompleteBody", message, 400)


_HEADER, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class PayloadVerifier:
    """Decodes and checks a request body according to `Verified.payload` and the headers.

    Hex sha256: the decoded body must hash to it. `UNSIGNED-PAYLOAD`: nothing but the
    checksums. `STREAMING-*`: aws-chunked framing is parsed and removed (chunk
    signatures checked for the signed variants; trailers collected for the `-TRAILER`
    ones). In all modes `Content-MD5` and one `x-amz-checksum-<algorithm>` (header or
    trailer) are checked against the decoded bytes in `finish`.
    """

    def __init__(self, verified: Verified | None, headers: Mapping[str, str], *,
                 body_checksums: bool = True,
                 body_md5: Callable[[], bytes] | None = None) -> None:
        """`body_checksums=False` for requests whose x-amz-checksum-* headers describe
        something other than the body (CompleteMultipartUpload: the whole object).
        `body_md5`, when the caller hashes the decoded body with MD5 anyway (a
        BlobWriter does, for the ETag), gives that digest once the body has ended:
        Content-MD5 is checked against it instead of hashing every byte twice."""
        headers = _case_insensitive(headers)
        self.verified = verified
        if verified is not None:
            mode = verified.payload
        else:
            mode = (_header(headers, "x-amz-content-sha256") or UNSIGNED_PAYLOAD).strip()
            _check_payload_mode(mode)
        self.mode = mode
        self.chunked = mode.startswith("STREAMING-")
        self.signed_chunks = mode in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER)
        if self.signed_chunks and (verified is None or not verified.signing_key):
            raise invalid_request(f"{mode} requires a request signed with AWS Signature "
                                   "Version 4")
        self._sha256 = hashlib.sha256() if _HEX64.fullmatch(mode) else None
        self.checksums: dict[str, str] = {}
        self.trailers: dict[str, str] = {}
        self.decoded_length = 0

        self._expected_length: int | None = None
        declared = _header(headers, "x-amz-decoded-content-length")
        if self.chunked and declared is not None:
            if not declared.strip().isdigit():
                raise S3Error("InvalidArgument", "x-amz-decoded-content-length must be a "
                              "non-negative integer", 400,
                              ArgumentName="x-amz-decoded-content-length",
                              ArgumentValue=declared)
            self._expected_length = int(declared)

        md5 = _header(headers, "content-md5")
        self._md5: Any = None  # hashed here only when the caller does not
        self._body_md5: Callable[[], bytes] | None = None  # set when Content-MD5 is sent
        self._md5_expected = b""
        if md5 is not None:
            try:
                self._md5_expected = base64.b64decode(md5.strip(), validate=True)
            except binascii.Error:
                self._md5_expected = b""
            if len(self._md5_expected) != 16:
                raise S3Error("InvalidDigest", "The Content-MD5 you specified was invalid.", 400)
            if body_md5 is None:
                self._md5 = hashlib.md5()
                body_md5 = self._md5.digest
            self._body_md5 = body_md5

        # the one checksum: from a header, or announced in x-amz-trailer
        self._algorithm: str | None = None
        self._expected_checksum: str | None = None
        found = sorted({name.lower() for name in headers
                        if name.lower().startswith(_CHECKSUM_PREFIX)} - _NOT_ALGORITHMS
                       ) if body_checksums else []
        self._declared_trailers: list[str] = []
        trailer = _header(headers, "x-amz-trailer")
        if trailer is not None and trailer.strip():
            if not mode.endswith("-TRAILER"):
                raise invalid_request("x-amz-trailer requires x-amz-content-sha256 "
                                       "STREAMING-UNSIGNED-PAYLOAD-TRAILER or "
                                       "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
            self._declared_trailers = [t.strip().lower() for t in trailer.split(",")
                                       if t.strip()]
            for name in self._declared_trailers:
                if not name.startswith(_CHECKSUM_PREFIX):
                    raise invalid_request(f"The trailing header {name} is not supported")
            found = sorted(set(found) | set(self._declared_trailers))
        if len(found) > 1:
            raise invalid_request("Expecting a single x-amz-checksum- header. Multiple "
                                   "checksum Types are not allowed.")
        self._hasher: checksums.Checksum | None = None
        if found:
            name = found[0]
            algorithm = name[len(_CHECKSUM_PREFIX):]
            if algorithm not in checksums.ALGORITHMS:
                raise invalid_request(f"The checksum algorithm {algorithm.upper()} is not "
                                       "supported by this server.")
            self._algorithm = algorithm
            self._hasher = checksums.hasher(algorithm)
            if name not in self._declared_trailers:
                value = _header(headers, name) or ""
                self._expected_checksum = self._check_checksum_value(algorithm, value)

        # aws-chunked parser state
        self._state = _HEADER
        self._buffer = bytearray()
        self._remaining = 0
        self._chunk_hash: Any = None
        self._previous_signature = verified.seed_signature if verified else ""
        self._chunk_signature = ""
        self._trailer_bytes = 0
        self._trailer_lines: list[tuple[str, str]] = []
        self._finished = False

    @staticmethod
    def _check_checksum_value(algorithm: str, value: str) -> str:
        value = value.strip()
        if checksums.decode(algorithm, value) is None:
            raise invalid_request(f"Value for x-amz-checksum-{algorithm} header is invalid.")
        return value

    # -- feeding

    @property
    def hashes(self) -> bool:
        """Whether feeding the body computes anything (a digest to check) at all."""
        return (self._sha256 is not None or self._md5 is not None
                or self._hasher is not None)

    def feed(self, data: bytes) -> bytes:
        """Take the next piece of the body as received; return the decoded bytes in it."""
        if self._finished:
            raise invalid_request("The request body was already finished")
        if not self.chunked:
            self._consume(data)
            return data
        out = bytearray()
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._state == _DATA:
                take = min(self._remaining, len(view) - pos)
                piece = view[pos:pos + take]
                pos += take
                self._remaining -= take
                if self._chunk_hash is not None:
                    self._chunk_hash.update(piece)
                self._consume(piece)
                out += piece
                if self._remaining == 0:
                    self._state = _DATA_END
            elif self._state == _DATA_END:
                need = 2 - len(self._buffer)
                self._buffer += view[pos:pos + need]
                pos += min(need, len(view) - pos)
                if len(self._buffer) == 2:
                    if self._buffer != b"\r\n":
                        raise _incomplete("The aws-chunked chunk data was not followed "
                                          "by CRLF")
                    self._buffer.clear()
                    self._end_chunk()
                    self._state = _HEADER
            elif self._state == _DONE:
                rest = bytes(view[pos:])
                if rest.strip(b"\r\n"):
                    raise invalid_request("Data found after the end of the aws-chunked "
                                           "body")
                pos = len(view)
            else:  # a line: chunk header or trailer
                end = bytes(view[pos:pos + MAX_LINE + 2]).find(b"\n")
                if end < 0:
                    self._buffer += view[pos:]
                    pos = len(view)
                    if len(self._buffer) > MAX_LINE:
                        raise invalid_request("aws-chunked line too long")
                    continue
                self._buffer += view[pos:pos + end + 1]
                pos += end + 1
                if len(self._buffer) > MAX_LINE + 2:
                    raise invalid_request("aws-chunked line too long")
                line = bytes(self._buffer)
                self._buffer.clear()
                if not line.endswith(b"\r\n"):
                    raise invalid_request("aws-chunked lines must end with CRLF")
                self._line(line[:-2])
        return bytes(out)

    def _consume(self, piece: bytes | memoryview) -> None:
        self.decoded_length += len(piece)
        if self._expected_length is not None and self.decoded_length > self._expected_length:
            raise _incomplete("The decoded body is longer than x-amz-decoded-content-length")
        if self._sha256 is not None:
            self._sha256.update(piece)
        if self._md5 is not None:
            self._md5.update(piece)
        if self._hasher is not None:
            self._hasher.update(piece)

    def _line(self, line: bytes) -> None:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise invalid_request("aws-chunked framing is not ASCII") from None
        if self._state == _HEADER:
            self._chunk_header(text)
        else:
            self._trailer_line(text)

    def _chunk_header(self, text: str) -> None:
        size_text, _, extensions = text.partition(";")
        size_text = size_text.strip()
        if not size_text or len(size_text) > 16 or any(
                c not in "0123456789abcdefABCDEF" for c in size_text):
            raise invalid_request(f"Invalid aws-chunked chunk size {size_text[:32]!r}")
        size = int(size_text, 16)
        signature = ""
        for extension in extensions.split(";") if extensions else []:
            name, _, value = extension.strip().partition("=")
            if name == "chunk-signature":
                signature = value.strip()
        if self.signed_chunks:
            if not _SIG.fullmatch(signature):
                raise S3Error("SignatureDoesNotMatch", "The chunk signature is missing or "
                              "malformed.", 403)
            self._chunk_signature = signature
            self._chunk_hash = hashlib.sha256()
        self._remaining = size
        if size == 0:
            self._end_chunk()
            self._state = _TRAILER
        else:
            self._state = _DATA

    def _end_chunk(self) -> None:
        if not self.signed_chunks:
            return
        assert self.verified is not None and self._chunk_hash is not None
        string_to_sign = "\n".join([
            "AWS4-HMAC-SHA256-PAYLOAD", self.verified.timestamp, self.verified.scope,
            self._previous_signature, EMPTY_SHA256, self._chunk_hash.hexdigest()])
        expected = _sign(self.verified.signing_key, string_to_sign)
        if not hmac.compare_digest(expected, self._chunk_signature):
            raise S3Error("SignatureDoesNotMatch", "The request signature we calculated does "
                          "not match the signature you provided. Check your key and signing "
                          "method.", 403, StringToSign=string_to_sign,
                          SignatureProvided=self._chunk_signature)
        self._previous_signature = self._chunk_signature
        self._chunk_hash = None

    def _trailer_line(self, text: str) -> None:
        self._trailer_bytes += len(text) + 2
        if self._trailer_bytes > MAX_TRAILER_BYTES:
            raise invalid_request("The aws-chunked trailer is too long")
        if text == "":
            self._end_trailers()
            self._state = _DONE
            return
        name, colon, value = text.partition(":")
        if not colon:
            raise invalid_request(f"Malformed aws-chunked trailer line {text[:64]!r}")
        self._trailer_lines.append((name.strip().lower(), value.strip()))

    def _end_trailers(self) -> None:
        lines = self._trailer_lines
        if self.mode == STREAMING_SIGNED_TRAILER:
            if not lines or lines[-1][0] != "x-amz-trailer-signature":
                raise S3Error("SignatureDoesNotMatch", "The trailer signature is missing.", 403)
            provided = lines[-1][1].lower()
            lines = lines[:-1]
            assert self.verified is not None
            canonical = "".join(f"{name}:{value}\n" for name, value in lines)
            string_to_sign = "\n".join([
                "AWS4-HMAC-SHA256-TRAILER", self.verified.timestamp, self.verified.scope,
                self._previous_signature, hashlib.sha256(canonical.encode()).hexdigest()])
            expected = _sign(self.verified.signing_key, string_to_sign)
            if not hmac.compare_digest(expected, provided):
                raise S3Error("SignatureDoesNotMatch", "The trailer signature we calculated "
                              "does not match the signature you provided.", 403,
                              StringToSign=string_to_sign, SignatureProvided=provided)
        for name, value in lines:
            if name not in self._declared_trailers:
                raise invalid_request(f"The trailing header {name} was not declared in "
                                       "x-amz-trailer")
            if name in self.trailers:
                raise invalid_request(f"The trailing header {name} was sent twice")
            self.trailers[name] = value

    # -- the end

    def finish(self) -> None:
        """The body has ended: check lengths, hashes and checksums; fill `checksums`."""
        if self._finished:
            return
        self._finished = True
        if self.chunked and self._state != _DONE:
            raise _incomplete("The aws-chunked body ended before its final chunk")
        if self._expected_length is not None and self.decoded_length != self._expected_length:
            raise _incomplete()
        for name in self._declared_trailers:
            if name not in self.trailers:
                raise invalid_request(f"The trailing header {name} declared in "
                                       "x-amz-trailer was not sent")
        if self._sha256 is not None:
            computed = self._sha256.hexdigest()
            if computed != self.mode.lower():
                raise S3Error("XAmzContentSHA256Mismatch", "The provided "
                              "'x-amz-content-sha256' header does not match what was "
                              "computed.", 400, ClientComputedContentSHA256=self.mode,
                              S3ComputedContentSHA256=computed)
        if self._body_md5 is not None:
            md5 = self._body_md5()
            if md5 != self._md5_expected:
                raise S3Error("BadDigest", "The Content-MD5 you specified did not match "
                              "what we received.", 400,
                              ExpectedDigest=base64.b64encode(self._md5_expected).decode(),
                              CalculatedDigest=base64.b64encode(md5).decode())
        if self._algorithm is not None and self._hasher is not None:
            name = _CHECKSUM_PREFIX + self._algorithm
            expected = self._expected_checksum
            if expected is None:
                expected = self._check_checksum_value(self._algorithm, self.trailers[name])
            computed = base64.b64encode(self._hasher.digest()).decode()
            if computed != expected:
                raise S3Error("BadDigest", f"The {name} you specified did not match the "
                              "calculated checksum.", 400)
            self.checksums[self._algorithm] = computed
