"""The S3 REST API over HTTP (aiohttp), on its own port.

One handler takes every request: it finds the bucket and key (path-style
`/bucket/key`, or virtual-host style `bucket.<domain>`), authenticates it
(`sigv4.verify`: header or presigned query; anonymous only for reads of a
public-read bucket), picks the operation from method + subresources, and turns
any `S3Error` into S3's XML error body. Request bodies stream through
`sigv4.PayloadVerifier` (aws-chunked framing, payload hashes, checksums) into a
`BlobWriter`; nothing is committed until the whole body has arrived and checked
out, so a truncated or tampered upload never becomes an object. Every committed
change is handed to `events` without waiting for delivery.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import email.utils
import functools
import itertools
import logging
import os
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TypeVar, cast

from aiohttp import web
from multidict import CIMultiDict

from cloudland.storage import attributes, checksums, cors, s3xml, tagging
from cloudland.storage.errors import (
    S3Error,
    invalid_argument,
    invalid_request,
    no_such_upload,
    precondition_failed,
)
from cloudland.storage.objects import (
    BlobWriter,
    Listed,
    ObjectInfo,
    ObjectStore,
    Upload,
    check_key,
)
from cloudland.storage.pipeline import Pipeline, Stage
from cloudland.storage.s3xml import Node, Raw, document, escape, fragment, iso8601
from cloudland.storage.sigv4 import Credentials, PayloadVerifier, Verified, uri_encode, verify

log = logging.getLogger("cloudland.s3")
T = TypeVar("T")

MAX_METADATA_BYTES = 2048  # user metadata, names and values, as S3 counts it
MAX_OBJECT_BYTES = 5 << 30  # a single PUT (multipart for more)
MAX_XML_BYTES = 2 << 20  # DeleteObjects of 1,000 long keys fits
MAX_DELETE_KEYS = 1000
MAX_PART_NUMBER = 10000
MAX_INT32 = 2**31 - 1  # S3 takes max-parts/max-uploads up to this; a page holds 1,000
CHUNK = 1 << 20
AHEAD_BLOCKS = 8  # an upload's blocks in flight through its stages (~8 MiB held)
BUDGET_BLOCKS = 64  # all uploads' blocks in flight together (~64 MiB held at most)
THREADS = 8  # the S3 server's own threads for disk work
SENDFILE_STALL_MS = 60_000  # a client that reads nothing for this long is gone
IDLE_TIMEOUT_S = 60  # a connection with no request in progress for this long is closed
SMALL_READ = 64 << 10  # smaller reads are done inline: a thread hop costs more than them
RESPONSE_OVERRIDES = (("response-content-type", "Content-Type"),
                      ("response-content-disposition", "Content-Disposition"),
                      ("response-content-encoding", "Content-Encoding"),
                      ("response-content-language", "Content-Language"),
                      ("response-cache-control", "Cache-Control"),
                      ("response-expires", "Expires"))
REGION = re.compile(r"[a-z0-9-]{1,32}")
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
# Subresources S3 has. Only the (subresource, method, of an object?) requests `_route`'s
# table names are served; any other is refused, never mistaken for a plain object or
# bucket request (PUT ?tagging on a bucket must not be taken for CreateBucket).
SUBRESOURCES = frozenset({
    "accelerate", "acl", "analytics", "attributes", "cors", "encryption",
    "intelligent-tiering", "inventory", "legal-hold", "lifecycle", "logging", "metadataTable",
    "metrics", "notification", "object-lock", "ownershipControls", "policy", "policyStatus",
    "publicAccessBlock", "renameObject", "replication", "requestPayment", "restore",
    "retention", "select", "session", "tagging", "torrent", "versioning", "website"})
STORED_HEADERS = ("content-encoding", "content-disposition", "content-language",
                  "cache-control", "expires")

Handler = Callable[["Call"], Awaitable[web.StreamResponse]]
CredentialLookup = Callable[[str], Credentials | None]


class EventSink(Protocol):
    """Where committed changes go (`events.S3Events`); `publish` must not block."""

    def publish(self, kind: str, info: ObjectInfo, *, request_id: str,
                source_ip: str) -> None: ...


@dataclass
class Call:
    """One request, parsed: who sent it, to which bucket and key, with which query."""

    request: web.BaseRequest
    bucket: str
    key: str
    query: Mapping[str, str]
    verified: Verified | None
    request_id: str

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def headers(self) -> Any:
        return self.request.headers


def check_bucket_name(name: str) -> str:
    if (not BUCKET_NAME.match(name) or ".." in name or IP_ADDRESS.match(name)
            or name.startswith("xn--") or name.endswith("-s3alias")):
        raise S3Error("InvalidBucketName", "The specified bucket is not valid: bucket names "
                      "are 3-63 characters of lowercase letters, digits, dots and hyphens, "
                      "starting and ending with a letter or digit", 400, BucketName=name)
    return name


def http_date(when: float) -> str:
    return _http_date(int(when))


@functools.lru_cache(maxsize=4096)
def _http_date(seconds: int) -> str:  # objects are often read many times: format once
    return email.utils.formatdate(seconds, usegmt=True)


def quoted(etag: str) -> str:
    return f'"{etag}"'


def unquote_etag(value: str) -> str:
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def _etag_matches(header: str, etag: str) -> bool:
    return any(v.strip() == "*" or unquote_etag(v) == etag for v in header.split(","))


def _parse_http_date(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed.timestamp() if parsed else None


def read_conditions(headers: Mapping[str, str], info: ObjectInfo | None, *,
                    prefix: str = "if-", for_read: bool = True) -> int | None:
    """RFC 7232 preconditions as S3 applies them: 412 raised, 304 returned (reads)."""
    if_match = headers.get(f"{prefix}match")
    if_none = headers.get(f"{prefix}none-match")
    since = headers.get(f"{prefix}modified-since")
    unmodified = headers.get(f"{prefix}unmodified-since")
    if if_match is not None:
        if info is None or not _etag_matches(if_match, info.etag):
            raise precondition_failed("If-Match")
    elif unmodified is not None and info is not None:
        when = _parse_http_date(unmodified)
        if when is not None and int(info.last_modified) > when:
            raise precondition_failed("If-Unmodified-Since")
    if if_none is not None and info is not None and _etag_matches(if_none, info.etag):
        if for_read:
            return 304
        raise precondition_failed("If-None-Match")
    if if_none is None and since is not None and info is not None:
        when = _parse_http_date(since)
        if when is not None and int(info.last_modified) <= when:
            if for_read:
                return 304
            raise precondition_failed("If-Modified-Since")
    return None


def write_check(headers: Mapping[str, str]) -> Callable[[ObjectInfo | None], None] | None:
    """If-Match / If-None-Match on a write, checked against the current object inside
    the store's commit transaction (so two writers cannot both pass)."""
    if_match, if_none = headers.get("if-match"), headers.get("if-none-match")
    if if_match is None and if_none is None:
        return None

    def check(current: ObjectInfo | None) -> None:
        if if_match is not None and (current is None or not _etag_matches(if_match,
                                                                          current.etag)):
            raise precondition_failed("If-Match")
        if if_none is not None and current is not None and _etag_matches(if_none,
                                                                         current.etag):
            raise precondition_failed("If-None-Match")
    return check


def user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    meta = {k.lower()[len("x-amz-meta-"):]: v for k, v in headers.items()
            if k.lower().startswith("x-amz-meta-")}
    size = sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())
    if size > MAX_METADATA_BYTES:
        raise S3Error("MetadataTooLarge", "Your metadata headers exceed the maximum allowed "
                      "metadata size", 400, Size=str(size), MaxSizeAllowed=str(MAX_METADATA_BYTES))
    return meta


