"""The HTTP face of the API: Kubernetes-shaped paths over `ResourceService`.

    /apis/cloudland/v1/namespaces/{ns}/{plural}[/{name}[/status]]
    /apis/cloudland/v1/{plural}                  (all namespaces)
    /apis/cloudland/v1/apply | /destroy          (stacks of manifests)

Bodies are read here with a size bound and validated by the service, so every
failure, including malformed JSON, leaves in the one error shape of
`CloudLandError.to_dict`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloudland import __version__
from cloudland.api.auth import Principal, TokenAuth
from cloudland.api.openapi import install_openapi
from cloudland.api.service import ResourceService
from cloudland.api.watch import watch_stream
from cloudland.errors import (
    BadRequest,
    CloudLandError,
    Invalid,
    NotFound,
    TooLarge,
    UnsupportedMediaType,
)
from cloudland.model.kinds import KINDS, KindInfo, kind_by_plural
from cloudland.model.selectors import parse_selector

log = logging.getLogger("cloudland.api")
PREFIX = "/apis/cloudland/v1"
DEFAULT_BODY_LIMIT = 8 * 1024 * 1024

Health = Callable[[], dict[str, Any]]


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode()


def error_response(err: CloudLandError) -> JSON:
    return JSON(err.to_dict(), status_code=err.status)


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, refusing more than `limit` bytes."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype not in ("application/json", "application/merge-patch+json", ""):
        raise UnsupportedMediaType(f"content type '{ctype}' is not supported",
                                   hint="send application/json")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body is {declared} bytes; the limit is {limit}",
                       hint="split the apply into smaller files")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body exceeds the limit of {limit} bytes",
                           hint="split the apply into smaller files")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def create_app(
    service: ResourceService,
    *,
    auth: TokenAuth | None = None,
    health: Health | None = None,
    body_limit: int = DEFAULT_BODY_LIMIT,
) -> FastAPI:
    app = FastAPI(title="CloudLand API", version=__version__, openapi_url="/openapi.json",
                  docs_url="/docs", redoc_url=None)
    authenticate = auth or TokenAuth(None)

    async def principal(request: Request) -> Principal:
        return authenticate(request)

    @app.exception_handler(CloudLandError)
    async def _cloudland_error(_: Request, err: CloudLandError) -> JSON:
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _bad_params(_: Request, exc: RequestValidationError) -> JSON:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or str(first["loc"][0])
        return error_response(BadRequest(f"{where}: {first['msg']}", field=where))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSON:
        err = CloudLandError(str(exc.detail))
        err.status, err.reason = exc.status_code, {404: "NotFound", 405: "MethodNotAllowed"}.get(
            exc.status_code, "BadRequest")
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSON:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        return error_response(CloudLandError("internal error; see the CloudLand log"))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> JSON:
        parts = health() if health else {"api": {"healthy": True}}
        ok = all(p.get("healthy", False) for p in parts.values())
        return JSON({"status": "ok" if ok else "degraded", "parts": parts},
                    status_code=200 if ok else 503)

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSON:
        return JSON({"status": "ok"})

    @app.get("/version", tags=["health"])
    async def version() -> JSON:
        return JSON({"version": __version__})

    router = APIRouter(prefix=PREFIX, dependencies=[Depends(principal)])

    @router.get("", tags=["discovery"])
    async def discovery() -> JSON:
        return JSON({"groupVersion": "cloudland/v1", "resources": [
            {"kind": i.kind, "name": i.plural, "shortNames": list(i.short_names),
             "namespaced": True} for i in KINDS.values()]})

    _stack_routes(router, service, body_limit)
    _resource_routes(router, service, body_limit)
    app.include_router(router)
    install_openapi(app)
    return app


def _stack_routes(router: APIRouter, service: ResourceService, limit: int) -> None:
    @router.post("/apply", tags=["stacks"], operation_id="apply")
    async def apply(request: Request) -> JSON:
        body = await read_json(request, limit)
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise BadRequest('expected {"items": [...], "stack": "...", "prune": false}',
                             field="items")
        stack = _opt_str(body, "stack")
        if stack is not None:
            _check_stack(stack)
        dry = bool(body.get("dryRun", False))
        results = service.apply(body["items"], stack=stack, prune=bool(body.get("prune")),
                                dry_run=dry)
        orphans = [] if not stack or body.get("prune") else [
            {"kind": o["kind"], "namespace": o["metadata"]["namespace"],
             "name": o["metadata"]["name"]} for o in service.stack_orphans(body["items"], stack)]
        return JSON({"items": [r.to_dict(with_objects=dry) for r in results],
                     "orphans": orphans, "dryRun": dry})

    @router.post("/destroy", tags=["stacks"], operation_id="destroy")
    async def destroy(request: Request) -> JSON:
        body = await read_json(request, limit)
        refs_in = body.get("items") if isinstance(body, dict) else None
        if not isinstance(refs_in, list):
            raise BadRequest('expected {"items": [{"kind", "namespace", "name"}], "stack": ...}',
                             field="items")
        refs = []
        for i, ref in enumerate(refs_in):
            if not (isinstance(ref, dict) and all(isinstance(ref.get(k), str)
                                                  for k in ("kind", "namespace", "name"))):
                raise Invalid("each item needs string kind, namespace and name",
                              field=f"items[{i}]")
            refs.append((ref["kind"], ref["namespace"], ref["name"]))
        stack = _opt_str(body, "stack")
        results = service.destroy(refs, stack=stack, dry_run=bool(body.get("dryRun", False)))
        return JSON({"items": [r.to_dict(with_objects=False) for r in results]})


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{key} must be a string", field=key)
    return value


def _check_stack(stack: str) -> None:
    from cloudland.model.meta import check_labels

    try:
        check_labels({"cloudland.io/stack": stack})
    except ValueError as exc:
        raise Invalid(str(exc), field="stack") from None


def _info(plural: str) -> KindInfo:
    info = kind_by_plural(plural)
    if info is None:
        raise NotFound(f"'{plural}' is not a resource type",
                       hint="known: " + ", ".join(i.plural for i in KINDS.values()))
    return info


def _resource_routes(router: APIRouter, service: ResourceService, limit: int) -> None:
    """Generic routes for every kind: a handful of patterns instead of ~10 per kind,
    so matching a request stays cheap.  `openapi.py` documents them per kind."""
    hidden: dict[str, Any] = {"include_in_schema": False}
    base = "/namespaces/{namespace}/{plural}"
    one = base + "/{name}"

    async def list_or_watch(plural: str, namespace: str | None, labelSelector: str | None,
                            watch: bool, resourceVersion: str | None) -> Any:
        kind = _info(plural).kind
        selector = parse_selector(labelSelector)
        if watch:
            return StreamingResponse(
                watch_stream(service, kind, namespace, selector, _revision(resourceVersion)),
                media_type="application/x-ndjson")
        items, rv = service.list(kind, namespace, selector)
        return JSON({"kind": f"{kind}List", "apiVersion": "cloudland/v1",
                     "metadata": {"resourceVersion": str(rv)}, "items": items})

    @router.get("/{plural}", **hidden)
    async def list_all(plural: str, labelSelector: str | None = None, watch: bool = False,
                       resourceVersion: str | None = None) -> Any:
        return await list_or_watch(plural, None, labelSelector, watch, resourceVersion)

    @router.get(base, **hidden)
    async def list_ns(plural: str, namespace: str, labelSelector: str | None = None,
                      watch: bool = False, resourceVersion: str | None = None) -> Any:
        return await list_or_watch(plural, namespace, labelSelector, watch, resourceVersion)

    @router.get("/watch/{plural}", **hidden)
    async def watch_all(plural: str, labelSelector: str | None = None,
                        resourceVersion: str | None = None) -> Any:
        return await list_or_watch(plural, None, labelSelector, True, resourceVersion)

    @router.get("/watch" + base, **hidden)
    async def watch_ns(plural: str, namespace: str, labelSelector: str | None = None,
                       resourceVersion: str | None = None) -> Any:
        return await list_or_watch(plural, namespace, labelSelector, True, resourceVersion)

    @router.post(base, status_code=201, **hidden)
    async def create(plural: str, namespace: str, request: Request) -> JSON:
        kind = _info(plural).kind
        obj = service.create(await read_json(request, limit), kind=kind, namespace=namespace)
        return JSON(obj, status_code=201)

    @router.get(one, **hidden)
    async def read(plural: str, namespace: str, name: str) -> JSON:
        return JSON(service.get(_info(plural).kind, namespace, name))

    @router.put(one, **hidden)
    async def replace(plural: str, namespace: str, name: str, request: Request) -> JSON:
        kind = _info(plural).kind
        doc = await read_json(request, limit)
        return JSON(service.replace(doc, kind=kind, namespace=namespace, name=name))

    @router.patch(one, **hidden)
    async def patch(plural: str, namespace: str, name: str, request: Request) -> JSON:
        kind = _info(plural).kind
        doc = await read_json(request, limit)
        return JSON(service.patch(doc, kind=kind, namespace=namespace, name=name))

    @router.delete(one, **hidden)
    async def delete(plural: str, namespace: str, name: str,
                     resourceVersion: str | None = None) -> JSON:
        return JSON(service.delete(_info(plural).kind, namespace, name, rv=resourceVersion))

    @router.get(one + "/status", **hidden)
    async def read_status(plural: str, namespace: str, name: str) -> JSON:
        return JSON(service.get(_info(plural).kind, namespace, name))

    @router.put(one + "/status", **hidden)
    async def replace_status(plural: str, namespace: str, name: str, request: Request) -> JSON:
        kind = _info(plural).kind
        doc = await read_json(request, limit)
        if not isinstance(doc, dict):
            raise BadRequest("expected an object with a status field", field="status")
        meta = doc.get("metadata")
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        return JSON(service.update_status(kind, namespace, name, doc.get("status"),
                                          rv=None if rv is None else str(rv)))


def _revision(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise BadRequest(f"resourceVersion '{value}' is not a revision number",
                         field="resourceVersion")
    return int(value)

