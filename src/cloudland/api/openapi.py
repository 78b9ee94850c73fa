"""The OpenAPI description: every kind's paths and JSON Schema.

The router serves all kinds through a few generic routes (cheap to match) and
handlers read bodies themselves (to bound size and report errors in one
shape); this module writes the per-kind paths the way Kubernetes publishes
them, with each kind's JSON Schema from pydantic.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cloudland.model.kinds import KINDS, KindInfo
from cloudland.model.meta import Status

PREFIX = "/apis/cloudland/v1"
ERROR = {"type": "object", "required": ["code", "reason", "message"], "properties": {
    "code": {"type": "integer"}, "reason": {"type": "string"}, "message": {"type": "string"},
    "field": {"type": "string"}, "hint": {"type": "string"},
    "causes": {"type": "array", "items": {"type": "object"}}}}


def kind_schemas() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (info.model, "validation") for info in KINDS.values()]
    models.append((Status, "validation"))
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    return dict(top.get("$defs", {}))


def _param(name: str, where: str = "query", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": {"type": "string"}}


def _op(op_id: str, kind: str, params: list[dict[str, Any]], *, body: dict[str, Any] | None
        = None, ok: str = "200", result: dict[str, Any] | None = None,
        media: str = "application/json") -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id, "tags": [kind], "parameters": params,
        "responses": {
            ok: {"description": "OK", "content": {media: {"schema": result or {
                "$ref": f"#/components/schemas/{kind}"}}}},
            "default": {"description": "Error", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}},
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {media: {"schema": body}}}
    return op


def kind_paths(info: KindInfo) -> dict[str, Any]:
    kind, plural = info.kind, info.plural
    ns, name = _param("namespace", "path"), _param("name", "path")
    selector, rv = _param("labelSelector"), _param("resourceVersion")
    ref = {"$ref": f"#/components/schemas/{kind}"}
    listing = {"type": "object", "properties": {"items": {"type": "array", "items": ref}}}
    stream = {"type": "string", "description": "newline-delimited JSON watch events"}
    status_body = {"type": "object", "properties": {
        "status": {"$ref": "#/components/schemas/Status"}}}
    base = f"{PREFIX}/namespaces/{{namespace}}/{plural}"
    return {
        f"{PREFIX}/{plural}": {"get": _op(f"list{kind}AllNamespaces", kind, [selector],
                                          result=listing)},
        base: {
            "get": _op(f"list{kind}", kind, [ns, selector], result=listing),
            "post": _op(f"create{kind}", kind, [ns], body=ref, ok="201"),
        },
        base + "/{name}": {
            "get": _op(f"read{kind}", kind, [ns, name]),
            "put": _op(f"replace{kind}", kind, [ns, name], body=ref),
            "patch": _op(f"patch{kind}", kind, [ns, name], body={"type": "object"},
                         media="application/merge-patch+json"),
            "delete": _op(f"delete{kind}", kind, [ns, name, rv]),
        },
        base + "/{name}/status": {
            "get": _op(f"read{kind}Status", kind, [ns, name]),
            "put": _op(f"replace{kind}Status", kind, [ns, name], body=status_body),
        },
        f"{PREFIX}/watch/namespaces/{{namespace}}/{plural}": {
            "get": _op(f"watch{kind}", kind, [ns, selector, rv], result=stream,
                       media="application/x-ndjson")},
    }


def _plain(op_id: str, tag: str, summary: str, *, body: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id, "tags": [tag], "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {
                "schema": {"type": "object"}}}},
            "default": {"description": "Error", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}},
        },
    }
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "required": ["items"], "properties": {
                "items": {"type": "array", "items": {"type": "object"}},
                "stack": {"type": "string"}, "prune": {"type": "boolean"},
                "dryRun": {"type": "boolean"}}}}}}
    return op


@cache
def build_openapi() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document, built once."""
    from cloudland import __version__
    from cloudland.api.workloads import workload_paths

    paths: dict[str, Any] = {
        "/healthz": {"get": _plain("health", "health", "Health of each part")},
        "/readyz": {"get": _plain("ready", "health", "Ready to serve")},
        "/version": {"get": _plain("version", "health", "CloudLand version")},
        PREFIX: {"get": _plain("discovery", "discovery", "Kinds served")},
        f"{PREFIX}/apply": {"post": _plain(
            "apply", "stacks", "Create or update many objects, all or nothing", body=True)},
        f"{PREFIX}/destroy": {"post": _plain(
            "destroy", "stacks", "Delete objects and everything in a stack", body=True)},
    }
    for info in KINDS.values():
        paths.update(kind_paths(info))
    paths.update(workload_paths())
    schemas = kind_schemas()
    schemas["Error"] = ERROR
    return {
        "openapi": "3.1.0",
        "info": {"title": "CloudLand API", "version": __version__,
                 "description": "CloudLand control-plane API"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