def stored_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The representation headers kept with an object; `aws-chunked` is how the body
    travelled, not what it is, so it is dropped from Content-Encoding."""
    kept = {h: headers[h] for h in STORED_HEADERS if h in headers}
    if "content-encoding" in kept:
        codings = [c.strip() for c in kept["content-encoding"].split(",")
                   if c.strip() and c.strip().lower() != "aws-chunked"]
        if codings:
            kept["content-encoding"] = ", ".join(codings)
        else:
            del kept["content-encoding"]
    return kept


def signed_headers(call: Call) -> CIMultiDict[str]:
    """The headers that describe the object: as sent, plus the values the signature
    covers but the client did not send (a SigV2 presigned URL carries Content-Type,
    Content-MD5 and x-amz-* in its query, and a client using it sends only the body)."""
    headers: CIMultiDict[str] = CIMultiDict(call.headers)
    if call.verified is None:
        return headers
    for name, value in call.verified.signed_values.items():
        if name not in headers:
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise invalid_argument(f"{name} must not contain control characters", name)
            headers[name] = value
    return headers


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """'bytes=a-b' -> (start, end inclusive); None to serve the whole object (a range
    S3 ignores: malformed or several); InvalidRange 416 if it cannot be satisfied."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
    if not match or (not match.group(1) and not match.group(2)):
        return None
    if size == 0:
        raise _invalid_range(size)  # nothing in an empty object can be a range
    first, last = match.group(1), match.group(2)
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            raise _invalid_range(size)
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise _invalid_range(size)
    return start, end


def _invalid_range(size: int) -> S3Error:
    return S3Error("InvalidRange", "The requested range is not satisfiable", 416,
                   ActualObjectSize=str(size))


