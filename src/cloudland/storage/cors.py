"""Bucket CORS as S3 does it: the CORSConfiguration document and which rule answers a
browser.

`parse` reads a PutBucketCors body into `Rule`s, refusing what S3 refuses with S3's
codes; `document` writes them back for GetBucketCors; `dumps`/`loads` keep them in
the store's buckets table. The S3 server asks `preflight` how to answer an OPTIONS
request, and `actual` for the headers of any other request that carries an `Origin`.
The Bucket controller builds `Rule`s from a manifest. Nothing here does I/O.

S3's behaviour, where its documentation is silent or wrong, is taken from what it
answers (recorded by LocalStack's AWS-validated tests and ceph's s3-tests): the first
matching rule wins; a preflight lists the rule's methods, the requested headers in
lowercase and `Access-Control-Allow-Credentials: true` unless the rule allows `*`;
an actual request that no rule allows is served without CORS headers, never refused.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson

from cloudland.storage import s3xml
from cloudland.storage.errors import S3Error, invalid_argument, invalid_request
from cloudland.storage.s3xml import Node

METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
MAX_RULES = 100
MAX_ID = 255
MAX_DOCUMENT = 64 << 10  # "The document is limited to 64 KB in size."
MAX_REQUESTED_HEADERS = 64  # distinct names in one Access-Control-Request-Headers
# AllowedHeader and ExposeHeader are header names (HTTP tokens; AllowedHeader may hold a
# "*"); AllowedOrigin is printable ASCII. Anything else would be echoed into answers.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ORIGIN = re.compile(r"[\x21-\x7e]*")
VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
NOT_ALLOWED = ("CORSResponse: This CORS request is not allowed. This is usually because the "
               "evalution of Origin, request method / Access-Control-Request-Method or "
               "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.")
_LISTS = {"AllowedOrigin": "origins", "AllowedMethod": "methods", "AllowedHeader": "headers",
          "ExposeHeader": "expose"}


@dataclass(frozen=True)
class Rule:
    """One CORSRule. `origins` and `headers` may hold one `*` each (any characters)."""

    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    max_age: int | None = None
    id: str | None = None

    def allowed_origin(self, origin: str) -> str | None:
        """The first of `origins` that matches `origin` (case counts), or None."""
        return next((o for o in self.origins if _pattern(o, False).fullmatch(origin)), None)

    def allows_headers(self, requested: Iterable[str]) -> bool:
        """Whether every requested header name matches an AllowedHeader (case ignored)."""
        allowed = _any_of(self.headers)
        return all(allowed.fullmatch(name) for name in requested)


@functools.lru_cache(maxsize=1024)
def _pattern(allowed: str, fold: bool) -> re.Pattern[str]:
    return re.compile(re.escape(allowed).replace(r"\*", ".*"), re.IGNORECASE if fold else 0)


@functools.lru_cache(maxsize=1024)
def _any_of(allowed: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern for a rule's AllowedHeaders: each requested name costs one match."""
    if "*" in allowed:
        return re.compile(".*")
    if not allowed:
        return re.compile("(?!)")  # matches nothing
    return re.compile("|".join(_pattern(h, True).pattern for h in allowed), re.IGNORECASE)


# ---- validation and the XML document ----------------------------------------------------


