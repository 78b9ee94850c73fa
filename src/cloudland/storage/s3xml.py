"""S3's XML: building response documents and reading request bodies safely.

Responses are built from nested (tag, value) pairs so each handler reads like the
document it returns. Request bodies are bounded by the caller, refused if they
declare a DOCTYPE (no entity tricks), and any parse error is MalformedXML.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cloudland.storage.errors import S3Error

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
Node = tuple[str, Any]  # (tag, text | number | bool | None | list of Nodes)


def iso8601(when: float) -> str:
    """'2026-11-25T15:00:00.000Z', as S3 writes times in XML."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{int(when * 1000) % 1000:03d}Z"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fill(parent: ET.Element, nodes: Iterable[Node]) -> None:
    for tag, value in nodes:
        if value is None:
            continue
        child = ET.SubElement(parent, tag)
        if isinstance(value, list):
            _fill(child, value)
        else:
            child.text = _text(value)


def document(root: str, nodes: Iterable[Node]) -> bytes:
    """An S3 XML document: `<root xmlns=...>` holding `nodes` (None values are left out)."""
    element = ET.Element(root, xmlns=NAMESPACE)
    _fill(element, nodes)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element, encoding="utf-8")


def text_document(root: str, text: str | None) -> bytes:
    """`<root xmlns=...>text</root>` (empty when `text` is None), escaped."""
    element = ET.Element(root, xmlns=NAMESPACE)
    element.text = text
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element, encoding="utf-8")


def error_document(err: S3Error, request_id: str) -> bytes:
    nodes: list[Node] = [("Code", err.code), ("Message", err.message)]
    nodes += [(name, value) for name, value in err.extra.items()]
    if err.resource:
        nodes.append(("Resource", err.resource))
    nodes.append(("RequestId", request_id))
    element = ET.Element("Error")
    _fill(element, nodes)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element, encoding="utf-8")


def parse(body: bytes) -> ET.Element:
    """A request body as an element tree, namespaces stripped; MalformedXML if it is not."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise malformed("DOCTYPE and ENTITY declarations are not allowed")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise malformed(str(exc)) from None
    for element in root.iter():
        if "}" in element.tag:
            element.tag = element.tag.split("}", 1)[1]
    return root


def malformed(detail: str = "") -> S3Error:
    message = ("The XML you provided was not well-formed or did not validate against our "
               "published schema")
    return S3Error("MalformedXML", message + (f" ({detail})" if detail else ""), 400)


def child_text(element: ET.Element, tag: str) -> str | None:
    found = element.find(tag)
    return None if found is None else (found.text or "")
