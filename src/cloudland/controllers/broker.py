"""Broker reconciler: for now, checks the Broker its dead letters go to, if any.

Keeping the event log belongs to NATS JetStream, which a later capability adds.
"""

from __future__ import annotations

from cloudland.controllers.accepting import AcceptingReconciler, Object, Ref, broker_ref


class BrokerReconciler(AcceptingReconciler):
    kind = "Broker"
    watches = ("Broker",)
    awaiting = ("the event log (NATS JetStream) that keeps its events is not part of this "
                "version yet")

    def references(self, obj: Object) -> list[Ref]:
        delivery = obj["spec"].get("delivery") or {}
        return broker_ref(obj["metadata"]["namespace"], delivery.get("deadLetterSink"),
                          "spec.delivery.deadLetterSink")
