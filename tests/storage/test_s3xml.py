"""S3 XML documents are written as text: exactly what ElementTree writes, parsed back whole."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from cloudland.storage import s3xml
from cloudland.storage.errors import S3Error


def _reference(root: str, nodes: list[s3xml.Node], attrs: dict[str, str]) -> bytes:
    def fill(parent: ET.Element, items: list[s3xml.Node]) -> None:
        for tag, value in items:
            if value is None:
                continue
            child = ET.SubElement(parent, tag)
            if isinstance(value, list):
                fill(child, value)
            else:
                child.text = ("true" if value else "false") if isinstance(value, bool) \
                    else str(value)
    element = ET.Element(root, **attrs)
    fill(element, nodes)
    return s3xml.HEADER.encode() + ET.tostring(element, encoding="utf-8")


AWKWARD: list[Any] = ["a & b", "<key>", "x > y", '"quoted"', "it's", "é 東京 🚀", "", "  spaced ",
                      "tab\there", "&amp; already", 0, 1234567890123, True, False]


def test_documents_match_elementtree_byte_for_byte() -> None:
    nodes: list[s3xml.Node] = [("Name", "bucket"), ("Skipped", None), ("Empty", ""),
                               ("Nothing", []), ("OnlyNone", [("A", None)])]
    nodes += [("Contents", [("Key", v), ("Size", 3), ("Owner", [("ID", "x")])]) for v in AWKWARD]
    nodes += [("Nested", [("Deeper", [("Deepest", v)])]) for v in AWKWARD]
    assert s3xml.document("ListBucketResult", nodes) == _reference(
        "ListBucketResult", nodes, {"xmlns": s3xml.NAMESPACE})
    assert s3xml.document("Empty", []) == _reference("Empty", [], {"xmlns": s3xml.NAMESPACE})
    for text in [None, "", "us-west-2", "a&b<c>"]:
        element = ET.Element("LocationConstraint", xmlns=s3xml.NAMESPACE)
        element.text = text
        assert s3xml.text_document("LocationConstraint", text) == \
            s3xml.HEADER.encode() + ET.tostring(element, encoding="utf-8")


def test_error_document_parses_back() -> None:
    err = S3Error("NoSuchKey", "The specified key does not exist.", 404, Key="a&<b>")
    err.resource = "/bucket/a&<b>"
    root = ET.fromstring(s3xml.error_document(err, "REQ1"))
    assert root.tag == "Error"
    assert [(c.tag, c.text) for c in root] == [
        ("Code", "NoSuchKey"), ("Message", "The specified key does not exist."),
        ("Key", "a&<b>"), ("Resource", "/bucket/a&<b>"), ("RequestId", "REQ1")]


def test_carriage_returns_survive_the_round_trip() -> None:
    """A raw CR in XML text reaches the reader as LF: S3 writes it as &#13;."""
    body = s3xml.document("ListBucketResult", [("Contents", [("Key", "a\rb\r\nc")])])
    assert b"a&#13;b&#13;\nc" in body
    assert ET.fromstring(body).find(f"{{{s3xml.NAMESPACE}}}Contents/"
                                    f"{{{s3xml.NAMESPACE}}}Key").text == "a\rb\r\nc"


def test_iso8601_keeps_milliseconds() -> None:
    assert s3xml.iso8601(0) == "1970-01-01T00:00:00.000Z"
    assert s3xml.iso8601(1795625650.987) == "2026-11-25T16:54:10.987Z"


@pytest.mark.parametrize("body", [
    b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>',
    b'<?xml version="1.0"?>\n<!DOCTYPE a SYSTEM "http://example.invalid/a.dtd"><a/>',
    # The same in UTF-16: no "<!DOCTYPE" among the raw bytes, expat sees it once decoded.
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a [<!ENTITY e "xxxxxxxx">]>'
    '<a>&e;&e;&e;</a>'.encode("utf-16"),
])
def test_a_body_with_a_doctype_is_refused_in_any_encoding(body: bytes) -> None:
    with pytest.raises(S3Error) as refused:
        s3xml.parse(body)
    assert refused.value.code == "MalformedXML"
    assert "DOCTYPE" in refused.value.message


def test_a_body_in_another_encoding_without_a_doctype_still_parses() -> None:
    root = s3xml.parse('<?xml version="1.0" encoding="UTF-16"?><a><b>é</b></a>'
                       .encode("utf-16"))
    assert s3xml.child_text(root, "b") == "é"
