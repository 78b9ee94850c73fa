"""GetObjectAttributes (`GET /bucket/key?attributes`): which attributes a request asks
for (`x-amz-object-attributes`) and the document that answers it, as S3 writes it.

Called by `server` with an object's row (`objects.ObjectInfo`); pure, no I/O. What S3
does and this follows: the ETag has no quotes (unlike everywhere else); a COMPOSITE
checksum is given without its `-N` (the part count is in ObjectParts) and with its
ChecksumType; ObjectParts is left out for an object that no multipart upload made, and
holds only PartsCount unless the parts have checksums of their own (a COMPOSITE
checksum's), in which case it pages through them (`x-amz-max-parts`,
`x-amz-part-number-marker`) with each part's size and checksum.
"""

from __future__ import annotations

from collections.abc import Iterable

from cloudland.storage import checksums, s3xml
from cloudland.storage.errors import invalid_argument, invalid_request
from cloudland.storage.objects import ObjectInfo
from cloudland.storage.s3xml import Node

ATTRIBUTES = frozenset({"ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"})
HEADER = "x-amz-object-attributes"


def requested(values: Iterable[str]) -> frozenset[str]:
    """The attributes named by the x-amz-object-attributes header(s) (comma-separated,
    case-sensitive as in S3): InvalidRequest if none, InvalidArgument for an unknown one."""
    names = [name.strip() for value in values for name in value.split(",")]
    names = [name for name in names if name]
    if not names:
        raise invalid_request(f"The {HEADER} header specifying the attributes to be "
                              "retrieved is either missing or empty")
    unknown = [name for name in names if name not in ATTRIBUTES]
    if unknown:
        raise invalid_argument("Invalid attribute name specified.", HEADER, unknown[0][:64])
    return frozenset(names)


def document(info: ObjectInfo, wanted: frozenset[str], *, max_parts: int,
             marker: int) -> bytes:
    """The GetObjectAttributesResponse for `info` holding the `wanted` attributes."""
    return s3xml.document("GetObjectAttributesResponse", [
        ("ETag", info.etag if "ETag" in wanted else None),
        ("Checksum", _checksum(info) if "Checksum" in wanted else None),
        ("ObjectParts", _parts(info, max_parts, marker) if "ObjectParts" in wanted else None),
        ("StorageClass", "STANDARD" if "StorageClass" in wanted else None),
        ("ObjectSize", info.size if "ObjectSize" in wanted else None)])


def _checksum(info: ObjectInfo) -> list[Node] | None:
    if not info.checksums:
        return None
    # A COMPOSITE value loses its "-N" here; base64 and the type names have no "-".
    return [(tag, str(value).partition("-")[0])
            for tag, value in checksums.xml_nodes(info.checksums, with_type=True)]


def _parts(info: ObjectInfo, max_parts: int, marker: int) -> list[Node] | None:
    if not info.parts:
        return None
    nodes: list[Node] = [("PartsCount", len(info.parts))]
    if not info.part_checksums:
        return nodes
    (name,) = info.checksums  # a COMPOSITE checksum is of one algorithm
    after = range(marker + 1, len(info.parts) + 1)
    page = after[:max_parts]
    nodes += [("PartNumberMarker", marker), ("NextPartNumberMarker", page[-1] if page else 0),
              ("MaxParts", max_parts), ("IsTruncated", len(after) > len(page))]
    nodes += [("Part", [("PartNumber", n), ("Size", info.parts[n - 1]),
                        *checksums.xml_nodes({name: info.part_checksums[n - 1]})])
              for n in page]
    return nodes
