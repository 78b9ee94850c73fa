"""A thin, typed client for the control-plane API.

Every non-2xx answer becomes the `CloudLandError` the server described, and an
unreachable server becomes `Unavailable` with a hint, so callers handle one
error type.  `watch` resumes from the last revision it saw after a dropped
connection, so a consumer sees each change once.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator
from typing import Any

import httpx

from cloudland.errors import CloudLandError, Gone, Unavailable
from cloudland.home import Home
from cloudland.model.kinds import KINDS

PREFIX = "/apis/cloudland/v1"
Object = dict[str, Any]


def plural_of(kind: str) -> str:
    return KINDS[kind].plural


class Client:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    @classmethod
    def from_home(cls, home: Home) -> Client:
        state = home.running_state()
        if not state or not state.get("api"):
            raise Unavailable(
                f"CloudLand is not running on {home.root}",
                hint="start it with: cloudland up --detach"
                + ("" if home.root == Home.resolve().root else f" --home {home.root}"),
            )
        return cls(str(state["api"]))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- plumbing -------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach the CloudLand API at {self.base_url}: {exc}",
                              hint="is it running? check with: cloudland status") from None
        return self._decode(response)

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            return body
        if isinstance(body, dict) and "reason" in body:
            raise CloudLandError.from_dict(body)
        if response.status_code == 503:  # uvicorn's own answer past its connection limit
            raise Unavailable("the CloudLand API is at its connection limit (HTTP 503)",
                              hint="some client holds many connections open to it; they are "
                              "closed after 10 s idle: retry in a moment")
        err = CloudLandError(f"HTTP {response.status_code}: {response.text[:200]}")
        err.status = response.status_code
        raise err

    @staticmethod
    def _path(kind: str, namespace: str | None, name: str | None = None) -> str:
        plural = plural_of(kind)
        base = f"{PREFIX}/namespaces/{namespace}/{plural}" if namespace else f"{PREFIX}/{plural}"
        return f"{base}/{name}" if name else base

    # ---- resources ------------------------------------------------------------

    def health(self) -> Object:
        try:
            response = self._http.get("/healthz")
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach the CloudLand API at {self.base_url}: {exc}") from None
        return dict(response.json())

    def get(self, kind: str, namespace: str, name: str) -> Object:
        return dict(self.request("GET", self._path(kind, namespace, name)))

    def list(self, kind: str, namespace: str | None = None,
             selector: str | None = None) -> Object:
        params = {"labelSelector": selector} if selector else {}
        return dict(self.request("GET", self._path(kind, namespace), params=params))

    def create(self, obj: Object) -> Object:
        ns = obj["metadata"].get("namespace", "default")
        return dict(self.request("POST", self._path(obj["kind"], ns), json=obj))

    def replace(self, obj: Object) -> Object:
        meta = obj["metadata"]
        path = self._path(obj["kind"], meta.get("namespace", "default"), meta["name"])
        return dict(self.request("PUT", path, json=obj))

    def patch(self, kind: str, namespace: str, name: str, patch: Object) -> Object:
        return dict(self.request("PATCH", self._path(kind, namespace, name), json=patch,
                                 headers={"content-type": "application/merge-patch+json"}))

    def delete(self, kind: str, namespace: str, name: str) -> Object:
        return dict(self.request("DELETE", self._path(kind, namespace, name)))

    def update_status(self, kind: str, namespace: str, name: str, status: Object) -> Object:
        path = self._path(kind, namespace, name) + "/status"
        return dict(self.request("PUT", path, json={"status": status}))

    def apply(self, items: builtins.list[Object], *, stack: str | None = None, prune: bool = False,
              dry_run: bool = False) -> Object:
        body = {"items": items, "stack": stack, "prune": prune, "dryRun": dry_run}
        return dict(self.request("POST", f"{PREFIX}/apply", json=body))

    def destroy(self, refs: builtins.list[Object], *, stack: str | None = None,
                dry_run: bool = False) -> Object:
        body = {"items": refs, "stack": stack, "dryRun": dry_run}
        return dict(self.request("POST", f"{PREFIX}/destroy", json=body))

    def watch(self, kind: str, namespace: str | None = None, *, selector: str | None = None,
              resource_version: str | None = None, reconnects: int = 5) -> Iterator[Object]:
        """Yield watch events ({type, object}); BOOKMARKs are consumed, not yielded."""
        rv = resource_version
        failures = 0
        while True:
            params: dict[str, str] = {"watch": "true"}
            if selector:
                params["labelSelector"] = selector
            if rv is not None:
                params["resourceVersion"] = rv
            try:
                with self._http.stream("GET", self._path(kind, namespace), params=params,
                                       timeout=httpx.Timeout(30.0, read=None)) as response:
                    if not response.is_success:
                        response.read()
                        self._decode(response)
                    for line in response.iter_lines():
                        if not line:
                            continue
                        event = json.loads(line)
                        failures = 0
                        obj = event.get("object") or {}
                        if event["type"] == "ERROR":
                            raise CloudLandError.from_dict(obj)
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if event["type"] != "BOOKMARK":
                            yield event
            except (httpx.TransportError, Gone) as exc:
                failures += 1
                if failures > reconnects or (isinstance(exc, Gone) and rv is None):
                    raise Unavailable(f"watch lost: {exc}") from None
                continue
