"""S3's XML: building response documents and reading request bodies safely.

Responses are built from nested (tag, value) pairs so each handler reads like the
document it returns; they are written as text directly (what ElementTree would write,
several times faster: a listing of 1,000 keys is ~6,000 elements). Request bodies are
bounded by the caller, refused if they declare a DOCTYPE (no entity tricks), and any
parse error is MalformedXML.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cloudland.storage.errors import S3Error

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
Node = tuple[str, Any]  # (tag, text | number | bool | None | Raw | list of Nodes)


class Raw(str):
    """An element's content already written as XML (escaped): put in as it is. For
    elements written by the thousand (listings), where building nodes costs more
    than the answer."""


HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n'


def iso8601(when: float) -> str:
    """'2026-11-25T15:00:00.000Z', as S3 writes times in XML."""
    return f"{_iso_seconds(int(when))}.{int(when * 1000) % 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_seconds(seconds: int) -> str:  # listings repeat the same seconds a lot
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


def escape(text: str) -> str:
    """Text as element content: what ElementTree escapes, and CR."""
    if "&" in text or "<" in text or ">" in text:
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if "\r" in text:  # as S3 writes it: a raw CR would reach the client's parser as LF
        text = text.replace("\r", "&#13;")
    return text


def _write(out: list[str], nodes: Iterable[Node]) -> None:
    for tag, value in nodes:
        if value is None:
            continue
        if isinstance(value, Raw):
            out.append(f"<{tag}>{value}</{tag}>")
        elif isinstance(value, list):
            if any(v is not None for _, v in value):
                out.append(f"<{tag}>")
                _write(out, value)
                out.append(f"</{tag}>")
            else:
                out.append(f"<{tag} />")
        else:
            text = _text(value)
            out.append(f"<{tag}>{text}</{tag}>" if text else f"<{tag} />")


def fragment(nodes: Iterable[Node]) -> Raw:
    """Nodes written as XML text, to put into a document as one `Raw` value."""
    out: list[str] = []
    _write(out, nodes)
    return Raw("".join(out))


def _element(root: str, attributes: str, nodes: Iterable[Node]) -> bytes:
    body = fragment(nodes)
    if body:
        return _encode(f"{HEADER}<{root}{attributes}>{body}</{root}>")
    return _encode(f"{HEADER}<{root}{attributes} />")


def _encode(text: str) -> bytes:
    # Header values aiohttp could not decode arrive as surrogates (and errors echo
    # them): written as character references, as ElementTree did, never an exception.
    return text.encode("utf-8", "xmlcharrefreplace")


def document(root: str, nodes: Iterable[Node]) -> bytes:
    """An S3 XML document: `<root xmlns=...>` holding `nodes` (None values are left out)."""
    return _element(root, f' xmlns="{NAMESPACE}"', nodes)


def text_document(root: str, text: str | None) -> bytes:
    """`<root xmlns=...>text</root>` (empty when `text` is None), escaped."""
    body = _text(text) if text else ""
    if body:
        return _encode(f'{HEADER}<{root} xmlns="{NAMESPACE}">{body}</{root}>')
    return _encode(f'{HEADER}<{root} xmlns="{NAMESPACE}" />')


def error_document(err: S3Error, request_id: str) -> bytes:
    nodes: list[Node] = [("Code", err.code), ("Message", err.message)]
    nodes += [(name, value) for name, value in err.extra.items()]
    if err.resource:
        nodes.append(("Resource", err.resource))
    nodes.append(("RequestId", request_id))
    return _element("Error", "", nodes)


class _Doctype(Exception):
    """A DOCTYPE in a body: S3 bodies have no DTD, and its entities could expand a small
    body into a huge one."""


class _NoDoctype(ET.TreeBuilder):
    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise _Doctype  # expat calls this at "<!DOCTYPE", before any declaration in it


def parse(body: bytes) -> ET.Element:
    """A request body as an element tree, namespaces stripped; MalformedXML if it is not,
    or if it declares a DOCTYPE (in any encoding: expat sees it after decoding)."""
    parser = ET.XMLParser(target=_NoDoctype())
    try:
        parser.feed(body)
        root = parser.close()
    except _Doctype:
        raise malformed("DOCTYPE and ENTITY declarations are not allowed") from None
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
