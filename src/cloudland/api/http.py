"""HTTP plumbing shared by the API's handlers: JSON in and out, errors, query params."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from cloudland.errors import BadRequest, CloudLandError, TooLarge, UnsupportedMediaType

DEFAULT_BODY_LIMIT = 8 * 1024 * 1024
JSON_TYPES = ("application/json", "application/merge-patch+json", "")


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(err: CloudLandError) -> JSON:
    return JSON(err.to_dict(), status_code=err.status)


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, refusing more than `limit` bytes (chunked too)."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype not in JSON_TYPES:
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
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def query_bool(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None or value.lower() in ("false", "0", ""):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise BadRequest(f"{name}: '{value}' is not a boolean; use true or false", field=name)


def query_revision(request: Request) -> int | None:
    value = request.query_params.get("resourceVersion")
    if not value:
        return None
    if not value.isdigit():
        raise BadRequest(f"resourceVersion '{value}' is not a revision number",
                         field="resourceVersion")
    return int(value)


def optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{key} must be a string", field=key)
    return value