class S3Server:
    """The S3 API on `host:port` for one `ObjectStore`."""

    def __init__(self, store: ObjectStore, credentials: CredentialLookup, *,
                 host: str = "127.0.0.1", port: int = 0, domain: str = "localhost",
                 region: str = "us-east-1", events: EventSink | None = None,
                 max_connections: int = 1024) -> None:
        self.store = store
        self.max_connections = max_connections
        self.credentials = credentials
        self.host, self.port = host, port
        self.domain = domain
        self.region = region
        self.events = events
        self._runner: web.BaseRunner | None = None
        # Disk work (fsyncs, hashing, big reads, multipart joins) gets threads of its own,
        # so a burst of uploads cannot starve the rest of CloudLand's default executor.
        self._pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="s3")
        self._budget = asyncio.Semaphore(BUDGET_BLOCKS)
        # Request ids: unique per server run, no system call per request.
        self._id_prefix = secrets.token_hex(4).upper()
        self._ids = itertools.count(1)
        self._served = self._subresources()  # built once, not per request

    def _thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Awaitable[T]:
        """Run blocking storage work on the S3 server's own threads."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        # aiohttp's low-level server: every request goes to the one handler, without an
        # application's router and middleware machinery on the way (S3's hot path).
        server = _BoundedServer(self.handle, limit=self.max_connections, access_log=None,
                                max_line_size=16384, max_field_size=16384,
                                keepalive_timeout=IDLE_TIMEOUT_S)
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        listening = site._server
        if listening is not None and self.port == 0:
            sockets = getattr(listening, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    # ---- the one handler --------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        request_id = f"{self._id_prefix}{next(self._ids):08X}"
        resource = request.rel_url.raw_path
        try:
            await _continue(request)
            call = self._call(request, request_id)
            response = await self._dispatch(call)
        except S3Error as err:
            if request.method == "HEAD":  # no body: the status and headers say it
                response = web.Response(status=err.status)
            else:
                err.resource = err.resource or urllib.parse.unquote(resource)
                response = web.Response(status=err.status,
                                        body=s3xml.error_document(err, request_id),
                                        content_type="application/xml")
            if err.code == "InvalidRange" and "ActualObjectSize" in err.extra:
                response.headers["Content-Range"] = f"bytes */{err.extra['ActualObjectSize']}"
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:  # a bug: log it, answer S3's InternalError, keep serving
            log.exception("S3 %s %s failed", request.method, resource)
            response = web.Response(status=500, content_type="application/xml",
                                    body=s3xml.error_document(S3Error(
                                        "InternalError", "We encountered an internal error. "
                                        "Please try again.", 500), request_id))
        response.headers["x-amz-request-id"] = request_id
        response.headers.setdefault("Server", "CloudLand")
        if "Origin" in request.headers and not response.prepared:  # errors too: a browser
            response.headers.update(self._cors_headers(request))  # may then read them
        return response

    def _call(self, request: web.BaseRequest, request_id: str) -> Call:
        raw_path = request.rel_url.raw_path
        raw_query = request.rel_url.raw_query_string
        query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        bucket, key, virtual = self._locate(request, raw_path)
        verified = None if request.method == "OPTIONS" else verify(  # preflights are never
            request.method, raw_path, raw_query, request.headers,  # signed
            self.credentials, virtual_bucket=bucket if virtual else None)
        return Call(request, bucket, key, query, verified, request_id)

    def _locate(self, request: web.BaseRequest, raw_path: str) -> tuple[str, str, bool]:
        """(bucket, key, virtual-host style?) of a request."""
        host = (request.headers.get("Host") or "").rsplit(":", 1)[0].lower()
        suffix = "." + self.domain
        path = urllib.parse.unquote(raw_path[1:] if raw_path.startswith("/") else raw_path)
        if host.endswith(suffix) and host != self.domain:
            return host[: -len(suffix)], path, True
        bucket, _, key = path.partition("/")
        return bucket, key, False

    async def _dispatch(self, call: Call) -> web.StreamResponse:
        if call.method == "OPTIONS":
            return self._preflight(call)
        if not call.bucket:
            if call.method != "GET":
                raise S3Error("MethodNotAllowed", "The specified method is not allowed "
                              "against this resource.", 405)
            self._authorize(call, public=False)
            return self._list_buckets(call)
        if call.method == "PUT" and not call.key:
            check_bucket_name(call.bucket)
        handler = self._route(call)
        return await handler(call)

    def _subresources(self) -> dict[tuple[str, str, bool], Handler]:
        """The subresource requests served: (subresource, method, of an object?)."""
        gpd = ("GET", "PUT", "DELETE")
        return {("versioning", "GET", False): self._versioning,
                ("attributes", "GET", True): self._object_attributes,
                **{("cors", m, False): self._bucket_cors for m in gpd},
                **{("tagging", m, True): self._object_tagging for m in gpd}}

    def _route(self, call: Call) -> Handler:
        q, m = call.query, call.method
        named = sorted(SUBRESOURCES.intersection(q))
        if named:
            handler = self._served.get((named[0], m, bool(call.key))) \
                if len(named) == 1 else None
            if handler is None:
                raise S3Error("NotImplemented", "A header or query you provided implies "
                              "functionality that is not implemented", 501,
                              Subresource=named[0])
            return handler
        if not call.key:
            table: dict[str, Handler] = {"PUT": self._create_bucket,
                                         "DELETE": self._delete_bucket,
                                         "HEAD": self._head_bucket}
            if m == "GET":
                if "location" in q:
                    return self._location
                if "uploads" in q:
                    return self._list_uploads
                if "versions" in q:
                    return self._list_versions
                return self._list_objects
            if m == "POST" and "delete" in q:
                return self._delete_objects
            if m in table:
                return table[m]
        else:
            if m == "PUT":
                if "partNumber" in q or "uploadId" in q:
                    return self._upload_part
                return self._copy_object if "x-amz-copy-source" in call.headers \
                    else self._put_object
            if m in ("GET", "HEAD"):
                return self._list_parts if "uploadId" in q and m == "GET" else self._get_object
            if m == "DELETE":
                return self._abort_upload if "uploadId" in q else self._delete_object
            if m == "POST":
                if "uploads" in q:
                    return self._create_upload
                if "uploadId" in q:
                    return self._complete_upload
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this "
                      "resource.", 405, Method=m, ResourceType="OBJECT" if call.key else "BUCKET")

    def _authorize(self, call: Call, *, public: bool) -> None:
        """Signed requests pass (verify checked them); anonymous ones only read public data."""
        if call.verified is not None:
            return
        if public and call.method in ("GET", "HEAD"):
            try:
                if self.store.bucket(call.bucket).public_read:
                    return
            except S3Error:
                pass
        raise S3Error("AccessDenied", "Access Denied: sign the request with a CloudLand "
                      "access key (cloudland keys create)", 403)

    # ---- service and buckets ---------------------------------------------------------

    def _list_buckets(self, call: Call) -> web.Response:
        q = call.query
        limit = _int_arg(q, "max-buckets", 10000, 1, 10000)
        after = _token(q.get("continuation-token", ""))
        buckets, truncated = self.store.list_buckets(prefix=q.get("prefix", ""),
                                                     start_after=after, max_buckets=limit)
        nodes: list[Node] = [
            ("Buckets", [("Bucket", [("Name", b.name), ("CreationDate", iso8601(b.created)),
                                     ("BucketRegion", b.region)]) for b in buckets]),
            ("Owner", [("ID", "cloudland"), ("DisplayName", "cloudland")]),
        ]
        if truncated and buckets:
            nodes.append(("ContinuationToken", _make_token(buckets[-1].name)))
        if q.get("prefix"):
            nodes.append(("Prefix", q["prefix"]))
        return _xml(document("ListAllMyBucketsResult", nodes))

    async def _create_bucket(self, call: Call) -> web.Response:
        self._authorize(call, public=False)
        body = await _small_body(call)
        region = self.region
        if body.strip():
            root = s3xml.parse(body)
            region = (s3xml.child_text(root, "LocationConstraint") or "").strip() or self.region
            if not REGION.fullmatch(region):
                raise S3Error("InvalidLocationConstraint", "The specified location-constraint "
                              "is not valid", 400, LocationConstraint=region[:64])
        await self._thread(self.store.create_bucket, call.bucket, region=region)
        if call.headers.get("x-amz-acl") == "public-read":
            self.store.set_public_read(call.bucket, True)
        return web.Response(status=200, headers={"Location": f"/{call.bucket}"})

    async def _delete_bucket(self, call: Call) -> web.Response:
        self._authorize(call, public=False)
        await self._thread(self.store.delete_bucket, call.bucket)
        return web.Response(status=204)

    async def _head_bucket(self, call: Call) -> web.Response:
        self._authorize(call, public=True)
        info = self.store.bucket(call.bucket)
        return web.Response(status=200, headers={"x-amz-bucket-region": info.region})

    async def _location(self, call: Call) -> web.Response:
        self._authorize(call, public=False)
        info = self.store.bucket(call.bucket)
        region = None if info.region == "us-east-1" else info.region
        return _xml(s3xml.text_document("LocationConstraint", region))

    async def _versioning(self, call: Call) -> web.Response:
        """Versioning is never enabled: an empty configuration says so."""
        self._authorize(call, public=False)
        self.store.bucket(call.bucket)
        return _xml(document("VersioningConfiguration", []))

    # ---- CORS ------------------------------------------------------------------------

    async def _bucket_cors(self, call: Call) -> web.Response:
        """PutBucketCors, GetBucketCors and DeleteBucketCors."""
        self._authorize(call, public=False)
        rules = self.store.bucket(call.bucket).cors
        if call.method == "GET":
            if rules is None:
                raise cors.no_configuration(call.bucket)
            return _xml(cors.document(rules))
        if call.method == "PUT":
            await self._thread(self.store.set_cors, call.bucket,
                               cors.parse(await _small_body(call)))
            return web.Response(status=200)
        await self._thread(self.store.set_cors, call.bucket, None)
        return web.Response(status=204)

    def _preflight(self, call: Call) -> web.Response:
        """A browser's OPTIONS before a cross-origin request: answered from the bucket's
        rules, before and without any signature check."""
        try:
            rules, exists = self.store.bucket(call.bucket).cors, True
        except S3Error:
            rules, exists = None, False
        return web.Response(status=200, headers=cors.preflight(
            rules, bucket_exists=exists, has_key=bool(call.key), headers=call.headers))

    def _cors_headers(self, request: web.BaseRequest) -> dict[str, str]:
        """The CORS headers for a request carrying an Origin (none when no rule allows it;
        a preflight's answer has its own). Worked out once per request: an object's
        answer asks in `_object_headers` (it may be sent before `handle` sees it), and
        `handle` asks again for any other answer."""
        if "cors" not in request:
            request["cors"] = self._cors_for(request)
        return cast(dict[str, str], request["cors"])

    def _cors_for(self, request: web.BaseRequest) -> dict[str, str]:
        if request.method == "OPTIONS":
            return {}
        bucket, _, _ = self._locate(request, request.rel_url.raw_path)
        try:
            rules = self.store.bucket(bucket).cors
        except S3Error:
            return {}
        return cors.actual(rules, request.method, request.headers)

    # ---- listing ---------------------------------------------------------------------

    async def _list_objects(self, call: Call) -> web.Response:
        self._authorize(call, public=True)
        q = call.query
        v2 = q.get("list-type") == "2"
        if "list-type" in q and not v2:
            raise invalid_argument("Invalid List Type specified", "list-type", q["list-type"])
        encode = _encoder(q)
        limit = _int_arg(q, "max-keys", 1000, 0, None)
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        if v2:
            token = q.get("continuation-token")
            after = _token(token) if token is not None else q.get("start-after", "")
        else:
            after = q.get("marker", "")
        page = await self._thread(self.store.list_objects, call.bucket, prefix=prefix,
                                  delimiter=delimiter, start_after=after,
                                  max_keys=min(limit, 1000))
        owner = v2 is False or q.get("fetch-owner") == "true"
        nodes: list[Node] = [("Name", call.bucket), ("Prefix", encode(prefix))]
        if v2:
            nodes += [("StartAfter", encode(q["start-after"]) if "start-after" in q else None),
                      ("ContinuationToken", q.get("continuation-token")),
                      ("KeyCount", len(page.objects) + len(page.common_prefixes))]
            if page.truncated:
                nodes.append(("NextContinuationToken", _make_token(page.next_after)))
        else:
            nodes.append(("Marker", encode(q.get("marker", ""))))
            if page.truncated and delimiter:
                nodes.append(("NextMarker", encode(page.next_after)))
        nodes += [("MaxKeys", limit), ("Delimiter", encode(delimiter) if delimiter else None),
                  ("IsTruncated", page.truncated),
                  ("EncodingType", q.get("encoding-type"))]
        nodes += [("Contents", _listed_xml(o, encode, owner=owner)) for o in page.objects]
        nodes += [("CommonPrefixes", [("Prefix", encode(p))]) for p in page.common_prefixes]
        return _xml(document("ListBucketResult", nodes))

    async def _list_versions(self, call: Call) -> web.Response:
        """Versioning is off: every object has one version, 'null', and it is the latest."""
        self._authorize(call, public=True)
        q = call.query
        encode = _encoder(q)
        limit = _int_arg(q, "max-keys", 1000, 0, None)
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        page = await self._thread(self.store.list_objects, call.bucket, prefix=prefix,
                                  delimiter=delimiter, start_after=q.get("key-marker", ""),
                                  max_keys=min(limit, 1000))
        nodes: list[Node] = [
            ("Name", call.bucket), ("Prefix", encode(prefix)),
            ("KeyMarker", encode(q.get("key-marker", ""))),
            ("VersionIdMarker", q.get("version-id-marker", "")), ("MaxKeys", limit),
            ("Delimiter", encode(delimiter) if delimiter else None),
            ("IsTruncated", page.truncated), ("EncodingType", q.get("encoding-type"))]
        if page.truncated:
            nodes += [("NextKeyMarker", encode(page.next_after)), ("NextVersionIdMarker", "null")]
        nodes += [("Version", _listed_xml(o, encode, owner=True, version=True))
                  for o in page.objects]
        nodes += [("CommonPrefixes", [("Prefix", encode(p))]) for p in page.common_prefixes]
        return _xml(document("ListVersionsResult", nodes))

    # ---- objects ---------------------------------------------------------------------

    async def _put_object(self, call: Call) -> web.StreamResponse:
        self._authorize(call, public=False)
        check_key(call.key)
        self.store.bucket(call.bucket)  # NoSuchBucket before reading a body
        described = signed_headers(call)
        meta = user_metadata(described)
        tags = tagging.from_request(described, call.query)
        writer, verifier = await self._receive(call, MAX_OBJECT_BYTES, described)
        # Off the event loop: a commit fsyncs the blob, its directory and SQLite.
        info = await self._thread(
            self.store.commit, call.bucket, call.key, writer,
            content_type=described.get("content-type") or "binary/octet-stream",
            metadata=meta, headers=stored_headers(described),
            checksums=verifier.checksums, tags=tags, check=write_check(call.headers))
        self._publish("ObjectCreated:Put", info, call)
        return web.Response(status=200, headers={"ETag": quoted(info.etag),
                                                 **checksums.response_headers(info.checksums)})

    async def _receive(self, call: Call, limit: int, described: CIMultiDict[str],
                       checksums: tuple[str, ...] = ()) -> tuple[BlobWriter, PayloadVerifier]:
        """Stream the body through the signature checks into a new blob; abort on error.
        `described` is `signed_headers(call)`: what the body is checked against (for a
        SigV2 presigned URL, the Content-MD5 and checksums in its query count as if sent
        as headers)."""
        request = call.request
        if (request.content_length is None and "chunked" not in
                request.headers.get("Transfer-Encoding", "").lower()):
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP "
                          "header.", 411)
        decoded = call.headers.get("x-amz-decoded-content-length")
        if decoded is not None and not decoded.strip().isdigit():
            raise invalid_argument("x-amz-decoded-content-length must be a number of bytes",
                                   "x-amz-decoded-content-length", decoded[:64])
        declared = int(decoded or request.content_length or 0)
        if declared > limit:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed "
                          "size", 400, ProposedSize=str(declared), MaxSizeAllowed=str(limit))
        writer = self.store.writer(checksums)
        verifier = PayloadVerifier(call.verified, described, body_md5=writer.md5_bytes)
        content = request.content
        # Blocks of about CHUNK go through the stages (_stages) on the S3 threads while
        # the loop reads the next ones; pieces are passed as received (a list), never
        # joined or copied.
        pipeline = Pipeline(self._pool, _stages(verifier, writer, limit), ahead=AHEAD_BLOCKS,
                            budget=self._budget)
        try:
            with contextlib.suppress(AttributeError):  # aiohttp >= 3.14: buffer a block
                content.set_read_chunk_size(CHUNK)
            pieces: list[bytes] = []
            size = 0
            while True:
                piece, _ = await content.readchunk()
                if piece:
                    pieces.append(piece)
                    size += len(piece)
                    if size < CHUNK:
                        continue
                elif not content.at_eof():
                    continue  # the end of an HTTP chunk, not of the body
                if not piece and size <= SMALL_READ and not pipeline.pushed:
                    # A small body (or the tail of one): not worth a thread hop.
                    _absorb(verifier, writer, pieces, limit)
                    break
                if pieces:
                    await pipeline.push(pieces)
                if not piece:
                    break
                pieces, size = [], 0
            await pipeline.finish()
            if request.content_length is not None and \
                    content.total_bytes < request.content_length:
                raise _incomplete(request.content_length, content.total_bytes)
            verifier.finish()
        except BaseException as exc:
            try:  # let the threads finish with the file before removing it (also when
                # this handler was cancelled: a cancelled wait does not stop a thread)
                await pipeline.stop()
            finally:
                writer.abort()
            if isinstance(exc, ConnectionResetError):  # the client hung up mid-body
                raise _incomplete(request.content_length or declared,
                                  content.total_bytes) from None
            raise
        return writer, verifier

    async def _get_object(self, call: Call) -> web.StreamResponse:
        self._authorize(call, public=True)
        _check_version(call.query)
        # Reads go to the S3 threads too: one indexed read is ~10 µs, but a cold page
        # read from disk on the loop would stall every other request meanwhile.
        if call.method == "HEAD":  # the row is all a HEAD needs
            info = await self._thread(self.store.head, call.bucket, call.key, body=False)
            return await self._send_object(call, info, None)
        # The row and the body in one step (a small body is in the row; a file is opened
        # by open_object, which also copes with a PUT replacing it meanwhile).
        info, blob = await self._thread(self.store.open_object, call.bucket, call.key)
        try:
            return await self._send_object(call, info, blob)
        finally:
            blob.close()

    async def _object_attributes(self, call: Call) -> web.Response:
        """GetObjectAttributes: what `attributes.document` says of the object."""
        self._authorize(call, public=True)
        _check_version(call.query)
        wanted = attributes.requested(call.headers.getall(attributes.HEADER, ()))
        max_parts = min(_int_arg(call.headers, "x-amz-max-parts", 1000, 0, None), 1000)
        marker = _int_arg(call.headers, "x-amz-part-number-marker", 0, 0, MAX_PART_NUMBER)
        info = await self._thread(self.store.head, call.bucket, call.key, body=False)
        response = _xml(attributes.document(info, wanted, max_parts=max_parts, marker=marker))
        response.headers["Last-Modified"] = http_date(info.last_modified)
        return response

    async def _object_tagging(self, call: Call) -> web.Response:
        """GetObjectTagging, PutObjectTagging (replaces the whole set) and
        DeleteObjectTagging. Versioning is off, so each answers `x-amz-version-id: null`,
        as S3 does for an unversioned bucket."""
        self._authorize(call, public=False)
        _check_version(call.query)
        version = {"x-amz-version-id": "null"}
        if call.method == "GET":
            info = await self._thread(self.store.head, call.bucket, call.key, body=False)
            response = _xml(tagging.document(info.tags))
            response.headers.update(version)
            return response
        putting = call.method == "PUT"
        tags = tagging.parse(await _small_body(call)) if putting else {}
        info = await self._thread(self.store.set_tags, call.bucket, call.key, tags)
        self._publish("ObjectTagging:Put" if putting else "ObjectTagging:Delete", info, call)
        return web.Response(status=200 if putting else 204, headers=version)

    async def _send_object(self, call: Call, info: ObjectInfo,
                           blob: BinaryIO | None) -> web.StreamResponse:
        """The object's headers, and for a GET (`blob` open) the body or a range of it."""
        status = read_conditions(call.headers, info)
        headers = self._object_headers(info, call)
        if status == 304:
            return web.Response(status=304, headers={k: v for k, v in headers.items()
                                                     if k in ("ETag", "Last-Modified")})
        checksum_mode = call.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED"
        picked = self._partial(call, info)
        start, end = (0, info.size - 1) if picked is None else picked[:2]
        if picked is not None:
            headers.update(_partial_headers(info, *picked, checksum_mode=checksum_mode))
        elif checksum_mode:
            headers.update(checksums.response_headers(info.checksums))
        length = max(0, end - start + 1)
        headers["Content-Length"] = str(length)
        status = 200 if picked is None else 206
        if blob is None:  # HEAD
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(call.request)
            return response
        blob.seek(start)
        if length <= SMALL_READ or info.inline is not None:
            # Small, or already in memory: headers and body in one write.
            return web.Response(status=status, headers=headers, body=blob.read(length))
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(call.request)
        sent = await self._sendfile(call.request, blob, start, length)
        blob.seek(start + sent)
        remaining = length - sent
        while remaining > 0:
            data = await self._thread(blob.read, min(CHUNK, remaining)) \
                if remaining > SMALL_READ else blob.read(remaining)
            if not data:
                break
            await response.write(data)
            remaining -= len(data)
        await response.write_eof()
        return response

    async def _sendfile(self, request: web.BaseRequest, blob: BinaryIO, start: int,
                        length: int) -> int:
        """Send `length` bytes of `blob` from `start` straight from the page cache to the
        socket (sendfile); how many were sent. 0 when it cannot be used (no socket, TLS,
        a file without a descriptor, headers still buffered), and the caller writes the
        rest the ordinary way.

        The sendfile calls run on an S3 thread (a cold page cache means disk reads), but
        only while the socket takes bytes: when it is full the thread is given back and
        the loop waits for room. A client that reads slowly, or stops, holds no thread
        (with threads waiting on sockets, a few such clients would stop every request).
        """
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        try:
            file_fd = blob.fileno()
        except (OSError, ValueError):  # e.g. an in-memory body
            return 0
        if sock is None or transport is None or transport.get_write_buffer_size() \
                or transport.get_extra_info("sslcontext") is not None:  # TLS: bytes must
            return 0  # go through the transport to be encrypted
        # Descriptors of our own, closed when no thread uses them any more (also if this
        # handler is cancelled first): the connection or the file may be closed meanwhile
        # and their numbers reused, but these still name this socket and this file.
        out, source = os.dup(sock.fileno()), os.dup(file_fd)
        running: concurrent.futures.Future[int] | None = None
        sent = 0
        try:
            while sent < length:
                running = self._pool.submit(_sendfile_some, out, source, start + sent,
                                            length - sent)
                n = await asyncio.wrap_future(running)
                running = None
                if n < 0:  # the file is shorter than its row says
                    break
                sent += n
                if sent < length:
                    await _writable(out, SENDFILE_STALL_MS / 1000)
        finally:
            if running is not None and not running.done():
                running.add_done_callback(lambda _: _close_all(out, source))
            else:
                _close_all(out, source)
        return sent

    def _partial(self, call: Call, info: ObjectInfo) -> tuple[int, int, int | None] | None:
        """What part of the object a GET or HEAD asks for: (first byte, last byte, part
        number or None for a Range), or None for the whole of it."""
        part = call.query.get("partNumber")
        if part is None:
            picked = parse_range(call.headers["Range"], info.size) \
                if "Range" in call.headers else None
            return None if picked is None else (*picked, None)
        if "Range" in call.headers:
            raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber "
                          "query parameter", 400)
        number = _int_value(part, "partNumber", 1, MAX_PART_NUMBER)
        return (*self._part_range(info, number), number)

    def _part_range(self, info: ObjectInfo, number: int) -> tuple[int, int]:
        sizes = info.parts or [info.size]
        if number > len(sizes):
            raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable",
                          416, PartNumberRequested=str(number),
                          ActualPartCount=str(len(sizes)))
        start = sum(sizes[: number - 1])
        return start, start + sizes[number - 1] - 1

    def _object_headers(self, info: ObjectInfo, call: Call) -> dict[str, str]:
        headers = {"ETag": quoted(info.etag), "Last-Modified": http_date(info.last_modified),
                   "Content-Type": info.content_type, "Accept-Ranges": "bytes",
                   **{h.title(): v for h, v in info.headers.items()},
                   **{f"x-amz-meta-{k}": v for k, v in info.metadata.items()}}
        if info.tags:
            headers[tagging.COUNT_HEADER] = str(len(info.tags))
        for param, header in RESPONSE_OVERRIDES:
            if param not in call.query:
                continue
            if call.verified is None:  # as S3: an anonymous reader cannot restyle objects
                raise S3Error("InvalidRequest", "Request specific response headers cannot be "
                              "used for anonymous GET requests.", 400)
            value = call.query[param]
            if any(c in value for c in "\r\n\0"):
                raise invalid_argument(f"{param} must not contain line breaks", param)
            headers[header] = value
        headers["X-Content-Type-Options"] = "nosniff"
        if "Origin" in call.headers:  # a response prepared here is past `handle`'s reach
            headers.update(self._cors_headers(call.request))
        # Also set by `handle`, but too late for a response already prepared (a HEAD's,
        # a streamed body's): its headers have left by then.
        headers["x-amz-request-id"] = call.request_id
        headers["Server"] = "CloudLand"
        return headers

    async def _delete_object(self, call: Call) -> web.Response:
        self._authorize(call, public=False)
        _check_version(call.query)
        gone = await self._thread(self.store.delete, call.bucket, call.key)
        if gone is not None:
            self._publish("ObjectRemoved:Delete", gone, call)
        return web.Response(status=204)

    async def _delete_objects(self, call: Call) -> web.Response:
        self._authorize(call, public=False)
        self.store.bucket(call.bucket)
        root = s3xml.parse(await _small_body(call))
        if root.tag != "Delete":
            raise s3xml.malformed("the root element must be Delete")
        objects = root.findall("Object")
        if not objects or len(objects) > MAX_DELETE_KEYS:
            raise s3xml.malformed(f"a Delete request names 1 to {MAX_DELETE_KEYS} objects")
        quiet = (s3xml.child_text(root, "Quiet") or "").strip().lower() == "true"
        keys = [s3xml.child_text(obj, "Key") or "" for obj in objects]
        outcomes = await self._thread(self._delete_each, call.bucket, keys)
        nodes: list[Node] = []
        for key, outcome in zip(keys, outcomes, strict=True):
            if isinstance(outcome, S3Error):
                nodes.append(("Error", [("Key", key), ("Code", outcome.code),
                                        ("Message", outcome.message)]))
                continue
            if outcome is not None:
                self._publish("ObjectRemoved:Delete", outcome, call)
            if not quiet:
                nodes.append(("Deleted", [("Key", key)]))
        return _xml(document("DeleteResult", nodes))

    def _delete_each(self, bucket: str, keys: list[str]) -> list[ObjectInfo | S3Error | None]:
        """Delete each key (blocking; in a thread): what was deleted, or why not."""
        outcomes: list[ObjectInfo | S3Error | None] = []
        for key in keys:
            try:
                outcomes.append(self.store.delete(bucket, check_key(key)))
            except S3Error as err:
                outcomes.append(err)
        return outcomes

    async def _copy_object(self, call: Call) -> web.Response:
        self._authorize(call, public=False)
        check_key(call.key)
        source = await self._copy_source(call)
        read_conditions(call.headers, source, prefix="x-amz-copy-source-if-", for_read=False)
        directive = call.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise invalid_argument("Unknown metadata directive.", "x-amz-metadata-directive",
                                   directive)
        if (source.bucket, source.key) == (call.bucket, call.key) and directive == "COPY":
            raise S3Error("InvalidRequest", "This copy request is illegal because it is trying "
                          "to copy an object to itself without changing the object's metadata, "
                          "storage class, website redirect location or encryption attributes.",
                          400)
        replace = directive == "REPLACE"
        tags_directive = call.headers.get(tagging.DIRECTIVE, "COPY").upper()
        if tags_directive not in ("COPY", "REPLACE"):
            raise invalid_argument("Unknown tagging directive.", tagging.DIRECTIVE,
                                   tags_directive)
        tags = None  # the source's
        if tags_directive == "REPLACE":
            tags = tagging.from_request(call.headers, call.query) or {}
        info = await self._thread(
            self.store.copy, source, call.bucket, call.key,
            content_type=(call.headers.get("Content-Type") or "binary/octet-stream")
            if replace else None,
            metadata=user_metadata(call.headers) if replace else None,
            headers=stored_headers(call.headers) if replace else None,
            checksums=await self._copy_checksums(call, source), tags=tags,
            check=write_check(call.headers))
        self._publish("ObjectCreated:Copy", info, call)
        return _xml(document("CopyObjectResult", [
            ("LastModified", iso8601(info.last_modified)), ("ETag", quoted(info.etag)),
            *checksums.xml_nodes(info.checksums, with_type=True)]))

    async def _copy_checksums(self, call: Call, source: ObjectInfo) -> dict[str, str] | None:
        """The checksum x-amz-checksum-algorithm asks a copy for, computed from the bytes
        unless the source has it already (whole); None to keep the source's."""
        wanted = call.headers.get("x-amz-checksum-algorithm")
        if wanted is None:
            return None
        name = checksums.named(wanted)
        value = source.checksums.get(name)
        if value is not None and checksums.checksum_type(value) == checksums.FULL_OBJECT:
            return {name: value}

        def compute() -> str:
            with self.store.open_blob(source) as blob:
                return checksums.of_file(name, blob)
        return {name: await self._thread(compute)}

    async def _copy_source(self, call: Call) -> ObjectInfo:
        raw = call.headers["x-amz-copy-source"]
        path, _, version = raw.partition("?")
        if version and version not in ("versionId=null", ""):
            raise S3Error("NoSuchVersion", "The specified version does not exist.", 404)
        bucket, _, key = urllib.parse.unquote(path).lstrip("/").partition("/")
        if not bucket or not key:
            raise invalid_argument("Copy Source must mention the source bucket and key: "
                                   "sourcebucket/sourcekey", "x-amz-copy-source", raw)
        return await self._thread(self.store.head, bucket, key)

    # ---- multipart -------------------------------------------------------------------

    async def _upload_of(self, call: Call) -> Upload:
        """The upload `uploadId` names, which must be one of this bucket and key."""
        upload_id = call.query.get("uploadId", "")
        upload = await self._thread(self.store.upload, upload_id)
        if (upload.bucket, upload.key) != (call.bucket, call.key):
            raise no_such_upload(upload_id)
        return upload

    async def _create_upload(self, call: Call) -> web.Response:
        self._authorize(call, public=False)
        check_key(call.key)
        self.store.bucket(call.bucket)
        upload_id = self.store.create_upload(
            call.bucket, call.key,
            content_type=call.headers.get("Content-Type") or "binary/octet-stream",
            metadata=user_metadata(call.headers), headers=stored_headers(call.headers),
            checksums_algorithm=call.headers.get("x-amz-checksum-algorithm"),
            checksum_type=call.headers.get("x-amz-checksum-type"),
            tags=tagging.from_request(call.headers, call.query))
        response = _xml(document("InitiateMultipartUploadResult", [
            ("Bucket", call.bucket), ("Key", call.key), ("UploadId", upload_id)]))
        upload = self.store.upload(upload_id)
        if upload.checksums_algorithm and upload.checksum_type:
            response.headers["x-amz-checksum-algorithm"] = upload.checksums_algorithm.upper()
            response.headers["x-amz-checksum-type"] = upload.checksum_type
        return response

    async def _upload_part(self, call: Call) -> web.Response:
        self._authorize(call, public=False)
        number = _int_value(call.query.get("partNumber", ""), "partNumber", 1, MAX_PART_NUMBER)
        upload = await self._upload_of(call)
        if "x-amz-copy-source" in call.headers:
            return await self._upload_part_copy(call, upload, number)
        # The upload's algorithm is computed whatever the request says (a client may
        # send no checksum of a part): the object's checksum is made of all of them.
        algorithm = upload.checksums_algorithm
        wanted = (algorithm,) if algorithm else ()
        writer, verifier = await self._receive(call, MAX_OBJECT_BYTES, signed_headers(call),
                                               wanted)
        sent = next(iter(verifier.checksums), None)
        if algorithm and sent is not None and sent != algorithm:
            writer.abort()
            raise invalid_request(f"Checksum Type mismatch occurred, expected checksum Type: "
                                  f"{algorithm}, actual checksum Type: {sent}")
        part = await self._thread(self.store.put_part, upload.id, number, writer,
                                  checksums={**writer.digests(), **verifier.checksums})
        headers = {"ETag": quoted(part.etag)}
        headers.update({f"x-amz-checksum-{a}": v for a, v in part.checksums.items()})
        return web.Response(status=200, headers=headers)

    async def _upload_part_copy(self, call: Call, upload: Upload,
                                number: int) -> web.Response:
        source = await self._copy_source(call)
        read_conditions(call.headers, source, prefix="x-amz-copy-source-if-", for_read=False)
        start, end = 0, source.size - 1
        wanted = call.headers.get("x-amz-copy-source-range")
        if wanted:
            match = re.fullmatch(r"bytes=(\d+)-(\d+)", wanted.strip())
            if not match or int(match.group(1)) > int(match.group(2)) or \
                    int(match.group(2)) >= source.size:
                raise invalid_argument("The x-amz-copy-source-range value must be of the form "
                                       "bytes=first-last where first and last are the "
                                       "zero-based offsets of the first and last bytes to "
                                       "copy", "x-amz-copy-source-range", wanted)
            start, end = int(match.group(1)), int(match.group(2))
        algorithm = upload.checksums_algorithm
        writer = self.store.writer((algorithm,) if algorithm else ())
        try:
            blob = await self._thread(self.store.open_blob, source)
            try:
                blob.seek(start)
                remaining = end - start + 1
                while remaining > 0:
                    data = await self._thread(blob.read, min(CHUNK, remaining))
                    if not data:
                        break
                    writer.write(data)
                    remaining -= len(data)
            finally:
                blob.close()
        except BaseException:
            writer.abort()
            raise
        part = await self._thread(self.store.put_part, upload.id, number, writer)
        return _xml(document("CopyPartResult", [
            ("LastModified", iso8601(part.last_modified)), ("ETag", quoted(part.etag)),
            *checksums.xml_nodes(part.checksums)]))

    async def _complete_upload(self, call: Call) -> web.Response:
        self._authorize(call, public=False)
        upload_id = (await self._upload_of(call)).id
        root = s3xml.parse(await _small_body(call, body_checksums=False))
        if root.tag != "CompleteMultipartUpload":
            raise s3xml.malformed("the root element must be CompleteMultipartUpload")
        parts = []
        part_checksums: dict[int, dict[str, str]] = {}
        for part in root.findall("Part"):
            number = _int_value(s3xml.child_text(part, "PartNumber") or "", "PartNumber", 1,
                                MAX_PART_NUMBER)
            parts.append((number, unquote_etag(s3xml.child_text(part, "ETag") or "")))
            part_checksums[number] = {
                name: (s3xml.child_text(part, f"Checksum{name.upper()}") or "").strip()
                for name in checksums.ALGORITHMS
                if s3xml.child_text(part, f"Checksum{name.upper()}") is not None}
        if not parts:
            raise s3xml.malformed("a CompleteMultipartUpload names at least one part")
        # x-amz-checksum-<name> here is the whole object's checksum, not the body's.
        expected = {h.lower()[len("x-amz-checksum-"):]: v for h, v in call.headers.items()
                    if h.lower().startswith("x-amz-checksum-")
                    and h.lower()[len("x-amz-checksum-"):] in checksums.ALGORITHMS}
        info = await self._thread(self.store.complete_upload, upload_id, parts,
                                  check=write_check(call.headers),
                                  part_checksums=part_checksums, expected=expected,
                                  expected_type=call.headers.get("x-amz-checksum-type"))
        self._publish("ObjectCreated:CompleteMultipartUpload", info, call)
        return _xml(document("CompleteMultipartUploadResult", [
            ("Location", f"{self.url}/{call.bucket}/{urllib.parse.quote(call.key)}"),
            ("Bucket", call.bucket), ("Key", call.key), ("ETag", quoted(info.etag)),
            *checksums.xml_nodes(info.checksums, with_type=True)]))

    async def _abort_upload(self, call: Call) -> web.Response:
        self._authorize(call, public=False)
        await self._thread(self.store.abort_upload, (await self._upload_of(call)).id)
        return web.Response(status=204)

    async def _list_uploads(self, call: Call) -> web.Response:
        self._authorize(call, public=False)
        q = call.query
        self.store.bucket(call.bucket)
        limit = _int_arg(q, "max-uploads", 1000, 0, MAX_INT32)  # a page holds ≤ 1,000
        uploads, truncated = await self._thread(
            self.store.list_uploads,
            call.bucket, prefix=q.get("prefix", ""), key_marker=q.get("key-marker", ""),
            upload_id_marker=q.get("upload-id-marker", ""), max_uploads=min(limit, 1000))
        encode = _encoder(q)
        nodes: list[Node] = [("Bucket", call.bucket),
                             ("KeyMarker", encode(q.get("key-marker", ""))),
                             ("UploadIdMarker", q.get("upload-id-marker", "")),
                             ("Prefix", encode(q.get("prefix", ""))), ("MaxUploads", limit),
                             ("IsTruncated", truncated), ("EncodingType", q.get("encoding-type"))]
        if truncated and uploads:
            nodes += [("NextKeyMarker", encode(uploads[-1].key)),
                      ("NextUploadIdMarker", uploads[-1].id)]
        nodes += [("Upload", [("Key", encode(u.key)), ("UploadId", u.id),
                              ("Initiator", _owner()), ("Owner", _owner()),
                              ("StorageClass", "STANDARD"),
                              ("Initiated", iso8601(u.initiated)),
                              *_upload_checksum_nodes(u)]) for u in uploads]
        return _xml(document("ListMultipartUploadsResult", nodes))

    async def _list_parts(self, call: Call) -> web.Response:
        self._authorize(call, public=False)
        q = call.query
        upload = await self._upload_of(call)
        limit = _int_arg(q, "max-parts", 1000, 0, MAX_INT32)  # as max-keys: a page holds
        marker = _int_arg(q, "part-number-marker", 0, 0, MAX_PART_NUMBER)  # ≤ 1,000
        parts, truncated = await self._thread(self.store.list_parts, upload.id,
                                              part_number_marker=marker,
                                              max_parts=min(limit, 1000))
        nodes: list[Node] = [("Bucket", upload.bucket), ("Key", upload.key),
                             ("UploadId", upload.id), ("Initiator", _owner()),
                             ("Owner", _owner()), ("StorageClass", "STANDARD"),
                             *_upload_checksum_nodes(upload),
                             ("PartNumberMarker", marker), ("MaxParts", limit),
                             ("IsTruncated", truncated)]
        if truncated and parts:
            nodes.append(("NextPartNumberMarker", parts[-1].number))
        nodes += [("Part", [("PartNumber", p.number), ("LastModified", iso8601(p.last_modified)),
                            ("ETag", quoted(p.etag)), ("Size", p.size),
                            *checksums.xml_nodes(p.checksums)]) for p in parts]
        return _xml(document("ListPartsResult", nodes))

    # ---- events ----------------------------------------------------------------------

    def _publish(self, kind: str, info: ObjectInfo, call: Call) -> None:
        if self.events is None:
            return
        try:
            peer = call.request.remote or ""
            self.events.publish(kind, info, request_id=call.request_id, source_ip=peer)
        except Exception:  # delivery is best effort and never fails the S3 call
            log.exception("could not queue the %s event for %s/%s", kind, info.bucket, info.key)


