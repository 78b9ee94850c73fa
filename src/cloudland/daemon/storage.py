"""Object storage in `cloudland up`: the S3 server, its access keys and notifications.

Access keys are Secrets in the `cloudland-system` namespace, labelled
`cloudland.io/access-key` and named `s3-<access key id, lowercased>` (created by
`cloudland keys create`), so they live in the store like everything else and the
S3 server never needs a store of its own for them. Notification rules come from
Bucket resources (the Bucket's name is the S3 bucket's name) and are kept in a
map that follows Bucket changes, so a PUT costs a dict lookup, not a store query.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudland.api.service import Change, ResourceService
from cloudland.errors import Invalid
from cloudland.model.accesskeys import KEY_LABEL, KEYS_NAMESPACE, key_id_of, key_secret_name
from cloudland.storage.errors import S3Error
from cloudland.storage.events import Rule, S3Events, rules_from_spec
from cloudland.storage.objects import ObjectStore
from cloudland.storage.server import S3Server, check_bucket_name
from cloudland.storage.sigv4 import Credentials, forget_signing_keys

log = logging.getLogger("cloudland.storage")

Object = dict[str, Any]
def bucket_admission(service: ResourceService) -> Callable[[str, Object, Object | None], None]:
    """An admission hook for Bucket resources: the name must be a valid S3 bucket name,
    and unique across namespaces (S3 bucket names are global; two namespaces sharing
    one bucket could delete each other's objects)."""
    def admit(operation: str, obj: Object, old: Object | None) -> None:
        if obj.get("kind") != "Bucket":
            return
        meta = obj["metadata"]
        try:
            check_bucket_name(meta["name"])
        except S3Error as err:
            raise Invalid(f"Bucket {meta['name']}: {err.message}", field="metadata.name",
                          hint="S3 bucket names are 3-63 characters: a-z, 0-9, '.', '-'") \
                from None
        for other in service.list("Bucket")[0]:
            om = other["metadata"]
            if om["name"] == meta["name"] and om["namespace"] != meta["namespace"]:
                raise Invalid(f"Bucket {meta['name']} already exists in namespace "
                              f"{om['namespace']}: S3 bucket names are global",
                              field="metadata.name", hint="choose another name")
    return admit


class AccessKeys:
    """Looks up an access key's secret in the store (Secrets labelled as access keys).

    Every signed S3 request asks, so known keys are kept in memory and forgotten
    when their Secret changes or goes (the cache follows the store's changes)."""

    def __init__(self, service: ResourceService) -> None:
        self.service = service
        self._known: dict[str, Credentials] = {}
        self._unsubscribe: Any = None

    def start(self) -> None:
        self._unsubscribe = self.service.subscribe(self._on_change)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _on_change(self, change: Change) -> None:
        if change.kind != "Secret" or change.namespace != KEYS_NAMESPACE:
            return
        if self._known.pop(key_id_of(change.object["metadata"]["name"]), None):
            forget_signing_keys()  # and every day key derived from it (and others)

    def __call__(self, access_key: str) -> Credentials | None:
        known = self._known.get(access_key)
        if known is not None:
            return known
        found = self._lookup(access_key)
        if found is not None:
            self._known[access_key] = found
        return found

    def _lookup(self, access_key: str) -> Credentials | None:
        if not access_key or len(access_key) > 128:
            return None
        obj = self.service.find("Secret", KEYS_NAMESPACE, key_secret_name(access_key))
        if obj is None or KEY_LABEL not in (obj["metadata"].get("labels") or {}):
            return None
        data = obj.get("data") or {}
        try:
            key_id = base64.b64decode(data.get("accessKeyId", "")).decode()
            secret = base64.b64decode(data.get("secretAccessKey", "")).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return Credentials(key_id, secret) if key_id == access_key and secret else None


class BucketRules:
    """Bucket name -> notification rules, following Bucket resources as they change."""

    def __init__(self, service: ResourceService) -> None:
        self.service = service
        self._rules: dict[str, list[Rule]] = {}
        self._unsubscribe: Any = None

    def start(self) -> None:
        self._unsubscribe = self.service.subscribe(self._on_change)
        items, _ = self.service.list("Bucket")
        for obj in items:
            self._set(obj)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def __call__(self, bucket: str) -> list[Rule]:
        return self._rules.get(bucket, [])

    def _on_change(self, change: Change) -> None:
        if change.kind != "Bucket":
            return
        if change.type == "DELETED":
            self._rules.pop(change.object["metadata"]["name"], None)
        else:
            self._set(change.object)

    def _set(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        self._rules[name] = rules_from_spec(obj.get("spec") or {}, name)


class Storage:
    """The object store, its S3 server and its event delivery, started and stopped as one."""

    def __init__(self, service: ResourceService, root: Path, *, port: int,
                 host: str = "127.0.0.1", max_connections: int = 1024) -> None:
        self.store = ObjectStore(root)
        self.rules = BucketRules(service)
        self.events = S3Events(self.rules)
        self.keys = AccessKeys(service)
        self.server = S3Server(self.store, self.keys, host=host, port=port,
                               events=self.events, max_connections=max_connections)

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        self.rules.start()
        self.keys.start()
        await self.events.start()
        await self.server.start()
        log.info("S3 listening on %s", self.url)

    async def stop(self) -> None:
        await self.server.stop()
        await self.events.stop()
        self.rules.stop()
        self.keys.stop()
        self.store.close()

    def health(self) -> dict[str, Any]:
        return {"healthy": True, "url": self.url,
                "events delivered": self.events.delivered,
                "events failed": self.events.failed, "events dropped": self.events.dropped,
                "events pending": self.events.pending()}
