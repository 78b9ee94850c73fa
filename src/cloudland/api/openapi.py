"""Put every kind's JSON Schema into the OpenAPI description.

Handlers read bodies themselves (to bound their size and report errors in one
shape), so FastAPI cannot see the body models; this adds them as components
that the routes' request bodies refer to.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cloudland.model.kinds import KINDS
from cloudland.model.meta import Status


def kind_schemas() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (info.model, "validation") for info in KINDS.values()]
    models.append((Status, "validation"))
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    return dict(top.get("$defs", {}))


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                             description="CloudLand control-plane API")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(kind_schemas())
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