# ---- helpers ---------------------------------------------------------------------------


def _xml(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/xml")


def _owner() -> list[Node]:
    return [("ID", "cloudland"), ("DisplayName", "cloudland")]


_OWNER_XML = fragment([("Owner", _owner())])  # written once, put into every listed entry


def _listed_xml(o: Listed, encode: Callable[[str], str], *, owner: bool,
                version: bool = False) -> Raw:
    """A listing's <Contents> (or, with `version`, <Version>) content, written directly:
    a page holds a thousand of them."""
    head = (f"<Key>{escape(encode(o.key))}</Key>"
            + ("<VersionId>null</VersionId><IsLatest>true</IsLatest>" if version else ""))
    return Raw(f"{head}<LastModified>{iso8601(o.last_modified)}</LastModified>"
               f"<ETag>{escape(quoted(o.etag))}</ETag>"
               f"{_listed_checksum_xml(o.checksum) if o.checksum else ''}<Size>{o.size}</Size>"
               f"<StorageClass>STANDARD</StorageClass>{_OWNER_XML if owner else ''}")


@functools.lru_cache(maxsize=64)
def _listed_checksum_xml(kind: str) -> str:
    """<ChecksumAlgorithm>s and <ChecksumType> of a listed object (`Listed.checksum`:
    the algorithms then the type); a handful of values, each written once."""
    *algorithms, checksum_type = kind.split()
    return "".join(f"<ChecksumAlgorithm>{a}</ChecksumAlgorithm>" for a in algorithms) + \
        f"<ChecksumType>{checksum_type}</ChecksumType>"


def _partial_headers(info: ObjectInfo, first: int, last: int, number: int | None, *,
                     checksum_mode: bool) -> dict[str, str]:
    """The headers of a part (`number`) or a range of an object: its place, the part
    count, and with `checksum_mode` what checksum describes the bytes sent, as S3 says
    it: a COMPOSITE object's part its own, a range that is the whole object the object's,
    any other none."""
    headers = {"Content-Range": f"bytes {first}-{last}/{info.size}"}
    if number is not None and info.parts:  # only an object a multipart upload made
        headers["x-amz-mp-parts-count"] = str(len(info.parts))
    if not checksum_mode:
        return headers
    if number is not None and info.part_checksums:
        (name,) = info.checksums  # a COMPOSITE checksum is of one algorithm
        headers[f"x-amz-checksum-{name}"] = info.part_checksums[number - 1]
        headers["x-amz-checksum-type"] = checksums.COMPOSITE
    elif (first, last) == (0, info.size - 1):
        headers.update(checksums.response_headers(info.checksums))
    return headers


def _upload_checksum_nodes(upload: Upload) -> list[Node]:
    if not upload.checksums_algorithm:
        return []
    return [("ChecksumAlgorithm", upload.checksums_algorithm.upper()),
            ("ChecksumType", upload.checksum_type
             or checksums.default_type(upload.checksums_algorithm))]


def _encoder(query: Mapping[str, str]) -> Callable[[str], str]:
    kind = query.get("encoding-type")
    if kind is None:
        return lambda s: s
    if kind != "url":
        raise invalid_argument("Invalid Encoding Method specified in Request",
                               "encoding-type", kind)
    return functools.partial(uri_encode, encode_slash=False)  # as quote(s, safe="/")


def _int_value(value: str, name: str, low: int, high: int | None) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise invalid_argument(f"{name} must be an integer {bound}", name, value)
    return number


def _int_arg(query: Mapping[str, str], name: str, default: int, low: int,
             high: int | None) -> int:
    return default if name not in query else _int_value(query[name], name, low, high)


def _check_version(query: Mapping[str, str]) -> None:
    """Versioning is off: 'null' is the only version there is."""
    version = query.get("versionId")
    if version is not None and version != "null":
        raise invalid_argument("Invalid version id specified", "versionId", version)


def _make_token(after: str) -> str:
    return base64.urlsafe_b64encode(after.encode()).decode()


def _token(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise invalid_argument("The continuation token provided is incorrect",
                               "continuation-token", token) from None


def _stages(verifier: PayloadVerifier, writer: BlobWriter, limit: int) -> list[Stage]:
    """What a large body goes through, each stage in order over the blocks, the stages
    at once: the signature checks (SHA-256, checksums), the MD5 (the ETag; the slowest
    hash, ~1.2 ms a MiB here) and the file write. An aws-chunked body is decoded
    before it is hashed or written, so one stage does it all."""
    if verifier.chunked:
        return [functools.partial(_absorb, verifier, writer, limit=limit)]
    store = functools.partial(_store, writer, limit=limit)
    if verifier.hashes:
        return [functools.partial(_check, verifier), writer.hash, store]
    return [functools.partial(_check_and_hash, verifier, writer), store]


def _check(verifier: PayloadVerifier, pieces: list[bytes]) -> None:
    """Pieces of a plain (not aws-chunked) body through the signature checks."""
    for p in pieces:
        verifier.feed(p)


def _check_and_hash(verifier: PayloadVerifier, writer: BlobWriter,
                    pieces: list[bytes]) -> list[bytes]:
    """Pieces of a request body through the signature checks; the decoded bytes, hashed
    into the blob's MD5 (and checksums)."""
    if verifier.chunked:
        pieces = [d for d in map(verifier.feed, pieces) if d]
    else:  # the body as sent: feed returns each piece itself
        _check(verifier, pieces)
    writer.hash(pieces)
    return pieces


def _store(writer: BlobWriter, pieces: list[bytes], limit: int) -> None:
    writer.store(pieces)
    if writer.size > limit:
        raise S3Error("EntityTooLarge", "Your upload exceeds the maximum allowed size", 400)


def _absorb(verifier: PayloadVerifier, writer: BlobWriter, pieces: list[bytes],
            limit: int) -> None:
    """Pieces of a request body: signature checks, then into the blob."""
    _store(writer, _check_and_hash(verifier, writer, pieces), limit)


async def _continue(request: web.BaseRequest) -> None:
    """Answer `Expect: 100-continue` (boto3 sends it with every upload) at once, as an
    aiohttp application's router would: the client then sends the body, which is read
    or drained, so the connection stays in step for its next request."""
    expect = request.headers.get("Expect")
    if expect is None or request.version < (1, 1):  # HTTP/1.0 has no Expect (RFC 9110)
        return
    if expect.lower() != "100-continue":
        raise S3Error("ExpectationFailed", "Only Expect: 100-continue is understood", 417,
                      Header="Expect", HeaderValue=expect[:64])
    await request.writer.write(b"HTTP/%d.%d 100 Continue\r\n\r\n" % request.version)
    # Not the response yet: an error answered now must still be written in full.
    request.writer.output_size = 0


class _BoundedServer(web.Server):
    """aiohttp's low-level server with at most `limit` connections open: one past it is
    answered 503 SlowDown (clients back off and retry) and closed at once. Every
    connection holds a descriptor of the process the whole of CloudLand runs in, so
    clients that open connections and never close them must not use them all up."""

    def __init__(self, handler: Any, *, limit: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limit = limit
        self.open = 0

    def __call__(self) -> Any:
        return _Busy() if self.open >= self.limit else super().__call__()

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        self.open += 1
        super().connection_made(handler, transport)

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        self.open -= 1
        super().connection_lost(handler, exc)


class _Busy(asyncio.Protocol):
    """A connection past the limit: S3's answer to too many requests, then goodbye."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.WriteTransport, transport)  # uvloop's are not subclasses
        stream.write(_BUSY)
        stream.close()


_BUSY_BODY = s3xml.error_document(
    S3Error("SlowDown", "Please reduce your request rate: too many open connections.", 503),
    "busy")
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
         b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
         + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)


def _close_all(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


def _sendfile_some(out: int, file_fd: int, start: int, length: int) -> int:
    """sendfile until `length` bytes went out or the (non-blocking) socket is full; the
    count sent, or -1 if the file ended first. A broken connection raises."""
    sent = 0
    while sent < length:
        try:
            n = os.sendfile(out, file_fd, start + sent, length - sent)
        except BlockingIOError:
            return sent
        except BrokenPipeError:  # the client went away: as a write to a closed transport
            raise ConnectionResetError("the client closed the connection") from None
        if n == 0:
            return sent or -1
        sent += n
    return sent


async def _writable(fd: int, timeout: float) -> None:
    """Wait until the socket `fd` has room again (a client that reads nothing for
    `timeout` seconds is gone)."""
    loop = asyncio.get_running_loop()
    room = loop.create_future()

    def ready() -> None:
        if not room.done():
            room.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await asyncio.wait_for(room, timeout)
    except TimeoutError:
        raise ConnectionResetError("the client stopped reading") from None
    finally:
        loop.remove_writer(fd)


def _incomplete(expected: int, got: int) -> S3Error:
    return S3Error("IncompleteBody", "You did not provide the number of bytes specified by "
                   "the Content-Length HTTP header", 400,
                   NumberBytesExpected=str(expected), NumberBytesProvided=str(got))


async def _small_body(call: Call, *, body_checksums: bool = True) -> bytes:
    """A request body that is XML (or nothing), read whole but bounded, through the
    same signature checks as any body (`body_checksums=False` where x-amz-checksum-*
    headers describe something else: the object a CompleteMultipartUpload makes)."""
    request = call.request
    if request.content_length is not None and request.content_length > MAX_XML_BYTES:
        raise S3Error("MaxMessageLengthExceeded", "Your request was too big.", 400)
    verifier = PayloadVerifier(call.verified, call.headers, body_checksums=body_checksums)
    body = bytearray()
    try:
        async for chunk in request.content.iter_chunked(CHUNK):
            body += verifier.feed(chunk)
            if len(body) > MAX_XML_BYTES:
                raise S3Error("MaxMessageLengthExceeded", "Your request was too big.", 400)
    except ConnectionResetError:  # the client hung up mid-body
        raise _incomplete(request.content_length or 0, request.content.total_bytes) from None
    verifier.finish()
    return bytes(body)