def check(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    """Refuse a configuration S3 would refuse, with S3's code and message."""
    if not rules or len(rules) > MAX_RULES:
        raise s3xml.malformed(f"a CORSConfiguration holds 1 to {MAX_RULES} CORSRules")
    for rule in rules:
        if not rule.origins or not rule.methods:
            raise s3xml.malformed("a CORSRule needs an AllowedOrigin and an AllowedMethod")
        for method in rule.methods:
            if method not in METHODS:
                raise invalid_request("Found unsupported HTTP method in CORS config. "
                                      f"Unsupported method is {method}")
        for kind, values in (("AllowedOrigin", rule.origins), ("AllowedHeader", rule.headers)):
            for value in values:
                if value.count("*") > 1:
                    raise invalid_request(f'{kind} "{value}" can not have more than one '
                                          "wildcard.")
        _check_names("AllowedOrigin", rule.origins, _ORIGIN, "printable ASCII")
        _check_names("AllowedHeader", rule.headers, _TOKEN, "a header name")
        _check_names("ExposeHeader", rule.expose, _TOKEN, "a header name")
        for value in rule.expose:
            if "*" in value:
                raise invalid_request(f'ExposeHeader "{value}" contains wildcard. We currently '
                                      "do not support wildcard for ExposeHeader.")
        if rule.id is not None and len(rule.id) > MAX_ID:
            raise invalid_argument(f"ID length should not exceed allowed limit of {MAX_ID}",
                                   "ID", rule.id[:64])
        if rule.max_age is not None and rule.max_age < 0:
            raise s3xml.malformed("MaxAgeSeconds is a number of seconds, 0 or more")
    return rules


def _check_names(kind: str, values: tuple[str, ...], shape: re.Pattern[str],
                 what: str) -> None:
    for value in values:
        if not shape.fullmatch(value):
            raise invalid_argument(f"{kind} must be {what}", kind, value[:64])


def parse(body: bytes) -> tuple[Rule, ...]:
    """A PutBucketCors body as checked rules."""
    if len(body) > MAX_DOCUMENT:
        raise S3Error("MaxMessageLengthExceeded", "Your request was too big.", 400)
    root = s3xml.parse(body)
    if root.tag != "CORSConfiguration":
        raise s3xml.malformed("the root element must be CORSConfiguration")
    rules = []
    for element in root:
        if element.tag != "CORSRule":
            raise s3xml.malformed(f"<{element.tag}> in a CORSConfiguration")
        lists: dict[str, list[str]] = {field: [] for field in _LISTS.values()}
        single: dict[str, str] = {}
        for child in element:
            text = (child.text or "").strip()
            if child.tag in _LISTS:
                lists[_LISTS[child.tag]].append(text)
            elif child.tag in ("ID", "MaxAgeSeconds") and child.tag not in single:
                single[child.tag] = text
            else:
                raise s3xml.malformed(f"<{child.tag}> in a CORSRule")
        age = single.get("MaxAgeSeconds")
        if age is not None and not re.fullmatch(r"-?\d{1,10}", age):
            raise s3xml.malformed(f"MaxAgeSeconds '{age[:32]}' is not an integer")
        rules.append(Rule(**{k: tuple(v) for k, v in lists.items()}, id=single.get("ID"),
                          max_age=None if age is None else int(age)))
    return check(tuple(rules))


def document(rules: tuple[Rule, ...]) -> bytes:
    """GetBucketCors's answer: the rules as stored, members in botocore's model order."""
    nodes: list[Node] = []
    for rule in rules:
        members: list[Node] = [("ID", rule.id)]
        for tag, field in _LISTS.items():
            members += [(tag, value) for value in getattr(rule, field)]
        members.append(("MaxAgeSeconds", rule.max_age))
        nodes.append(("CORSRule", members))
    return s3xml.document("CORSConfiguration", nodes)


def no_configuration(bucket: str) -> S3Error:
    return S3Error("NoSuchCORSConfiguration", "The CORS configuration does not exist", 404,
                   BucketName=bucket)


def dumps(rules: tuple[Rule, ...] | None) -> str | None:
    return None if rules is None else orjson.dumps(
        [dataclasses.asdict(r) for r in rules]).decode()


def loads(text: str | None) -> tuple[Rule, ...] | None:
    if text is None:
        return None
    return tuple(Rule(origins=tuple(r["origins"]), methods=tuple(r["methods"]),
                      headers=tuple(r["headers"]), expose=tuple(r["expose"]),
                      max_age=r["max_age"], id=r["id"]) for r in orjson.loads(text))


# ---- answering requests -----------------------------------------------------------------


def preflight(rules: tuple[Rule, ...] | None, *, bucket_exists: bool, has_key: bool,
              headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of a 200 answer to an OPTIONS request, or S3's error for it."""
    origin = headers.get("Origin")
    if not origin:
        raise S3Error("BadRequest", "Insufficient information. Origin request header needed.",
                      400)
    method = headers.get("Access-Control-Request-Method")
    if not bucket_exists or rules is None:
        message = ("CORSResponse: Bucket not found" if not bucket_exists
                   else "CORSResponse: CORS is not enabled for this bucket.")
        raise S3Error("AccessForbidden", message, 403, Method=method or "OPTIONS",
                      ResourceType="BUCKET")
    if method not in METHODS:
        raise S3Error("BadRequest", f"Invalid Access-Control-Request-Method: {method}"
                      if method else "Invalid Access-Control-Request-Method: null", 400)
    answer = _answer(rules, origin, method, headers.get("Access-Control-Request-Headers"))
    if answer is None:
        raise S3Error("AccessForbidden", NOT_ALLOWED, 403, Method=method,
                      ResourceType="OBJECT" if has_key else "BUCKET")
    return answer


def actual(rules: tuple[Rule, ...] | None, method: str,
           headers: Mapping[str, str]) -> dict[str, str]:
    """The CORS headers of an answer to a (non-OPTIONS) request with an Origin: those of
    the first rule that allows it, or none. As S3 does, an Access-Control-Request-Method
    sent along takes the place of the request's own method."""
    origin = headers.get("Origin")
    if not origin or not rules:
        return {}
    method = headers.get("Access-Control-Request-Method") or method
    return _answer(rules, origin, method, headers.get("Access-Control-Request-Headers")) or {}


def _answer(rules: tuple[Rule, ...], origin: str, method: str,
            requested_header: str | None) -> dict[str, str] | None:
    # Each distinct name once, in the order asked; past MAX_REQUESTED_HEADERS no rule
    # allows it (a browser asks for a handful; a long list is only work for us).
    requested = list(dict.fromkeys(
        h.strip().lower() for h in (requested_header or "").split(",") if h.strip()))
    if len(requested) > MAX_REQUESTED_HEADERS:
        return None
    for rule in rules:  # the cheap checks first: method, origin, then headers
        if method not in rule.methods:
            continue
        allowed = rule.allowed_origin(origin)
        if allowed is None or not rule.allows_headers(requested):
            continue
        answer = {"Access-Control-Allow-Origin": "*" if allowed == "*" else origin,
                  "Access-Control-Allow-Methods": ", ".join(rule.methods)}
        if allowed != "*":
            answer["Access-Control-Allow-Credentials"] = "true"
        if requested:
            answer["Access-Control-Allow-Headers"] = ", ".join(requested)
        if rule.expose:
            answer["Access-Control-Expose-Headers"] = ", ".join(rule.expose)
        if rule.max_age is not None:
            answer["Access-Control-Max-Age"] = str(rule.max_age)
        answer["Vary"] = VARY
        return answer
    return None
