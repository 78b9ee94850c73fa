"""The one place that lists the reconcilers: one per kind, every kind but Event.

`daemon/` passes `default_reconcilers()` to the Manager; a later capability
that takes over a kind replaces its entry here.
"""

from __future__ import annotations

from cloudland.controllers.base import Reconciler
from cloudland.controllers.broker import BrokerReconciler
from cloudland.controllers.bucket import BucketReconciler
from cloudland.controllers.cronjob import CronJobReconciler
from cloudland.controllers.function import FunctionReconciler
from cloudland.controllers.job import JobReconciler
from cloudland.controllers.policy import PolicyReconciler
from cloudland.controllers.route import RouteReconciler
from cloudland.controllers.service import ServiceReconciler
from cloudland.controllers.trigger import TriggerReconciler
from cloudland.controllers.workload import Runtime
from cloudland.storage.objects import ObjectStore

# Like Kubernetes, Secrets and ConfigMaps have no status and no controller of their
# own: storing them is all there is to do.  The kinds that read them list them in
# `watches`, so a change to one re-checks its consumers.
NO_RECONCILER = ("Event", "Secret", "ConfigMap")


def default_reconcilers(runtime: Runtime, *,
                        objects: ObjectStore | None = None) -> list[Reconciler]:
    return [
        ServiceReconciler(runtime),
        FunctionReconciler(),
        RouteReconciler(),
        BucketReconciler(objects),
        BrokerReconciler(),
        TriggerReconciler(),
        PolicyReconciler(),
        JobReconciler(runtime),
        CronJobReconciler(),
    ]
