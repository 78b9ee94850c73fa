"""Policy reconciler: for now, reports the policy as accepted.

Enforcing it at admission belongs to the policy engine, which a later capability adds.
"""

from __future__ import annotations

from cloudland.controllers.accepting import AcceptingReconciler


class PolicyReconciler(AcceptingReconciler):
    kind = "Policy"
    awaiting = "the policy engine that enforces it at admission is not part of this version yet"
