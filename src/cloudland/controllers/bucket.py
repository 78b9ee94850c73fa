"""Bucket reconciler: for now, checks the Brokers its notifications deliver to.

Storing objects belongs to the S3 server, which a later capability adds.
"""

from __future__ import annotations

from cloudland.controllers.accepting import AcceptingReconciler, Object, Ref, broker_ref


class BucketReconciler(AcceptingReconciler):
    kind = "Bucket"
    watches = ("Broker",)
    awaiting = "the S3 server that stores its objects is not part of this version yet"

    def references(self, obj: Object) -> list[Ref]:
        ns = obj["metadata"]["namespace"]
        return [ref for i, note in enumerate(obj["spec"].get("notifications", []))
                for ref in broker_ref(ns, note.get("sink"), f"spec.notifications[{i}].sink")]
