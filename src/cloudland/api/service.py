"""Resource operations with their rules: validate, default, admit, then store.

Both the HTTP handlers and the in-process controllers call this class; it is
the only code that writes to the store.  Admission hooks (policies, later
issues) see every create and update before it is written.
"""

from __future__ import annotations

import builtins
import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from cloudland.api.merge import merge_patch
from cloudland.errors import BadRequest, CloudLandError, Forbidden, Invalid, NotFound
from cloudland.model.kinds import KINDS, KindInfo
from cloudland.model.meta import DEFAULT_NAMESPACE, Status
from cloudland.model.selectors import Selector
from cloudland.model.validate import parse_object
from cloudland.store import Change, Store
from cloudland.store.store import now_rfc3339

Object = dict[str, Any]
STACK_LABEL = "cloudland.io/stack"
SOURCE_ANNOTATION = "cloudland.io/source"
# A hash of the intent as last applied: when the live intent no longer hashes
# to it, someone changed the object outside its files (drift).
APPLIED_ANNOTATION = "cloudland.io/applied"

# An admission hook sees (operation, new object, old object or None) and raises
# Forbidden or Invalid to refuse the write.
Admission = Callable[[str, Object, Object | None], None]

Action = Literal["created", "configured", "unchanged", "deleted"]


@dataclass
class ApplyResult:
    kind: str
    namespace: str
    name: str
    action: Action
    before: Object | None = None
    after: Object | None = None
    drift: bool = False

    def to_dict(self, *, with_objects: bool) -> Object:
        out: Object = {"kind": self.kind, "namespace": self.namespace, "name": self.name,
                       "action": self.action, "drift": self.drift}
        if with_objects:
            out["before"] = self.before
            out["after"] = self.after
        return out


