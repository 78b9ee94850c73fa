"""Bucket reconciler: the S3 bucket a Bucket resource declares exists, with its access.

The Bucket's name is the S3 bucket's name. The controller creates it (an existing
bucket, made earlier through S3, is adopted), keeps `access: public-read` in step,
and, when the Bucket declares `cors` at all, the bucket's CORS rules too (so a
PutBucketCors through S3 lasts until the next reconcile; without `cors` in the spec,
S3 clients own the configuration), and on deletion follows `deletionPolicy`:
`retain` (the default) leaves the bucket and its objects; `delete` removes every
object and the bucket. Notifications are read by the S3 server's event delivery
directly from the Bucket; Brokers they name are checked here.
"""

from __future__ import annotations

import asyncio

from cloudland.controllers.accepting import AcceptingReconciler, Object, Readiness, Ref, broker_ref
from cloudland.controllers.base import Key, Result
from cloudland.controllers.context import Context
from cloudland.storage import cors
from cloudland.storage.cors import Rule
from cloudland.storage.errors import S3Error
from cloudland.storage.objects import ObjectStore

FINALIZER = "cloudland.io/bucket"


class BucketReconciler(AcceptingReconciler):
    kind = "Bucket"
    watches = ("Broker",)

    def __init__(self, objects: ObjectStore | None = None) -> None:
        self.objects = objects

    def references(self, obj: Object) -> list[Ref]:
        ns = obj["metadata"]["namespace"]
        return [ref for i, note in enumerate(obj["spec"].get("notifications", []))
                for ref in broker_ref(ns, note.get("sink"), f"spec.notifications[{i}].sink")]

    async def reconcile(self, key: Key, ctx: Context) -> Result | None:
        obj = ctx.find(key)
        if obj is not None and obj["metadata"].get("deletionTimestamp"):
            if self.objects is not None and obj["spec"].get("deletionPolicy") == "delete":
                await asyncio.to_thread(empty_and_delete, self.objects, key.name)
            ctx.remove_finalizer(obj, FINALIZER)
            return None
        if obj is not None and self.objects is not None:
            wants_finalizer = obj["spec"].get("deletionPolicy") == "delete"
            has = FINALIZER in (obj["metadata"].get("finalizers") or [])
            if wants_finalizer and not has:
                ctx.add_finalizer(obj, FINALIZER)
            elif has and not wants_finalizer:
                ctx.remove_finalizer(obj, FINALIZER)
        return await super().reconcile(key, ctx)

    def assess(self, obj: Object, status: Object, ctx: Context) -> tuple[Readiness, Result | None]:
        name = obj["metadata"]["name"]
        if self.objects is None:
            return ("False", "StorageUnavailable",
                    f"bucket {name}: this CloudLand runs no object store"), None
        public = obj["spec"].get("access") == "public-read"
        try:
            # The store keeps its buckets in memory: an unchanged Bucket writes nothing.
            created = not self._exists(name)
            if created:
                self._create(name)
            if self.objects.bucket(name).public_read != public:
                self.objects.set_public_read(name, public)
            if "cors" in obj["spec"]:
                rules = cors_rules(obj["spec"]["cors"])
                if self.objects.bucket(name).cors != rules:
                    self.objects.set_cors(name, rules)
        except S3Error as err:
            return ("False", err.code, f"bucket {name}: {err.message}"), None
        status["bucket"] = name
        verb = "created" if created else "exists"
        return ("True", "Ready", f"S3 bucket {name} {verb} "
                f"({obj['spec'].get('access', 'private')})"), None


    def _exists(self, name: str) -> bool:
        assert self.objects is not None
        try:
            self.objects.bucket(name)
        except S3Error:
            return False
        return True

    def _create(self, name: str) -> None:
        assert self.objects is not None
        try:
            self.objects.create_bucket(name)
        except S3Error as err:  # made through S3 a moment ago: adopt it
            if err.code != "BucketAlreadyOwnedByYou":
                raise


def cors_rules(spec: list[Object]) -> tuple[Rule, ...] | None:
    """A Bucket's `spec.cors` as the object store keeps rules (none: no configuration),
    checked as a PutBucketCors is (the model checks the same; a stored object from an
    older CloudLand may not have been)."""
    rules = tuple(Rule(origins=tuple(r["allowedOrigins"]), methods=tuple(r["allowedMethods"]),
                       headers=tuple(r.get("allowedHeaders", ())),
                       expose=tuple(r.get("exposeHeaders", ())),
                       max_age=r.get("maxAgeSeconds"), id=r.get("id")) for r in spec)
    return cors.check(rules) if rules else None


def empty_and_delete(objects: ObjectStore, bucket: str) -> None:
    """Delete every object, every unfinished upload, then the bucket (if it exists)."""
    try:
        objects.bucket(bucket)
    except S3Error:
        return
    while True:
        page = objects.list_objects(bucket, max_keys=1000)
        for info in page.objects:
            objects.delete(bucket, info.key)
        if not page.truncated:
            break
    while True:
        uploads, more = objects.list_uploads(bucket)
        for upload in uploads:
            objects.abort_upload(upload.id)
        if not more:
            break
    objects.delete_bucket(bucket)
