"""Object tags: reading them from `x-amz-tagging` or a `<Tagging>` document, checking
them against S3's limits, and the document GetObjectTagging answers.

Called by `server` (PutObject, CreateMultipartUpload, CopyObject with
`x-amz-tagging-directive: REPLACE`, and the object's `?tagging` subresource); the tags
themselves are a plain dict kept in the object's row by `objects`. Pure, no I/O.

What S3 does and this follows:

- At most 10 tags: more is `BadRequest` "Object tags cannot be greater than 10" (not
  InvalidTag; S3 answers it so for the header and for PutObjectTagging alike).
- A key is 1 to 128 characters, a value 0 to 256, counted in UTF-16 code units as S3
  counts them; both hold only Unicode letters, numbers and spaces and `_ . : / = + - @`.
  Anything else is `InvalidTag` with S3's message; a key starting with `aws:` too.
- In a document, keys must be unique ("Cannot provide multiple Tags with the same key");
  in the header, a duplicate key, an empty key or a pair with two `=` is
  `InvalidArgument` naming the header. A key without `=` has the empty value, and `+`
  is a space (the header is form-encoded: Python's urlencode writes spaces as `+`).
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Mapping

from cloudland.storage import s3xml
from cloudland.storage.errors import S3Error, invalid_argument

HEADER = "x-amz-tagging"
DIRECTIVE = "x-amz-tagging-directive"
COUNT_HEADER = "x-amz-tagging-count"
MAX_TAGS = 10
MAX_KEY = 128
MAX_VALUE = 256
_ASCII_ALLOWED = re.compile(r"[A-Za-z0-9 _.:/=+\-@]*")
_SYMBOLS = frozenset("_.:/=+-@")


def from_request(headers: Mapping[str, str], query: Mapping[str, str]) -> dict[str, str] | None:
    """The tags a write asks for: `x-amz-tagging` as a header or, from a presigned URL
    whose signer moved it there, in the query; None when neither is sent."""
    value = headers.get(HEADER)
    if value is None:
        value = query.get(HEADER)
    return None if value is None else from_header(value)


def from_header(value: str) -> dict[str, str]:
    """`x-amz-tagging`'s URL-query-encoded tag set, checked (`check`)."""
    tags: dict[str, str] = {}
    for pair in value.split("&"):
        if not pair:
            continue
        if pair.count("=") > 1:
            raise _bad_header(value)
        key, _, text = pair.partition("=")
        try:
            key = urllib.parse.unquote_plus(key, errors="strict")
            text = urllib.parse.unquote_plus(text, errors="strict")
        except UnicodeDecodeError:
            raise _bad_header(value) from None
        if not key or key in tags:
            raise _bad_header(value)
        tags[key] = text
    return check(tags)


def parse(body: bytes) -> dict[str, str]:
    """A PutObjectTagging body, `<Tagging><TagSet><Tag><Key/><Value/></Tag>...`, checked."""
    root = s3xml.parse(body)
    if root.tag != "Tagging":
        raise s3xml.malformed("the root element must be Tagging")
    if [child.tag for child in root] != ["TagSet"]:
        raise s3xml.malformed("Tagging must hold one TagSet and nothing else")
    tags: dict[str, str] = {}
    for tag in root[0]:
        if tag.tag != "Tag" or sorted(child.tag for child in tag) != ["Key", "Value"]:
            raise s3xml.malformed("a TagSet holds Tags of one Key and one Value each")
        key, value = s3xml.child_text(tag, "Key"), s3xml.child_text(tag, "Value")
        assert key is not None and value is not None
        if key in tags:
            raise invalid_tag("Cannot provide multiple Tags with the same key")
        tags[key] = value
    return check(tags)


def check(tags: dict[str, str]) -> dict[str, str]:
    """`tags` if S3 takes them as an object's tag set (see the module docstring)."""
    if len(tags) > MAX_TAGS:
        raise S3Error("BadRequest", f"Object tags cannot be greater than {MAX_TAGS}", 400)
    for key, value in tags.items():
        if _length(key) > MAX_KEY:
            raise invalid_tag(f"The TagKey you have provided is too long, max {MAX_KEY}")
        if not key or not _allowed(key):
            raise invalid_tag("The TagKey you have provided is invalid")
        if key.startswith("aws:"):
            raise invalid_tag("Your TagKey cannot be prefixed with aws:")
        if _length(value) > MAX_VALUE:
            raise invalid_tag(f"The TagValue you have provided is too long, max {MAX_VALUE}")
        if not _allowed(value):
            raise invalid_tag("The TagValue you have provided is invalid")
    return tags


def document(tags: Mapping[str, str]) -> bytes:
    """GetObjectTagging's answer."""
    return s3xml.document("Tagging", [("TagSet", [
        ("Tag", [("Key", key), ("Value", value)]) for key, value in tags.items()])])


def invalid_tag(message: str) -> S3Error:
    return S3Error("InvalidTag", message, 400)


def _bad_header(value: str) -> S3Error:
    return invalid_argument(f"The header '{HEADER}' shall be encoded as UTF-8 then URLEncoded "
                            "URL query parameters without tag name duplicates.", HEADER,
                            value[:256])


def _length(text: str) -> int:
    """Characters as S3 counts them: UTF-16 code units (2 for one beyond the BMP)."""
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def _allowed(text: str) -> bool:
    if text.isascii():
        return _ASCII_ALLOWED.fullmatch(text) is not None
    return all(c in _SYMBOLS or unicodedata.category(c)[0] in "LNZ" for c in text)
