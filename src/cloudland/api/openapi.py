"""The OpenAPI description: every kind's paths and JSON Schema.

The router serves all kinds through a few generic routes (cheap to match),
and handlers read bodies themselves (to bound size and report errors in one
shape), so FastAPI cannot describe them; this module writes the per-kind
paths the way Kubernetes publishes them, with each kind's schema.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
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


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                             description="CloudLand control-plane API")
        for info in KINDS.values():
            schema.setdefault("paths", {}).update(kind_paths(info))
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(kind_schemas())
        components["Error"] = ERROR
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
