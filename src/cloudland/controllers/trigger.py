"""Trigger reconciler: resolves its Broker (BrokerNotFound), subscriber and dead-letter sink.

Delivering events belongs to the broker's dispatcher, which a later capability adds.
"""

from __future__ import annotations

from cloudland.controllers.accepting import AcceptingReconciler, Object, Ref, broker_ref


class TriggerReconciler(AcceptingReconciler):
    kind = "Trigger"
    watches = ("Broker", "Service", "Function")
    awaiting = ("its broker and subscriber exist; the dispatcher that delivers its events "
                "is not part of this version yet")

    def references(self, obj: Object) -> list[Ref]:
        ns, spec = obj["metadata"]["namespace"], obj["spec"]
        refs = [Ref("Broker", ns, spec["broker"], "spec.broker", "BrokerNotFound")]
        sub = spec["subscriber"].get("ref")
        if sub:
            refs.append(Ref(sub["kind"], sub.get("namespace") or ns, sub["name"],
                            "spec.subscriber.ref", "SubscriberNotFound"))
        delivery = spec.get("delivery") or {}
        return refs + broker_ref(ns, delivery.get("deadLetterSink"),
                                 "spec.delivery.deadLetterSink")
