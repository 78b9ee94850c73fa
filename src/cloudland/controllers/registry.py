"""The one place that lists the reconcilers: one per kind, every kind but Event.

`daemon/` passes `default_reconcilers()` to the Manager; a later capability
that takes over a kind replaces its entry here.
"""

from __future__ import annotations

from cloudland.controllers.base import Reconciler
from cloudland.controllers.broker import BrokerReconciler
from cloudland.controllers.bucket import BucketReconciler
from cloudland.controllers.config import ConfigReconciler
from cloudland.controllers.cronjob import CronJobReconciler
from cloudland.controllers.function import FunctionReconciler
from cloudland.controllers.job import JobReconciler
from cloudland.controllers.policy import PolicyReconciler
from cloudland.controllers.route import RouteReconciler
from cloudland.controllers.service import ServiceReconciler
from cloudland.controllers.trigger import TriggerReconciler


def default_reconcilers() -> list[Reconciler]:
    return [
        ServiceReconciler(),
        FunctionReconciler(),
        RouteReconciler(),
        BucketReconciler(),
        BrokerReconciler(),
        TriggerReconciler(),
        ConfigReconciler("Secret"),
        ConfigReconciler("ConfigMap"),
        PolicyReconciler(),
        JobReconciler(),
        CronJobReconciler(),
    ]
