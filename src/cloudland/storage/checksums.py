"""The checksums S3 knows (`x-amz-checksum-<name>`): computing them, and making a
multipart object's checksum out of its parts'.

Used by `sigv4.PayloadVerifier` (checking what a request says of its body), by
`objects` (what a `BlobWriter` computes, what a completed upload stores) and by the
server's answers (`response_headers`, `xml_nodes`: how S3 states checksums). The CRCs
come from anycrc (CRC-64/NVME, S3's default since 2025, and CRC-32C have no fast
implementation in the standard library; anycrc does all three at several GB/s and
combines CRCs, which a FULL_OBJECT multipart checksum needs).

A multipart object's checksum is of one of two types, as S3 has them:

- COMPOSITE: the checksum of the parts' binary checksums, then `-N` (N parts). Any
  algorithm but CRC-64/NVME; the default.
- FULL_OBJECT: the checksum of the whole body, as a single PUT would have it; only for
  the CRCs, whose values combine (crc(a + b) from crc(a), crc(b) and len(b)).

A stored value tells its type: base64 has no `-`, so a value with one is COMPOSITE.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import anycrc

from cloudland.storage.errors import invalid_request
from cloudland.storage.s3xml import Node

FULL_OBJECT = "FULL_OBJECT"
COMPOSITE = "COMPOSITE"


class Checksum(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    """A running CRC with hashlib's interface."""

    def __init__(self, model: Any, size: int) -> None:
        self._model = model
        self._size = size
        self._value: int | None = None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._value = self._model.calc(data, self._value)

    def digest(self) -> bytes:
        value = self._value if self._value is not None else self._model.calc(b"")
        return int(value).to_bytes(self._size, "big")


_CRC_MODELS = {"crc32": "CRC32-ISO-HDLC", "crc32c": "CRC32-ISCSI", "crc64nvme": "CRC64-NVME"}
_CRCS = {name: anycrc.Model(model) for name, model in _CRC_MODELS.items()}

SIZES: dict[str, int] = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}
"""Each algorithm (lowercase, as in x-amz-checksum-<name>) and its digest's size."""
ALGORITHMS: frozenset[str] = frozenset(SIZES)
CRCS: frozenset[str] = frozenset(_CRCS)


def named(value: str) -> str:
    """The algorithm an x-amz-checksum-algorithm header names (lowercase), or S3's
    InvalidRequest."""
    name = value.strip().lower()
    if name not in ALGORITHMS:
        raise invalid_request("Checksum algorithm provided is unsupported. Please try again "
                              "with any of the valid types: "
                              f"{', '.join(sorted(a.upper() for a in ALGORITHMS))}")
    return name


def of_file(name: str, file: Any, chunk: int = 1 << 20) -> str:
    """Checksum `name` (base64) of what is left to read of a binary file."""
    h = hasher(name)
    while data := file.read(chunk):
        h.update(data)
    return base64.b64encode(h.digest()).decode()


def hasher(name: str) -> Checksum:
    """A new running checksum `name` (one of ALGORITHMS)."""
    model = _CRCS.get(name)
    if model is not None:
        return _Crc(model, SIZES[name])
    factory: Callable[[], Checksum] = getattr(hashlib, name)
    return factory()


def decode(name: str, value: str) -> bytes | None:
    """The digest a base64 `value` of checksum `name` holds; None if it is not one."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        return None
    return raw if len(raw) == SIZES[name] else None


def checksum_type(value: str) -> str:
    """FULL_OBJECT or COMPOSITE: what a stored checksum value is."""
    return COMPOSITE if "-" in value else FULL_OBJECT


def default_type(name: str) -> str:
    """The type S3 gives a multipart upload that names its algorithm but not its type."""
    return FULL_OBJECT if name == "crc64nvme" else COMPOSITE


def allowed_type(name: str, kind: str) -> bool:
    """Whether S3 lets a multipart upload's checksum `name` be of type `kind`."""
    if kind == FULL_OBJECT:
        return name in CRCS
    return kind == COMPOSITE and name != "crc64nvme"


def composite(name: str, digests: Iterable[str]) -> str:
    """COMPOSITE: the checksum of the parts' binary checksums (base64 each), "-N"."""
    h = hasher(name)
    n = 0
    for d in digests:
        h.update(base64.b64decode(d))
        n += 1
    return f"{base64.b64encode(h.digest()).decode()}-{n}"


def full_object(name: str, parts: Iterable[tuple[str, int]]) -> str:
    """FULL_OBJECT: the CRC of the whole body, from each part's CRC (base64) and size."""
    model = _CRCS[name]
    value: int | None = None
    for digest, size in parts:
        crc = int.from_bytes(base64.b64decode(digest), "big")
        value = crc if value is None else model.combine(value, crc, size)
    if value is None:
        value = model.calc(b"")
    return base64.b64encode(int(value).to_bytes(SIZES[name], "big")).decode()


def response_headers(sums: Mapping[str, str]) -> dict[str, str]:
    """An object's checksums as response headers, with their type (as S3 answers a PUT,
    and a GET or HEAD with x-amz-checksum-mode: ENABLED)."""
    headers = {f"x-amz-checksum-{a}": v for a, v in sums.items()}
    if sums:
        headers["x-amz-checksum-type"] = checksum_type(next(iter(sums.values())))
    return headers


def xml_nodes(sums: Mapping[str, str], *, with_type: bool = False) -> list[Node]:
    """<ChecksumCRC32> and the like (and <ChecksumType>) of an object or a part."""
    nodes: list[Node] = [(f"Checksum{a.upper()}", v) for a, v in sorted(sums.items())]
    if with_type and sums:
        nodes.append(("ChecksumType", checksum_type(next(iter(sums.values())))))
    return nodes