@dataclass
class ResourceService:
    store: Store
    admission: builtins.list[Admission] = field(default_factory=list)

    # ---- reads ----------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> Object:
        obj = self.store.get(kind, namespace, name)
        if obj is None:
            raise NotFound.object(kind, namespace, name, hint="list what exists with: "
                                  f"cloudland get {kind.lower()} -n {namespace}")
        return obj

    def find(self, kind: str, namespace: str, name: str) -> Object | None:
        return self.store.get(kind, namespace, name)

    def list(self, kind: str, namespace: str | None = None,
             selector: Selector | None = None) -> tuple[builtins.list[Object], int]:
        return self.store.list(kind, namespace, selector)

    def subscribe(self, notify: Callable[[Change], None]) -> Callable[[], None]:
        return self.store.subscribe(notify)

    # ---- single-object writes -------------------------------------------------

    def create(self, doc: Any, *, kind: str | None = None, namespace: str | None = None) -> Object:
        obj = self._validate(doc, kind=kind, namespace=namespace)
        self._admit("CREATE", obj, None)
        return self.store.create(obj)

    def replace(self, doc: Any, *, kind: str, namespace: str, name: str) -> Object:
        obj = self._validate(doc, kind=kind, namespace=namespace, name=name)
        with self.store.transaction():
            old = self.get(kind, namespace, name)
            self._check_immutable(old, obj)
            self._admit("UPDATE", obj, old)
            return self.store.update(obj)

    def patch(self, patch: Any, *, kind: str, namespace: str, name: str) -> Object:
        if not isinstance(patch, dict):
            raise BadRequest("a merge patch must be a JSON object",
                             hint='send e.g. {"spec": {"replicas": 3}}')
        with self.store.transaction():
            old = self.get(kind, namespace, name)
            rv = (patch.get("metadata") or {}).get("resourceVersion")
            base = {k: v for k, v in old.items() if k != "status"}
            base["metadata"] = {k: v for k, v in old["metadata"].items()
                                if k not in ("resourceVersion", "uid", "generation",
                                             "creationTimestamp", "deletionTimestamp")}
            merged = merge_patch(base, {k: v for k, v in patch.items() if k != "status"})
            obj = self._validate(merged, kind=kind, namespace=namespace, name=name)
            if rv is not None:
                obj["metadata"]["resourceVersion"] = rv
            self._check_immutable(old, obj)
            self._admit("UPDATE", obj, old)
            return self.store.update(obj)

    def delete(self, kind: str, namespace: str, name: str, *, rv: str | None = None) -> Object:
        return self.store.delete(kind, namespace, name, rv=rv)

    def update_status(self, kind: str, namespace: str, name: str, status: Any,
                      *, rv: str | None = None) -> Object:
        """The status subresource: written by controllers, never changes intent."""
        if not isinstance(status, dict):
            raise Invalid("status must be an object", field="status")
        try:
            clean = Status.model_validate(status).model_dump(mode="json", exclude_none=True)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = "status." + ".".join(str(p) for p in err["loc"])
            raise Invalid(f"{where}: {err['msg']}", field=where) from None
        obj = {"kind": kind, "metadata": {"namespace": namespace, "name": name,
                                          "resourceVersion": rv}, "status": clean}
        return self.store.update(obj, status=True)

    def set_finalizers(self, obj: Object, finalizers: builtins.list[str]) -> Object:
        """Controllers add or remove their finalizers; dropping the last one
        of a deleting object completes its deletion."""
        new = {**obj, "metadata": {**obj["metadata"], "finalizers": finalizers}}
        return self.store.update(new)

    # ---- events ---------------------------------------------------------------

    def record_event(self, about: Object, type_: str, reason: str, message: str,
                     *, source: str = "cloudland") -> Object:
        """A Kubernetes-style event; repeats of the same event bump its count."""
        meta = about["metadata"]
        digest = hashlib.sha1(
            f"{about['kind']}/{meta.get('uid')}/{type_}/{reason}/{message}".encode()
        ).hexdigest()[:10]
        name = f"{meta['name'][:52]}-{digest}"
        ns = meta.get("namespace", DEFAULT_NAMESPACE)
        now = now_rfc3339()
        existing = self.store.get("Event", ns, name)
        if existing:
            updated = {**existing, "count": int(existing.get("count", 1)) + 1,
                       "lastTimestamp": now}
            updated["metadata"] = {**existing["metadata"]}
            updated["metadata"].pop("resourceVersion", None)
            return self.store.update(updated)
        event = parse_object({
            "apiVersion": "cloudland/v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {"kind": about["kind"], "name": meta["name"], "namespace": ns,
                               "uid": meta.get("uid")},
            "type": type_, "reason": reason, "message": message, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now, "source": source,
        })
        return self.store.create(event)

    # ---- apply, plan and destroy ----------------------------------------------

    def apply(self, docs: builtins.list[Any], *, stack: str | None = None, prune: bool = False,
              dry_run: bool = False) -> builtins.list[ApplyResult]:
        """Create or update every document, all or nothing.

        Every document is validated before any is written; with `prune`, objects
        labelled with `stack` that are not in `docs` are deleted.  With
        `dry_run` nothing stays written (the writes happen, so admission sees the
        whole batch, and are rolled back) and results carry before/after objects, so
        `plan` can show the exact diff including server-side defaults.
        """
        objs = self._validate_all(docs, stack)
        results: builtins.list[ApplyResult] = []
        with self._writes(dry_run):
            # Prune first: admission then judges the documents against what the
            # stack will hold (a Route renamed in the same apply does not conflict
            # with its old self). Results list the applied documents first.
            pruned: builtins.list[ApplyResult] = []
            if stack and prune:
                keep = {_key(o) for o in objs}
                pruned = [self._delete_result(old)
                          for old in self._stack_objects(stack) if _key(old) not in keep]
            for obj in objs:
                results.append(self._apply_one(obj, dry_run))
            results += pruned
        return results

    def stack_orphans(self, docs: builtins.list[Any], stack: str) -> builtins.list[Object]:
        """Objects of `stack` that the given documents no longer declare."""
        keep = {_key(o) for o in self._validate_all(docs, stack)}
        return [o for o in self._stack_objects(stack) if _key(o) not in keep]

    def destroy(self, refs: builtins.list[tuple[str, str, str]], *, stack: str | None = None,
                dry_run: bool = False) -> builtins.list[ApplyResult]:
        """Delete the named objects and everything labelled with `stack`."""
        results: builtins.list[ApplyResult] = []
        seen: set[tuple[str, str, str]] = set()
        with self._writes(dry_run):
            targets = [self.store.get(*ref) for ref in refs]
            if stack:
                targets += self._stack_objects(stack)
            for obj in targets:
                if obj is None or _key(obj) in seen:
                    continue
                seen.add(_key(obj))
                results.append(self._delete_result(obj))
        return results

    @contextmanager
    def _writes(self, dry_run: bool) -> Iterator[None]:
        """One transaction for a batch; a dry run's is rolled back at the end, so its
        writes happen (admission sees the whole batch, as in the real apply) and stay
        invisible."""
        try:
            with self.store.transaction():
                yield
                if dry_run:
                    raise _DryRun
        except _DryRun:
            pass

    def _apply_one(self, obj: Object, dry_run: bool) -> ApplyResult:
        kind, ns, name = _key(obj)
        obj["metadata"]["annotations"][APPLIED_ANNOTATION] = intent_hash(obj)
        old = self.store.get(kind, ns, name)
        if old is None:
            self._admit("CREATE", obj, None)
            created = self.store.create(copy.deepcopy(obj) if dry_run else obj)
            return ApplyResult(kind, ns, name, "created", None, obj if dry_run else created)
        # Apply owns intent, labels and annotations; finalizers and status stay
        # with the controllers that set them.
        obj["metadata"]["finalizers"] = old["metadata"].get("finalizers", [])
        obj["metadata"].pop("resourceVersion", None)
        self._check_immutable(old, obj)
        self._admit("UPDATE", obj, old)
        recorded = old["metadata"].get("annotations", {}).get(APPLIED_ANNOTATION)
        drift = recorded is not None and recorded != intent_hash(old)
        if dry_run:
            changed = _intent(old) != _intent(obj)
            if changed:  # written and rolled back: admission of later documents sees it
                self.store.update(copy.deepcopy(obj))
            return ApplyResult(kind, ns, name, "configured" if changed else "unchanged",
                               old, obj, drift)
        if _intent(old) == _intent(obj):
            # Same intent: keep the object as it is (its source path may differ
            # when applied from another directory; that is not a change).
            return ApplyResult(kind, ns, name, "unchanged", old, old, drift)
        new = self.store.update(obj)
        return ApplyResult(kind, ns, name, "configured", old, new, drift)

    def _delete_result(self, obj: Object) -> ApplyResult:
        kind, ns, name = _key(obj)
        self.store.delete(kind, ns, name)  # inside `_writes`: rolled back in a dry run
        return ApplyResult(kind, ns, name, "deleted", obj, None)

    def _stack_objects(self, stack: str) -> builtins.list[Object]:
        found: builtins.list[Object] = []
        for info in KINDS.values():
            items, _ = self.store.list(info.kind, None,
                                       lambda lb: lb.get(STACK_LABEL) == stack)
            found.extend(items)
        return found

    # ---- validation and admission ---------------------------------------------

    def _validate_all(self, docs: builtins.list[Any], stack: str | None) -> builtins.list[Object]:
        objs: builtins.list[Object] = []
        causes: builtins.list[Object] = []
        where: dict[tuple[str, str, str], int] = {}
        for index, doc in enumerate(docs):
            try:
                obj = self._validate(doc)
            except CloudLandError as err:
                for cause in err.causes or [{"field": err.field or "(root)",
                                             "message": err.message}]:
                    causes.append({**cause, "index": index,
                                   **({"hint": err.hint} if err.hint else {})})
                continue
            if stack:
                obj["metadata"]["labels"][STACK_LABEL] = stack
            key = _key(obj)
            if key in where:
                causes.append({"index": index, "field": "metadata.name",
                               "message": f"{key[0]} {key[1]}/{key[2]} is declared twice "
                                          f"(documents {where[key] + 1} and {index + 1})"})
            where[key] = index
            objs.append(obj)
        if causes:
            first = causes[0]
            more = f" (and {len(causes) - 1} more)" if len(causes) > 1 else ""
            raise Invalid(f"document {first['index'] + 1}: {first['field']}: "
                          f"{first['message']}{more}; nothing was applied",
                          field=first["field"], causes=causes)
        return objs

    def _validate(self, doc: Any, *, kind: str | None = None, namespace: str | None = None,
                  name: str | None = None) -> Object:
        if isinstance(doc, dict) and namespace is not None:
            meta = doc.get("metadata")
            if isinstance(meta, dict) and meta.get("namespace") is None:
                doc = {**doc, "metadata": {**meta, "namespace": namespace}}
        obj = parse_object(doc)
        info: KindInfo = KINDS[obj["kind"]]
        meta = obj["metadata"]
        for label, expected, got in (("kind", kind, obj["kind"]),
                                     ("metadata.namespace", namespace, meta["namespace"]),
                                     ("metadata.name", name, meta["name"])):
            if expected is not None and expected != got:
                raise BadRequest(f"{label} is '{got}' but the URL says '{expected}'",
                                 field=label, hint="make the body and the URL agree")
        if not info.user_writable and kind is None:
            raise Forbidden(f"{info.kind} objects are written by CloudLand, not applied",
                            field="kind")
        return obj

    def _check_immutable(self, old: Object, new: Object) -> None:
        if old.get("immutable") and _intent(old) != _intent(new):
            raise Invalid(f"{old['kind']} {old['metadata']['name']} is immutable",
                          field="data", hint="delete and re-create it to change it")

    def _admit(self, operation: str, obj: Object, old: Object | None) -> None:
        for hook in self.admission:
            hook(operation, obj, old)


class _DryRun(Exception):
    """Raised inside a dry run's transaction to roll back everything it wrote."""


def _key(obj: Object) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]


def _intent(obj: Object) -> Object:
    """What a manifest decides: spec fields, labels and annotations (less bookkeeping)."""
    fields = KINDS[obj["kind"]].spec_fields
    meta = obj["metadata"]
    annotations = {k: v for k, v in meta.get("annotations", {}).items()
                   if k not in (APPLIED_ANNOTATION, SOURCE_ANNOTATION)}
    return {"labels": meta.get("labels", {}), "annotations": annotations,
            **{f: obj.get(f) for f in fields}}


def intent_hash(obj: Object) -> str:
    """A short hash of what a manifest says, ignoring bookkeeping annotations."""
    intent = _intent(obj)
    return hashlib.sha256(json.dumps(intent, sort_keys=True).encode()).hexdigest()[:16]
